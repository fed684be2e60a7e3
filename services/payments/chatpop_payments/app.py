"""Wiring: pools, clients, the outbox relay, background jobs and the servicer that
`chatpop_common.server.serve` mounts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from chatpop.identity.v1 import identity_pb2_grpc
from chatpop.messaging.v1 import messaging_pb2_grpc
from chatpop.payments.v1 import payments_pb2, payments_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2_grpc
from chatpop_common.audit_events import deliver_to_identity
from chatpop_common.auth import TokenVerifier
from chatpop_common.clients import identity_key_cache, insecure_channel
from chatpop_common.datastores import service_datastores, service_pool
from chatpop_common.outbox import Relay
from chatpop_common.server import GrpcApp, Registration
from chatpop_common.service_auth import ServiceCredentials
from chatpop_payments.events import FULFIL_TOPIC, REFUND_TOPIC, EventHandler
from chatpop_payments.fulfilment import Fulfilment
from chatpop_payments.metrics import run_ledger_metrics
from chatpop_payments.payouts import Payouts
from chatpop_payments.purchases import Purchases
from chatpop_payments.reconcile import Reconciler
from chatpop_payments.refunds import Refunds
from chatpop_payments.sales import Sales
from chatpop_payments.servicer import PaymentsServicer
from chatpop_payments.settings import Settings
from chatpop_payments.stripe_api import StripeApi

SCHEMA = "payments"
SERVICE_NAME = payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"].full_name
# Seconds an outbox row is leased to a relay; a handler gets half of it (fulfilment asks messaging,
# refunds ask Stripe).
RELAY_LEASE = 60.0

log = logging.getLogger(__name__)


class NotMigrated(RuntimeError):
    """The database lacks the payments schema; starting anyway would fail on the first payment."""


async def build(settings: Settings) -> GrpcApp:
    pool = await service_pool(settings, SCHEMA)
    try:
        migrated = await pool.fetchval("SELECT to_regclass('payments.orders')")
        if migrated is None:
            raise NotMigrated(
                "the payments schema is not migrated; run `python -m chatpop_common.migrate payments`"
            )
    except BaseException:
        await pool.close()
        raise
    channels = {
        "identity": insecure_channel(settings.identity_addr),
        "rooms": insecure_channel(settings.rooms_addr),
        "messaging": insecure_channel(settings.messaging_addr),
    }
    identity = identity_pb2_grpc.IdentityServiceStub(channels["identity"])
    rooms = rooms_pb2_grpc.RoomsServiceStub(channels["rooms"])
    messaging = messaging_pb2_grpc.MessagingServiceStub(channels["messaging"])
    credentials = ServiceCredentials(identity, "payments", settings.service_token_secret.get_secret_value())
    if settings.test_mode:
        log.warning("payments run in TEST MODE: no STRIPE_SECRET_KEY, payments complete without Stripe")
        stripe = None
    else:
        stripe = StripeApi(settings.stripe_secret_key.get_secret_value(), settings.stripe_api_base)

    # Fulfilment, refunds and audit events wait in the outbox until done (every replica runs a relay).
    relay = Relay(pool, name="payments", listen_dsn=settings.database_url, lease=RELAY_LEASE)
    events = EventHandler(pool, on_commit=relay.wake)
    deliver_to_identity(relay, identity, credentials)
    relay.register(FULFIL_TOPIC, Fulfilment(pool, messaging, credentials, rooms=rooms, on_commit=relay.wake))
    relay.register(REFUND_TOPIC, Refunds(pool, stripe, events))
    servicer = PaymentsServicer(
        settings,
        pool,
        events=events,
        purchases=Purchases(
            pool,
            rooms=rooms,
            messaging=messaging,
            credentials=credentials,
            stripe=stripe,
            currency=settings.currency,
            fee_percent=settings.platform_fee_percent,
            tip_min_cents=settings.tip_min_cents,
            tip_max_cents=settings.tip_max_cents,
        ),
        payouts=Payouts(pool, stripe, events),
        sales=Sales(
            pool,
            rooms=rooms,
            credentials=credentials,
            test_mode=settings.test_mode,
            currency=settings.currency,
            tip_presets_cents=settings.tip_presets_cents,
            tip_min_cents=settings.tip_min_cents,
            tip_max_cents=settings.tip_max_cents,
        ),
        rooms=rooms,
        credentials=credentials,
    )
    relay.start()
    background: list[asyncio.Task[Any]] = [
        asyncio.create_task(
            run_ledger_metrics(pool, settings.ledger_metrics_interval), name="payments order metrics"
        )
    ]
    if stripe is not None:
        reconciler = Reconciler(pool, stripe, events)
        background.append(
            asyncio.create_task(reconciler.run(settings.reconcile_interval), name="payments reconciliation")
        )

    async def stop_relay() -> None:
        await relay.stop(settings.shutdown_grace)

    async def close_channels() -> None:
        await asyncio.gather(*(channel.close() for channel in channels.values()))

    async def close_stripe() -> None:
        if stripe is not None:
            await stripe.close()

    async def close_pool() -> None:
        await pool.close()

    return GrpcApp(
        registrations=[
            Registration(
                full_name=SERVICE_NAME,
                add=payments_pb2_grpc.add_PaymentsServiceServicer_to_server,
                servicer=servicer,
            )
        ],
        verifier=TokenVerifier(identity_key_cache(channels["identity"])),
        cleanups=[stop_relay, close_stripe, close_channels, close_pool],
        background=background,
        datastores=service_datastores(settings),
    )

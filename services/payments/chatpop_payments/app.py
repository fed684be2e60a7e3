"""Wiring: pools, clients and the servicer that `chatpop_common.server.serve` mounts."""

from __future__ import annotations

import asyncio
import logging

from chatpop.payments.v1 import payments_pb2, payments_pb2_grpc
from chatpop_common.auth import TokenVerifier
from chatpop_common.clients import identity_key_cache, insecure_channel
from chatpop_common.datastores import service_datastores, service_pool
from chatpop_common.server import GrpcApp, Registration
from chatpop_payments.metrics import run_ledger_metrics
from chatpop_payments.servicer import PaymentsServicer
from chatpop_payments.settings import Settings

SCHEMA = "payments"

log = logging.getLogger(__name__)


class NotMigrated(RuntimeError):
    """The database lacks the payments schema; starting anyway would fail on the first payment."""


async def build(settings: Settings) -> GrpcApp:
    pool = await service_pool(settings, SCHEMA)
    try:
        ledger = await pool.fetchval("SELECT to_regclass('payments.payments')")
        if ledger is None:
            raise NotMigrated(
                "the payments schema is not migrated; run `python -m chatpop_common.migrate payments`"
            )
    except BaseException:
        await pool.close()
        raise
    identity = insecure_channel(settings.identity_addr)
    if settings.test_mode:
        log.warning("payments run in TEST MODE: no STRIPE_SECRET_KEY, payments complete without Stripe")
    servicer = PaymentsServicer(settings, pool)
    ledger_metrics = asyncio.create_task(
        run_ledger_metrics(pool, settings.ledger_metrics_interval), name="payments ledger metrics"
    )
    return GrpcApp(
        registrations=[
            Registration(
                full_name=payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"].full_name,
                add=payments_pb2_grpc.add_PaymentsServiceServicer_to_server,
                servicer=servicer,
            )
        ],
        verifier=TokenVerifier(identity_key_cache(identity)),
        cleanups=[identity.close, pool.close],
        background=[ledger_metrics],
        datastores=service_datastores(settings),
    )

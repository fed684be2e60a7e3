"""Wiring: pools, clients and the servicer, handed to the shared gRPC bootstrap."""

from __future__ import annotations

from collections.abc import Callable

from chatpop.identity.v1 import identity_pb2_grpc
from chatpop.messaging.v1 import messaging_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.audit_events import AuditLog, deliver_to_identity
from chatpop_common.auth import TokenVerifier
from chatpop_common.clients import identity_key_cache, insecure_channel
from chatpop_common.datastores import create_redis, service_datastores, service_pool, warm_up_redis
from chatpop_common.fixed_window import FixedWindowLimiter
from chatpop_common.outbox import Relay
from chatpop_common.server import GrpcApp, Registration
from chatpop_common.service_auth import ServiceCredentials
from chatpop_rooms.access_codes import AccessCodeHasher, AccessCodeSealer
from chatpop_rooms.back_rooms import BackRoomStore
from chatpop_rooms.badges import VerifiedBadges
from chatpop_rooms.bans import BanStore
from chatpop_rooms.codes import new_room_code
from chatpop_rooms.erasure import ERASE_TOPIC, EraseDelivery
from chatpop_rooms.forgetting import FORGOTTEN_TOPIC, ForgottenDelivery
from chatpop_rooms.limits import JoinAttemptLimiter
from chatpop_rooms.rolls import UsernameRolls
from chatpop_rooms.servicer import RoomsServicer
from chatpop_rooms.settings import Settings
from chatpop_rooms.site_bans import SiteBanCheck, SiteBanRevocations
from chatpop_rooms.store import RoomStore
from chatpop_rooms.takedowns import Takedowns

# Seconds a `room.erase` or `participants.forgotten` row is leased for: half of it is the handler's
# budget, above messaging's own per-call budget for an erase.
PRIVACY_LEASE = 120.0

SERVICE_NAME = rooms_pb2.DESCRIPTOR.services_by_name["RoomsService"].full_name


async def build(settings: Settings, *, room_codes: Callable[[], str] = new_room_code) -> GrpcApp:
    """Everything the rooms server needs; `room_codes` lets a caller choose how codes are drawn."""
    pool = await service_pool(settings, "rooms")
    redis = create_redis(settings.redis_url, cluster=settings.redis_cluster)
    await warm_up_redis(redis)
    identity_channel = insecure_channel(settings.identity_addr)
    identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
    credentials = ServiceCredentials(identity, "rooms", settings.service_token_secret.get_secret_value())
    audit_log = AuditLog(pool)
    # Audit events wait in the outbox until identity has them (every replica runs a relay).
    relay = Relay(pool, name="rooms", listen_dsn=settings.database_url)
    deliver_to_identity(relay, identity, credentials)
    # Erasing a room and forgetting participants may take messaging a while per call: a relay of their
    # own, with a longer lease, so audit events never wait behind them.
    messaging_channel = insecure_channel(settings.messaging_addr)
    messaging = messaging_pb2_grpc.MessagingServiceStub(messaging_channel)
    privacy_relay = Relay(pool, name="rooms privacy", listen_dsn=settings.database_url, lease=PRIVACY_LEASE)
    privacy_relay.register(ERASE_TOPIC, EraseDelivery(messaging, credentials))
    privacy_relay.register(FORGOTTEN_TOPIC, ForgottenDelivery(messaging, credentials))
    servicer = RoomsServicer(
        store=RoomStore(pool),
        hasher=AccessCodeHasher(
            time_cost=settings.access_code_hash_time_cost,
            memory_kib=settings.access_code_hash_memory_kib,
            parallelism=settings.access_code_hash_parallelism,
        ),
        sealer=AccessCodeSealer(settings.access_code_key.get_secret_value().encode()),
        limiter=JoinAttemptLimiter(
            redis,
            client_limit=settings.join_attempt_limit,
            room_limit=settings.join_room_attempt_limit,
            window_seconds=settings.join_attempt_window,
        ),
        identity=identity,
        site_bans=SiteBanCheck(identity, credentials),
        revocations=SiteBanRevocations(pool),
        audit_log=audit_log,
        back_rooms=BackRoomStore(pool),
        rolls=UsernameRolls(
            redis,
            limit=settings.username_roll_limit,
            window_seconds=settings.username_roll_window,
            hold_seconds=settings.username_hold_seconds,
        ),
        room_limiter=FixedWindowLimiter(
            redis, limit=settings.anonymous_room_limit, window_seconds=settings.anonymous_room_window
        ),
        badges=VerifiedBadges(pool),
        bans=BanStore(pool),
        takedowns=Takedowns(pool),
        anonymous_usernames_per_ip=settings.anonymous_usernames_per_ip,
        anonymous_usernames_window=settings.anonymous_usernames_window,
        join_attempt_window=settings.join_attempt_window,
        room_codes=room_codes,
    )
    relay.start()
    privacy_relay.start()

    async def stop_relay() -> None:
        await relay.stop(settings.shutdown_grace)
        await privacy_relay.stop(settings.shutdown_grace)
        await messaging_channel.close()

    async def close_identity() -> None:
        await identity_channel.close()

    async def close_redis() -> None:
        # redis-py 5+ has aclose(); the published stubs still describe 4.x.
        await redis.aclose()  # type: ignore[attr-defined]

    async def close_pool() -> None:
        await pool.close()

    return GrpcApp(
        registrations=[
            Registration(
                full_name=SERVICE_NAME,
                add=rooms_pb2_grpc.add_RoomsServiceServicer_to_server,
                servicer=servicer,
            )
        ],
        verifier=TokenVerifier(identity_key_cache(identity_channel)),
        cleanups=[stop_relay, close_identity, close_redis, close_pool],
        datastores=service_datastores(settings, redis),
    )

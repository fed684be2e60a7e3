"""Wiring: pools, clients and the servicer, built once per process."""

from __future__ import annotations

import asyncio

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chatpop.identity.v1 import identity_pb2_grpc
from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2_grpc
from chatpop_common.audit_events import AuditLog, deliver_to_identity
from chatpop_common.auth import KeyCache, KeyFetcher, TokenVerifier
from chatpop_common.clients import identity_key_fetcher, insecure_channel
from chatpop_common.datastores import create_redis, service_datastores, service_pool, warm_up_redis
from chatpop_common.objectstore import ObjectStore
from chatpop_common.outbox import Relay
from chatpop_common.periodic import run_every
from chatpop_common.server import Cleanup, GrpcApp, Registration
from chatpop_common.service_auth import ServiceCredentials
from chatpop_messaging.audit import RateLimitTrips
from chatpop_messaging.bans import BanEntries
from chatpop_messaging.deletions import Deletions, Redactions
from chatpop_messaging.erasure import RoomEraser
from chatpop_messaging.fanout import Fanout
from chatpop_messaging.forgetting import Forgetting
from chatpop_messaging.group_commit import GroupCommitter, PublishQueue
from chatpop_messaging.hotcache import HotCache, RedisGuard
from chatpop_messaging.inspection import RoomInspection
from chatpop_messaging.keys import Keyring, install, uninstall
from chatpop_messaging.media import PURGE_TOPIC, MediaRecords
from chatpop_messaging.media_purge import MediaPurger, MediaSweeper, Vacuums
from chatpop_messaging.metrics import REENCRYPT_RUNS
from chatpop_messaging.mutes import Mutes
from chatpop_messaging.paid_pins import PaidPins, PaidPinsOnBan
from chatpop_messaging.participants import ParticipantDirectory
from chatpop_messaging.pins import Pins
from chatpop_messaging.policies import RoomPolicies
from chatpop_messaging.presence import PresenceBook
from chatpop_messaging.ratelimit import SendChecks, SendRateLimiter
from chatpop_messaging.reactions import Reactions
from chatpop_messaging.reader import MessageReader
from chatpop_messaging.reads import ReadPositions
from chatpop_messaging.reencrypt import Reencryption
from chatpop_messaging.reports import Reports
from chatpop_messaging.retention import Retention
from chatpop_messaging.room_signals import RoomSignals
from chatpop_messaging.servicer import MessagingServicer
from chatpop_messaging.settings import MessagingSettings
from chatpop_messaging.signals import SignalPublisher
from chatpop_messaging.stats import MessagingStats
from chatpop_messaging.store import COMMIT_SERVER_SETTINGS, MessageStore

# Seconds between writes of finished minutes of rate-limit trips into the outbox.
TRIPS_FLUSH_INTERVAL = 5.0

SERVICE_NAME = messaging_pb2.DESCRIPTOR.services_by_name["MessagingService"].full_name


async def build(settings: MessagingSettings, *, key_fetcher: KeyFetcher | None = None) -> GrpcApp:
    """Build the messaging service; `key_fetcher` replaces identity as the source of token keys."""
    cleanups: list[Cleanup] = []
    identity_channel = insecure_channel(settings.identity_addr)
    cleanups.append(identity_channel.close)
    if key_fetcher is None:
        key_fetcher = identity_key_fetcher(identity_channel)
    identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
    credentials = ServiceCredentials(identity, "messaging", settings.service_token_secret.get_secret_value())
    verifier = TokenVerifier(KeyCache(key_fetcher))

    pool = await service_pool(settings, "messaging")
    commit_pool = await service_pool(
        settings,
        "messaging",
        max_size=settings.group_commit_connections,
        server_settings=COMMIT_SERVER_SETTINGS,
    )
    trips = RateLimitTrips(AuditLog(pool))
    # Audit events wait in the outbox until identity has them (every replica runs a relay).
    relay = Relay(pool, name="messaging", listen_dsn=settings.database_url)
    deliver_to_identity(relay, identity, credentials)
    # One quick retry covers a pooled connection that died with a Redis restart; more would only
    # delay the Postgres fallback. Not on a cluster: there a retry re-reads the topology, and a
    # pipeline's retry (redis-py's) sleeps first, so a send's ack would wait on a shard that is failing
    # over; the commands that follow find the new topology, and idle connections are health-checked.
    redis = create_redis(settings.redis_url, cluster=settings.redis_cluster)
    redis.set_retry(Retry(NoBackoff(), 0 if settings.redis_cluster else 1))  # type: ignore[attr-defined]
    # Pub/sub gets its own connection, and no silent reconnects: a drop must be seen so the hubs
    # can look up what was published meanwhile.
    pubsub_redis = create_redis(settings.redis_url, cluster=settings.redis_cluster)
    pubsub_redis.set_retry(Retry(NoBackoff(), 0))  # type: ignore[attr-defined]
    await warm_up_redis(redis)
    await warm_up_redis(pubsub_redis)
    rooms_channel = insecure_channel(settings.rooms_addr)

    # Media purges wait in the outbox until storage is configured (nothing else can delete objects).
    objects: ObjectStore | None = None
    vacuums: Vacuums | None = None
    if settings.media_enabled:
        objects = await ObjectStore.open(settings)
        cleanups.append(objects.close)
        if settings.s3_vacuum_url:
            vacuums = Vacuums(settings.s3_vacuum_url)
            cleanups.append(vacuums.close)
        relay.register(PURGE_TOPIC, MediaPurger(pool, objects, vacuums).handle)
    sweeper = MediaSweeper(
        pool,
        rooms_pb2_grpc.RoomsServiceStub(rooms_channel),
        pending_ttl=settings.media_pending_ttl,
        unreferenced_ttl=settings.media_unreferenced_ttl,
    )

    # Encryption at rest: the process's keyring (keys.py), checked against the data keys stored.
    keyring = Keyring(
        pool, settings.master_key_set(), cache_size=settings.key_cache_size, ttl=settings.key_cache_ttl
    )
    await keyring.check()
    install(keyring)

    guard = RedisGuard(settings.redis_retry_after)
    store = MessageStore(pool, commit_pool=commit_pool)
    cache = HotCache(redis, guard, size=settings.hot_cache_size, ttl=settings.hot_cache_ttl)
    retention = Retention(
        pool,
        cache,
        rooms_pb2_grpc.RoomsServiceStub(rooms_channel),
        credentials,
        batch=settings.retention_batch,
        pause=settings.retention_pause,
    )
    reader = MessageReader(store, cache)
    # Older versions are retired once no process can still seal with them (keyring TTL, twice).
    reencryption = Reencryption(pool, cache, retire_after=2 * settings.key_cache_ttl + 5)
    limiter = SendRateLimiter(
        redis,
        guard,
        per_minute=settings.send_rate_limit,
        burst=settings.send_rate_burst,
        lease_seconds=settings.send_rate_lease,
        on_refused=trips.trip,
    )
    participants = ParticipantDirectory(rooms_channel, ttl=settings.participant_cache_ttl)
    policies = RoomPolicies(rooms_channel, ttl=settings.room_policy_cache_ttl)
    fanout = Fanout(
        pubsub_redis,
        store,
        reader,
        poll_interval=settings.hub_poll_interval,
        queue_size=settings.subscriber_queue_size,
        on_room_updated=policies.learn,
        on_kick=participants.forget,
    )
    redactions = Redactions(cache, give_up_after=settings.hot_cache_ttl)
    committed = PublishQueue(cache, fanout, reader.request_rebuild)
    committer = GroupCommitter(
        store,
        committed,
        max_group=settings.group_commit_max,
        max_in_flight=settings.sends_in_flight_max,
        max_rooms=settings.group_commit_rooms_max,
    )
    publisher = SignalPublisher(redis, guard)
    servicer = MessagingServicer(
        settings,
        store=store,
        reader=reader,
        cache=cache,
        limiter=limiter,
        checks=SendChecks(redis, guard, limiter),
        committer=committer,
        publisher=committed,
        participants=participants,
        policies=policies,
        reads=ReadPositions(pool),
        fanout=fanout,
        signals=RoomSignals(publisher, PresenceBook(redis, guard), rooms_channel),
        reactions=Reactions(pool),
        bans=BanEntries(pool, rooms_channel, on_ban=[PaidPinsOnBan()]),
        deletions=Deletions(pool),
        pins=Pins(pool),
        paid_pins=PaidPins(pool),
        reports=Reports(pool, hide_at=settings.reports_to_hide),
        redactions=redactions,
        mutes=Mutes(pool, participants, publisher),
        stats=MessagingStats(pool),
        media_records=MediaRecords(pool),
        media_sweeper=sweeper,
        media_enabled=settings.media_enabled,
        eraser=RoomEraser(
            pool,
            redis,
            rooms_pb2_grpc.RoomsServiceStub(rooms_channel),
            batch=settings.erase_batch,
            budget=settings.erase_budget,
        ),
        forgetting=Forgetting(pool, batch=settings.erase_batch),
        retention=retention,
        inspection=RoomInspection(store, cache),
        reencryption=reencryption,
    )
    fanout.start()
    relay.start()
    counting = asyncio.create_task(
        run_every(TRIPS_FLUSH_INTERVAL, trips.flush, what="record rate-limit trips"),
        name="rate-limit trips to the audit log",
    )
    sweeping = asyncio.create_task(
        run_every(settings.media_sweep_interval, sweeper.sweep, what="sweep media to purge"),
        name="media sweeper",
    )
    background = [counting, sweeping]
    if settings.reencrypt_interval > 0:
        background.append(
            asyncio.create_task(
                run_every(
                    settings.reencrypt_interval,
                    lambda: reencryption.background(settings.reencrypt_batch),
                    what="re-encrypt stored content",
                    failures=REENCRYPT_RUNS.labels("failed"),
                ),
                name="re-encryption",
            )
        )
    if settings.retention_interval > 0:
        background.append(
            asyncio.create_task(
                retention.periodically(settings.retention_interval),
                name="retention",
            )
        )

    async def stop_audit() -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        try:
            await trips.flush(everything=True)
        finally:
            await relay.stop(settings.shutdown_grace)

    async def close_redis() -> None:
        await redis.aclose()  # type: ignore[attr-defined]
        await pubsub_redis.aclose()  # type: ignore[attr-defined]

    async def close_rooms() -> None:
        await participants.close()
        await policies.close()
        await rooms_channel.close()

    async def uninstall_keyring() -> None:
        uninstall(keyring)

    return GrpcApp(
        registrations=[
            Registration(
                full_name=SERVICE_NAME,
                add=messaging_pb2_grpc.add_MessagingServiceServicer_to_server,
                servicer=servicer,
            )
        ],
        verifier=verifier,
        draining=[servicer.drain_send_streams],
        # Publishing finishes first; the pools close last.
        cleanups=[
            servicer.close,
            stop_audit,
            redactions.close,
            fanout.close,
            reader.close,
            # Send tokens held go back to their buckets while Redis is still there.
            limiter.close,
            close_redis,
            close_rooms,
            *cleanups,
            uninstall_keyring,
            commit_pool.close,
            pool.close,
        ],
        datastores=service_datastores(settings, redis),
    )

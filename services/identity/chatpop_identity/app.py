"""Wiring: pools, keys and the servicer, handed to the shared gRPC bootstrap."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2_grpc
from chatpop_common.auth import KeyCache, TokenVerifier
from chatpop_common.clients import insecure_channel
from chatpop_common.datastores import (
    RedisClient,
    create_redis,
    service_datastores,
    service_pool,
    warm_up_redis,
)
from chatpop_common.fixed_window import FixedWindowLimiter
from chatpop_common.outbox import Relay
from chatpop_common.server import GrpcApp, Registration
from chatpop_common.token_bucket import TokenBucketLimiter
from chatpop_identity.account_deletion import TOPIC as ACCOUNT_DELETED_TOPIC
from chatpop_identity.account_deletion import AccountDeletions, ForgetDelivery, OwnServiceToken
from chatpop_identity.admins import Admins
from chatpop_identity.audit import AuditLog
from chatpop_identity.credentials import Passwords
from chatpop_identity.generator import UsernameGenerator
from chatpop_identity.keys import KeyRing
from chatpop_identity.login_failures import LoginFailures, run_login_failure_flush
from chatpop_identity.mail import SmtpMailer, parse_sender
from chatpop_identity.password_changes import PasswordChanges, PasswordStore, ResetLimits, ResetMailSettings
from chatpop_identity.purge import run_account_record_purge, run_refresh_token_purge
from chatpop_identity.servicer import IdentityServicer
from chatpop_identity.settings import Settings
from chatpop_identity.site_bans import SiteBans
from chatpop_identity.store import IdentityStore
from chatpop_identity.tokens import TokenIssuer
from chatpop_identity.username_changes import UsernameChanges

# Seconds an `account.deleted` row is leased for (rooms' ForgetSubject gets half of it).
ACCOUNT_DELETED_LEASE = 120.0

SERVICE_NAME = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name


def local_verifier(keys: KeyRing) -> TokenVerifier:
    """Verifies tokens with this service's own keys, without a network round trip."""

    async def fetch() -> Mapping[str, Ed25519PublicKey]:
        return keys.public_keys

    return TokenVerifier(KeyCache(fetch))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def password_changes(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: RedisClient,
    store: IdentityStore,
    passwords: Passwords,
    keys: KeyRing,
) -> PasswordChanges:
    smtp = settings.smtp
    return PasswordChanges(
        identities=store,
        store=PasswordStore(pool),
        passwords=passwords,
        mail=ResetMailSettings(
            sender=parse_sender(settings.mail_from),
            public_url=settings.public_url,
            ttl_seconds=settings.password_reset_ttl,
        ),
        mailer=SmtpMailer(smtp, timeout=settings.smtp_timeout) if smtp is not None else None,
        limits=ResetLimits(
            per_email=FixedWindowLimiter(
                redis,
                limit=settings.password_reset_email_limit,
                window_seconds=settings.password_reset_email_window,
            ),
            per_network=FixedWindowLimiter(
                redis,
                limit=settings.password_reset_network_limit,
                window_seconds=settings.password_reset_network_window,
            ),
            email_key=keys.derive_secret("password-reset-limits"),
        ),
        change_limiter=FixedWindowLimiter(
            redis, limit=settings.password_change_limit, window_seconds=settings.password_change_window
        ),
        now=_utcnow,
    )


async def build(settings: Settings) -> GrpcApp:
    keys = KeyRing.from_files(settings.identity_signing_key_file, settings.extra_public_key_paths)
    passwords = Passwords(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
    )
    await passwords.prepare()
    pool = await service_pool(settings, "identity")
    redis = create_redis(settings.redis_url, cluster=settings.redis_cluster)
    await warm_up_redis(redis)
    store = IdentityStore(pool)
    passwords_flow = password_changes(settings, pool, redis, store, passwords, keys)
    login_failures = LoginFailures(
        pool,
        email_key=keys.derive_secret("audit-login-emails"),
        window_seconds=settings.audit_login_failure_window,
    )
    tokens = TokenIssuer(
        keys,
        access_ttl=settings.access_token_ttl,
        room_ttl=settings.room_token_ttl,
        service_ttl=settings.service_token_ttl,
    )
    # Deleted accounts are forgotten at rooms from the outbox (every replica runs a relay).
    rooms_channel = insecure_channel(settings.rooms_addr)
    relay = Relay(pool, name="identity", listen_dsn=settings.database_url, lease=ACCOUNT_DELETED_LEASE)
    relay.register(
        ACCOUNT_DELETED_TOPIC,
        ForgetDelivery(rooms_pb2_grpc.RoomsServiceStub(rooms_channel), OwnServiceToken(tokens)),
    )
    servicer = IdentityServicer(
        store=store,
        keys=keys,
        tokens=tokens,
        service_token_secret=settings.service_token_secret.get_secret_value(),
        passwords=passwords,
        refresh_ttl=settings.refresh_token_ttl,
        generator=UsernameGenerator.from_directory(settings.username_words_dir),
        password_changes=passwords_flow,
        username_changes=UsernameChanges(
            pool,
            interval=timedelta(seconds=settings.reserved_username_change_interval),
            quarantine_days=settings.reserved_username_quarantine_days,
        ),
        audit_log=AuditLog(pool),
        site_bans=SiteBans(pool),
        admins=Admins(pool),
        login_failures=login_failures,
        session_limiter=TokenBucketLimiter(
            redis,
            limit=settings.anonymous_session_limit,
            window_seconds=settings.anonymous_session_window,
            burst=settings.anonymous_session_burst,
        ),
        account_deletions=AccountDeletions(
            pool,
            passwords,
            FixedWindowLimiter(
                redis, limit=settings.password_change_limit, window_seconds=settings.password_change_window
            ),
        ),
    )
    relay.start()

    async def stop_relay() -> None:
        await relay.stop(settings.shutdown_grace)
        await rooms_channel.close()

    async def close_redis() -> None:
        # redis-py 5+ has aclose(); the published stubs still describe 4.x.
        await redis.aclose()  # type: ignore[attr-defined]

    async def finish_mails() -> None:
        # Mails already promised to someone go out before the pool they read from closes.
        await passwords_flow.drain(settings.shutdown_grace)

    purge = asyncio.create_task(
        run_refresh_token_purge(store, settings.refresh_token_purge_interval), name="refresh token purge"
    )
    account_purge = asyncio.create_task(
        run_account_record_purge(pool, settings.refresh_token_purge_interval), name="account record purge"
    )
    failure_flush = asyncio.create_task(
        run_login_failure_flush(login_failures), name="login failures to the audit log"
    )
    return GrpcApp(
        registrations=[
            Registration(
                full_name=SERVICE_NAME,
                add=identity_pb2_grpc.add_IdentityServiceServicer_to_server,
                servicer=servicer,
            )
        ],
        verifier=local_verifier(keys),
        cleanups=[finish_mails, stop_relay, close_redis, pool.close],
        background=[purge, account_purge, failure_flush],
        datastores=service_datastores(settings, redis),
    )

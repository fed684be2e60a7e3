"""The periodic purge of expired refresh tokens, so the table holds only families still in use."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import asyncpg
from prometheus_client import Counter

from chatpop_common.periodic import run_every
from chatpop_identity import quarantine
from chatpop_identity.password_changes import PasswordStore
from chatpop_identity.store import IdentityStore

log = logging.getLogger(__name__)

PURGED = Counter(
    "chatpop_identity_refresh_tokens_purged", "Refresh tokens deleted because their whole family expired."
)
PURGE_FAILURES = Counter(
    "chatpop_identity_refresh_token_purge_failures", "Purges of expired refresh tokens that failed."
)


async def purge_expired_refresh_tokens(store: IdentityStore) -> int:
    deleted = await store.purge_expired_families(datetime.now(UTC))
    PURGED.inc(deleted)
    if deleted:
        log.info("purged expired refresh tokens", extra={"deleted": deleted})
    return deleted


async def run_refresh_token_purge(store: IdentityStore, interval: float) -> None:
    """Purge every `interval` seconds until cancelled (every replica may run it: deletes are idempotent)."""

    async def job() -> None:
        await purge_expired_refresh_tokens(store)

    await run_every(interval, job, what="purge expired refresh tokens", failures=PURGE_FAILURES)


ACCOUNT_PURGE_FAILURES = Counter(
    "chatpop_identity_account_record_purge_failures",
    "Purges of old password reset tokens and ended username quarantines that failed.",
)


async def purge_account_records(pool: asyncpg.Pool) -> None:
    """Reset tokens long past their expiry and username quarantines that ended."""
    resets = await PasswordStore(pool).purge(datetime.now(UTC))
    released = await quarantine.purge(pool)
    if resets or released:
        log.info("purged account records", extra={"reset_tokens": resets, "quarantines": released})


async def run_account_record_purge(pool: asyncpg.Pool, interval: float) -> None:
    """Purge every `interval` seconds until cancelled (idempotent, so every replica may run it)."""

    async def job() -> None:
        await purge_account_records(pool)

    await run_every(interval, job, what="purge account records", failures=ACCOUNT_PURGE_FAILURES)

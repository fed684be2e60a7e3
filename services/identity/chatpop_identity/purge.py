"""The periodic purge of expired refresh tokens, so the table holds only families still in use."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from prometheus_client import Counter

from chatpop_common.periodic import run_every
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

"""Failed logins in the audit log, counted rather than listed.

Someone trying passwords would otherwise write one event per attempt. Each failure instead adds one
to a tally for its window (AUDIT_LOGIN_FAILURE_WINDOW seconds), email and network, both as keyed
hashes; once a window has closed, each tally becomes one `identity.login_failed` event with the
count in its details. The move is one statement (DELETE … RETURNING into INSERT), so every replica
may run it: each tally is moved exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
from prometheus_client import Counter

from chatpop_common.periodic import run_every
from chatpop_identity.audit import LOGIN_FAILED

log = logging.getLogger(__name__)

FLUSH_FAILURES = Counter(
    "chatpop_identity_login_failure_flush_failures",
    "Moves of closed login failure tallies into the audit log that failed.",
)

_COUNT = """
    INSERT INTO login_failure_tallies
        (window_start, email_hash, ip_hash, target, failures, first_at, last_at)
    VALUES ($1, $2, $3, $4, 1, $5, $5)
    ON CONFLICT (window_start, email_hash, ip_hash)
    DO UPDATE SET failures = login_failure_tallies.failures + 1, last_at = excluded.last_at
"""
# Tallies of windows before the current one (which starts at $1) have closed.
_FLUSH = """
    WITH closed AS (
        DELETE FROM login_failure_tallies WHERE window_start < $1 RETURNING *
    )
    INSERT INTO audit_events (kind, target, ip_hash, details)
    SELECT $2, target::text, nullif(ip_hash, ''), jsonb_build_object(
        'failures', failures,
        'first_at', first_at,
        'last_at', last_at,
        'window_start', window_start,
        'window_seconds', $3::integer,
        'email_hash', email_hash,
        'account_exists', target IS NOT NULL
    )
    FROM closed ORDER BY first_at
"""

Now = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LoginFailures:
    def __init__(
        self, pool: asyncpg.Pool, *, email_key: bytes, window_seconds: int, now: Now = _utcnow
    ) -> None:
        self._pool = pool
        # HMAC key for emails: the log can tell attempts on one address apart from attempts on many,
        # without holding any address.
        self._email_key = email_key
        self._window = window_seconds
        self._now = now

    @property
    def window_seconds(self) -> int:
        return self._window

    def email_hash(self, email: str) -> str:
        return hmac.new(self._email_key, email.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def _window_start(self, at: datetime) -> datetime:
        epoch = int(at.timestamp())
        return datetime.fromtimestamp(epoch - epoch % self._window, UTC)

    async def count(self, email: str, ip_hash: str, account: uuid.UUID | None) -> None:
        """One more failure for this email (normalised, or as typed) from this network."""
        now = self._now()
        await self._pool.execute(
            _COUNT, self._window_start(now), self.email_hash(email), ip_hash, account, now
        )

    async def flush(self) -> int:
        """Move every tally whose window has closed into the audit log; returns how many."""
        current = self._window_start(self._now())
        status = await self._pool.execute(_FLUSH, current, LOGIN_FAILED, self._window)
        return int(status.split()[-1])


async def run_login_failure_flush(failures: LoginFailures) -> None:
    """Flush twice per window until cancelled, so a count shows up at most about two windows late."""

    async def job() -> None:
        moved = await failures.flush()
        if moved:
            log.info("login failures recorded in the audit log", extra={"events": moved})

    await run_every(failures.window_seconds / 2, job, what="record login failures", failures=FLUSH_FAILURES)

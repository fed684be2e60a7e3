"""Reserved usernames given up recently: held back from other accounts for a while.

Every write of a reserved username (at registration, reserving one later, changing it) runs under
one transaction-scoped advisory lock. Reservations are rare (people choose names), and the lock
makes "the name is free and not in quarantine, so take it" one step against every other writer,
including an account releasing that very name at the same moment.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from chatpop_common.errors import AlreadyExists
from chatpop_common.wording import wait_words

_LOCK = "identity.reserved-usernames"


@dataclass(frozen=True)
class Quarantine:
    previous_owner: uuid.UUID
    held_until: datetime


async def lock_reservations(conn: asyncpg.Connection) -> datetime:
    """Take the reservation lock for the rest of the transaction; returns the transaction's time."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", _LOCK)
    now: datetime = await conn.fetchval("SELECT now()")
    return now


async def quarantine_of(conn: asyncpg.Connection | asyncpg.Pool, username_lower: str) -> Quarantine | None:
    """Who gave this name up and until when it is held back, if it is held back now."""
    row = await conn.fetchrow(
        "SELECT previous_owner, held_until FROM released_usernames"
        " WHERE username_lower = $1 AND held_until > now()",
        username_lower,
    )
    return Quarantine(row["previous_owner"], row["held_until"]) if row is not None else None


def quarantined(quarantine: Quarantine, now: datetime) -> AlreadyExists:
    wait = wait_words((quarantine.held_until - now).total_seconds())
    return AlreadyExists(
        "That username was given up recently and is held back, so nobody can pose as its previous owner."
        f" It is free again {wait}.",
        code="username_quarantined",
    )


async def refuse_if_held_for_another(
    conn: asyncpg.Connection, username_lower: str, identity_id: uuid.UUID | None, now: datetime
) -> Quarantine | None:
    """AlreadyExists `username_quarantined` unless the name is free or held for `identity_id` itself."""
    quarantine = await quarantine_of(conn, username_lower)
    if quarantine is not None and quarantine.previous_owner != identity_id:
        raise quarantined(quarantine, now)
    return quarantine


async def release(
    conn: asyncpg.Connection, username_lower: str, previous_owner: uuid.UUID, now: datetime, days: int
) -> None:
    """Hold a given-up name back for `days` (0: not at all)."""
    if days <= 0:
        return
    await conn.execute(
        "INSERT INTO released_usernames (username_lower, previous_owner, released_at, held_until)"
        " VALUES ($1, $2, $3::timestamptz, $3::timestamptz + make_interval(days => $4))"
        " ON CONFLICT (username_lower) DO UPDATE SET previous_owner = EXCLUDED.previous_owner,"
        " released_at = EXCLUDED.released_at, held_until = EXCLUDED.held_until",
        username_lower,
        previous_owner,
        now,
        days,
    )


async def reclaim(conn: asyncpg.Connection, username_lower: str) -> None:
    """The previous owner took the name back: it is theirs again, not in quarantine."""
    await conn.execute("DELETE FROM released_usernames WHERE username_lower = $1", username_lower)


async def purge(pool: asyncpg.Pool) -> int:
    """Forget quarantines that ended; returns how many."""
    status = await pool.execute("DELETE FROM released_usernames WHERE held_until <= now()")
    return int(status.split()[-1])

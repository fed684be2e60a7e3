"""Changing an account's reserved username: at most once per interval, and the old name quarantined.

The badge an account earned in rooms under its old name is rooms' to take away (ClearVerifiedUsername);
the edge asks rooms right after this change succeeds. Messages keep the badge they were sent with.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from chatpop_common.errors import AlreadyExists, NotFound, ResourceExhausted
from chatpop_common.wording import wait_words
from chatpop_identity.quarantine import lock_reservations, reclaim, refuse_if_held_for_another, release
from chatpop_identity.store import IDENTITY_COLUMNS, USER, IdentityRecord, identity_record

# Fixed column lists; every value is a bind parameter.
_CURRENT = f"""
    SELECT {IDENTITY_COLUMNS}, reserved_username_changed_at FROM identities WHERE id = $1 FOR UPDATE
"""  # noqa: S608
_SET_NAME = f"""
    UPDATE identities
    SET reserved_username = $2, reserved_username_lower = lower($2),
        reserved_username_changed_at = coalesce($3, reserved_username_changed_at)
    WHERE id = $1
    RETURNING {IDENTITY_COLUMNS}
"""  # noqa: S608


@dataclass(frozen=True)
class UsernameChange:
    identity: IdentityRecord
    # The name given up (now in quarantine), or None when the account kept or had no name.
    previous: str | None


def _too_soon(retry_after: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"You changed your reserved username recently. You can change it again {wait_words(retry_after)}.",
        code="username_change_too_soon",
        retry_after=retry_after,
    )


class UsernameChanges:
    def __init__(self, pool: asyncpg.Pool, *, interval: timedelta, quarantine_days: int) -> None:
        self._pool = pool
        self._interval = interval
        self._quarantine_days = quarantine_days

    async def change(self, identity_id: uuid.UUID, username: str) -> UsernameChange:
        """Reserve `username` for the account, or replace the name it holds.

        A first reservation and a change of case only are not changes: they are never limited and
        quarantine nothing. AlreadyExists `username_taken` / `username_quarantined`,
        ResourceExhausted `username_change_too_soon`, NotFound when the account is gone.
        """
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                return await self._change(conn, identity_id, username)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "identities_reserved_username_lower_key":
                raise AlreadyExists("That username is already taken.", code="username_taken") from None
            raise

    async def _change(
        self, conn: asyncpg.Connection, identity_id: uuid.UUID, username: str
    ) -> UsernameChange:
        now = await lock_reservations(conn)
        row = await conn.fetchrow(_CURRENT, identity_id)
        if row is None or row["kind"] != USER:
            raise NotFound("This account no longer exists.", code="identity_not_found")
        current: str | None = row["reserved_username"]
        if current == username:
            return UsernameChange(identity_record(row), None)
        if current is not None and current.lower() == username.lower():
            updated = await conn.fetchrow(_SET_NAME, identity_id, username, None)
            return UsernameChange(identity_record(updated), None)
        if current is not None:
            last: datetime | None = row["reserved_username_changed_at"]
            if last is not None and last + self._interval > now:
                raise _too_soon(math.ceil((last + self._interval - now).total_seconds()))
        held = await refuse_if_held_for_another(conn, username.lower(), identity_id, now)
        updated = await conn.fetchrow(_SET_NAME, identity_id, username, now if current is not None else None)
        if held is not None:
            await reclaim(conn, username.lower())
        if current is not None:
            await release(conn, current.lower(), identity_id, now, self._quarantine_days)
        return UsernameChange(identity_record(updated), current)

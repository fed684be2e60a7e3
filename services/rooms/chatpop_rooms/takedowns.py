"""Takedowns: an admin closes a room for good and hides it, with a reason on record.

A takedown closes the room like its host's close and marks it taken down, in one statement. While it
stands, JoinRoom and GetParticipant answer NOT_FOUND `room_taken_down`, so no room token of the room
works anywhere room tokens are checked, and messaging (told through the room's `taken_down`) shows
none of its history. Lifting it reopens the room only if the takedown was what closed it.

Admins are known by the `adm` claim of their access token, as every service verifies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from chatpop_common.auth import Principal, require_principal
from chatpop_common.errors import InvalidArgument, NotFound, PermissionDenied
from chatpop_rooms.bans import validate_reason
from chatpop_rooms.store import _ROOM_COLUMN_NAMES, RoomRow

LIST_DEFAULT = 50
LIST_MAX = 200

_RETURNING = ", ".join(_ROOM_COLUMN_NAMES) + ", taken_down_reason, taken_down_by"
# A room already taken down is left as it is (no row comes back).
_TAKE_DOWN = f"""
    UPDATE rooms SET taken_down_at = now(), taken_down_reason = $2, taken_down_by = $3,
                     taken_down_closed = closed_at IS NULL,
                     closed_at = coalesce(closed_at, now()), updated_at = now()
    WHERE id = $1 AND taken_down_at IS NULL
    RETURNING {_RETURNING}
"""  # noqa: S608 - fixed column list
_RESTORE = f"""
    UPDATE rooms SET taken_down_at = NULL, taken_down_reason = '', taken_down_by = NULL,
                     closed_at = CASE WHEN taken_down_closed THEN NULL ELSE closed_at END,
                     taken_down_closed = false, updated_at = now()
    WHERE id = $1 AND taken_down_at IS NOT NULL
    RETURNING {", ".join(_ROOM_COLUMN_NAMES)}
"""  # noqa: S608 - fixed column list
_SELECT = f"SELECT {_RETURNING} FROM rooms"  # noqa: S608 - fixed column list


@dataclass(frozen=True, slots=True)
class Takedown:
    room: RoomRow
    reason: str
    taken_down_by: str
    taken_down_at: datetime


def room_taken_down() -> NotFound:
    return NotFound("This room was taken down by ChatPop's moderators.", code="room_taken_down")


def require_admin() -> Principal:
    principal = require_principal()
    if principal.token_type != "access" or not principal.is_admin:
        raise PermissionDenied("Only admins may do this.", code="forbidden")
    return principal


def validate_takedown_reason(raw: str) -> str:
    reason = validate_reason(raw)
    if not reason:
        raise InvalidArgument("A takedown needs a reason.", code="invalid_reason")
    return reason


def validate_list_limit(limit: int) -> int:
    if not 0 <= limit <= LIST_MAX:
        raise InvalidArgument(f"Ask for 1 to {LIST_MAX} rooms.", code="invalid_limit")
    return limit or LIST_DEFAULT


def _takedown(record: asyncpg.Record) -> Takedown:
    at = record["taken_down_at"]
    return Takedown(
        room=RoomRow.from_record({name: record[name] for name in _ROOM_COLUMN_NAMES}),
        reason=record["taken_down_reason"],
        taken_down_by=record["taken_down_by"] or "",
        taken_down_at=at,
    )


class Takedowns:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def take_down(self, room_id: str, reason: str, admin: str) -> tuple[Takedown, bool]:
        """The room's takedown, and whether this call made it."""
        async with self._pool.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(_TAKE_DOWN, room_id, reason, admin)
            if record is not None:
                return _takedown(record), True
            record = await conn.fetchrow(_SELECT + " WHERE id = $1", room_id)
        if record is None:
            raise NotFound("There is no such room.", code="room_not_found")
        return _takedown(record), False

    async def restore(self, room_id: str) -> tuple[RoomRow | None, bool]:
        record = await self._pool.fetchrow(_RESTORE, room_id)
        if record is not None:
            return RoomRow.from_record(record), True
        return None, False

    async def counts(self) -> tuple[int, int, int]:
        """Rooms in all, open ones, and those created since midnight UTC (for admins' stats)."""
        record = await self._pool.fetchrow(
            "SELECT count(*) AS total, count(*) FILTER (WHERE closed_at IS NULL) AS open,"
            " count(*) FILTER (WHERE created_at >= date_trunc('day', now() AT TIME ZONE 'UTC')"
            " AT TIME ZONE 'UTC') AS today FROM rooms"
        )
        return int(record["total"]), int(record["open"]), int(record["today"])

    async def listed(self, limit: int) -> list[Takedown]:
        records = await self._pool.fetch(
            _SELECT + " WHERE taken_down_at IS NOT NULL ORDER BY taken_down_at DESC, id LIMIT $1", limit
        )
        return [_takedown(record) for record in records]

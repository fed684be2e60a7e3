"""Verified badges of a reserved username an account gave up: taken off its own participants.

The badge was earned at join time, when the name was the account's; once identity has released the
name (and holds it back from others for a while), the account's participants under it become
ordinary ones. Messages already sent keep the badge they were sent with: they are history.

A room never shows one name twice without the badge, but a verified name may sit beside an earlier
unverified holder of the same name. Where that is the case, the participant losing the badge takes a
free variant of its name (`Alice_2`), decided under the room's join lock so no join slips in between.
"""

from __future__ import annotations

import uuid

import asyncpg

from chatpop_common.usernames import USERNAME_MAX_LENGTH

_MINE = """
    SELECT id, username FROM participants
    WHERE room_id = $1 AND subject = $2 AND verified AND username_lower = lower($3) FOR UPDATE
"""
_CLEAR = "UPDATE participants SET verified = false, username = $2 WHERE id = $1"
# Variants tried before giving up on a room (it would need that many holders of one name).
_VARIANTS = 1000
_ANY_HOLDER = (
    "SELECT 1 FROM participants WHERE room_id = $1 AND id <> $2 AND username_lower = lower($3) LIMIT 1"
)
_UNVERIFIED_HOLDER = (
    "SELECT 1 FROM participants"
    " WHERE room_id = $1 AND id <> $2 AND username_lower = lower($3) AND NOT verified LIMIT 1"
)


def variant(username: str, number: int) -> str:
    """`username` with a `_<number>` suffix, shortened so the whole fits the username limit."""
    suffix = f"_{number}"
    return username[: USERNAME_MAX_LENGTH - len(suffix)] + suffix


class VerifiedBadges:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def clear(self, subject: str, username: str) -> list[tuple[str, str]]:
        """Take the badge off `subject`'s participants verified under `username` (any case).

        Returns (room id, participant id) of each participant that lost it.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            rooms = await conn.fetch(
                "SELECT DISTINCT room_id FROM participants"
                " WHERE subject = $1 AND verified AND username_lower = lower($2) ORDER BY room_id",
                subject,
                username,
            )
            cleared: list[tuple[str, str]] = []
            for room in rooms:
                cleared.extend(await self._clear_in_room(conn, room["room_id"], subject, username))
        return cleared

    async def _clear_in_room(
        self, conn: asyncpg.Connection, room_id: uuid.UUID, subject: str, username: str
    ) -> list[tuple[str, str]]:
        # The same lock first joins of the room take (RoomStore.insert_participant).
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"rooms.join:{room_id}")
        mine = await conn.fetch(_MINE, room_id, subject, username)
        cleared: list[tuple[str, str]] = []
        for participant in mine:
            name = await self._free_name(conn, room_id, participant["id"], participant["username"])
            await conn.execute(_CLEAR, participant["id"], name)
            cleared.append((str(room_id), str(participant["id"])))
        return cleared

    async def _free_name(
        self, conn: asyncpg.Connection, room_id: uuid.UUID, participant_id: uuid.UUID, username: str
    ) -> str:
        """The participant's own name, or the first variant nobody else in the room uses."""
        # Its own name only clashes with an unverified holder (verified names are unique per room).
        if not await conn.fetchval(_UNVERIFIED_HOLDER, room_id, participant_id, username):
            return username
        for number in range(2, _VARIANTS + 2):
            candidate = variant(username, number)
            if not await conn.fetchval(_ANY_HOLDER, room_id, participant_id, candidate):
                return candidate
        raise RuntimeError(f"no free variant of a username in room {room_id}")

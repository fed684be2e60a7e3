"""Personal mutes: a participant hides another participant's messages from what they themselves see.

A mute is private to its muter: it is no entry of the room's log and nobody else's view changes. It
is keyed by the muter's participant id, which is the same on every device of the muter's identity, so
it follows them everywhere. History leaves the muted participants' messages out for the muter; live
frames cannot be filtered per socket (the edge encodes them once per room), so clients hide them by
the list (`ListMutes`, and the edge's `mutes` frame). After a change commits, the muter's whole list
goes out as a `MutesChanged` signal on the room's signal channel, so every edge process tells the
muter's own sockets (and only theirs). A muter's changes and their signals take turns, so the last
list signalled is the last one committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import asyncpg

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.auth import Principal
from chatpop_common.errors import FailedPrecondition, InvalidArgument
from chatpop_messaging import validation
from chatpop_messaging.participants import ParticipantDirectory
from chatpop_messaging.signals import SignalPublisher

# Mutes one participant may hold in one room.
MAX_MUTES = 1000

# Changes of one muter's mutes in a room take turns, so the cap holds under concurrent calls and
# their signals go out in the order the changes committed. Held across the commit and the signal
# (a session lock; releasing the connection to the pool drops it too, should the unlock fail).
_LOCK = "SELECT pg_advisory_lock(hashtextextended('mutes:' || $1 || ':' || $2, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('mutes:' || $1 || ':' || $2, 0))"
_COUNT = "SELECT count(*) FROM mutes WHERE room_id = $1 AND muter_participant_id = $2"
_INSERT = """
INSERT INTO mutes (room_id, muter_participant_id, muted_participant_id, muted_username)
VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING
"""
_DELETE = "DELETE FROM mutes WHERE room_id = $1 AND muter_participant_id = $2 AND muted_participant_id = $3"
_EXISTS = "SELECT 1 FROM mutes WHERE room_id = $1 AND muter_participant_id = $2 AND muted_participant_id = $3"
_LIST = """
SELECT muted_participant_id, muted_username, created_at FROM mutes
WHERE room_id = $1 AND muter_participant_id = $2
ORDER BY created_at DESC, muted_participant_id
"""
_MUTED_IDS = "SELECT muted_participant_id FROM mutes WHERE room_id = $1 AND muter_participant_id = $2"


def _mute(row: asyncpg.Record) -> messaging_pb2.Mute:
    mute = messaging_pb2.Mute(participant_id=row["muted_participant_id"], username=row["muted_username"])
    mute.created_at.FromDatetime(row["created_at"])
    return mute


def muted_target(principal: Principal, participant_id: str) -> str:
    """The participant to mute or unmute, checked: well formed, and not the caller."""
    target = validation.participant_id(participant_id)
    if target == principal.participant_id:
        raise InvalidArgument("You cannot mute yourself.", code="cannot_mute_self")
    return target


class Mutes:
    def __init__(
        self, pool: asyncpg.Pool, participants: ParticipantDirectory, publisher: SignalPublisher
    ) -> None:
        self._pool = pool
        self._participants = participants
        self._publisher = publisher

    @contextlib.asynccontextmanager
    async def _turn(self, room_id: str, muter: str) -> AsyncIterator[asyncpg.Connection]:
        """A connection holding the muter's turn in the room."""
        async with self._pool.acquire() as connection:
            await connection.execute(_LOCK, room_id, muter)
            try:
                yield connection
            finally:
                await connection.execute(_UNLOCK, room_id, muter)

    async def _announce(self, room_id: str, muter: str, mutes: Sequence[messaging_pb2.Mute]) -> None:
        """Tell every edge process the muter's list as it stands now. Losing the signal (Redis down)
        loses no mute: the muter's other sockets read the list again when they reconnect."""
        signal = messaging_pb2.Signal(
            room_id=room_id,
            mutes_changed=messaging_pb2.MutesChanged(
                participant_id=muter, muted_participant_ids=[mute.participant_id for mute in mutes]
            ),
        )
        # Committed already: a caller that gives up must not keep the others from hearing of it.
        await asyncio.shield(self._publisher.publish(signal))

    async def mute(
        self, room_id: str, muter: str, muted: str, metadata: Sequence[tuple[str, str]]
    ) -> tuple[bool, list[messaging_pb2.Mute]]:
        """Mute `muted` for `muter`; NotFound when rooms knows no such participant in the room."""
        target = await self._participants.in_room(room_id, muted, metadata)
        async with self._turn(room_id, muter) as connection:
            async with connection.transaction():
                if await connection.fetchval(_EXISTS, room_id, muter, muted) is not None:
                    changed = False
                else:
                    if await connection.fetchval(_COUNT, room_id, muter) >= MAX_MUTES:
                        raise FailedPrecondition(
                            f"You can mute at most {MAX_MUTES} participants in a room.",
                            code="too_many_mutes",
                        )
                    await connection.execute(_INSERT, room_id, muter, muted, target.username)
                    changed = True
                mutes = [_mute(row) for row in await connection.fetch(_LIST, room_id, muter)]
            if changed:
                await self._announce(room_id, muter, mutes)
        return changed, mutes

    async def unmute(self, room_id: str, muter: str, muted: str) -> tuple[bool, list[messaging_pb2.Mute]]:
        async with self._turn(room_id, muter) as connection:
            async with connection.transaction():
                changed = await connection.execute(_DELETE, room_id, muter, muted) == "DELETE 1"
                mutes = [_mute(row) for row in await connection.fetch(_LIST, room_id, muter)]
            if changed:
                await self._announce(room_id, muter, mutes)
        return changed, mutes

    async def mutes_of(self, room_id: str, muter: str) -> list[messaging_pb2.Mute]:
        return [_mute(row) for row in await self._pool.fetch(_LIST, room_id, muter)]

    async def muted_ids(self, room_id: str, muter: str) -> frozenset[str]:
        """Whom `muter` muted in the room (empty for a caller without a participant)."""
        if not muter:
            return frozenset()
        rows = await self._pool.fetch(_MUTED_IDS, room_id, muter)
        return frozenset(row["muted_participant_id"] for row in rows)

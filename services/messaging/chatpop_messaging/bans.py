"""Ban entries: rooms bans a participant, and the room's log says so.

The ban itself (who, tier, reason, the revoked token version) belongs to rooms. Messaging appends a
ban entry with the room's next seq, its sender_* naming the banned participant, so every live socket
of the room learns it (the edge closes the banned participant's own sockets on it) and a client that
resumes replays it. Only the room's host may ask, and only for a participant rooms says is banned;
one entry per ban (keyed by the ban's id), so a retried request appends nothing more.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import grpc

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.auth import Principal
from chatpop_common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from chatpop_messaging.rooms_lookup import LOOKUP_TIMEOUT, get_room
from chatpop_messaging.store import CLIENT_MSG_ID_CONSTRAINT, ENTRY_COLUMNS, constraint_of, read_entry

KIND_BAN = messaging_pb2.ENTRY_KIND_BAN

_NEXT_SEQ = """
INSERT INTO room_counters AS c (room_id, last_seq) VALUES ($1, 1)
ON CONFLICT (room_id) DO UPDATE SET last_seq = c.last_seq + 1
RETURNING last_seq
"""
_INSERT_BAN = f"""
INSERT INTO messages (id, room_id, seq, sender_participant_id, sender_username, sender_is_host,
                      sender_verified, client_msg_id, text, kind, target_seq)
VALUES ($1, $2, $3, $4, $5, false, $6, $7, '', $8, 0)
RETURNING {ENTRY_COLUMNS}
"""  # noqa: S608 - constant column list
_BY_KEY = f"SELECT {ENTRY_COLUMNS} FROM messages WHERE room_id = $1 AND sender_participant_id = $2 AND client_msg_id = $3"  # noqa: S608, E501
# A ban entry targets no message (target_seq 0): it names the banned participant in sender_*.


class BanHook(Protocol):
    """What else goes when a participant is banned, inside the ban entry's transaction. Paid pins
    hook in here: a banned participant's pins come down with the ban."""

    async def lock(self, connection: asyncpg.Connection, room_id: str, participant_id: str) -> None:
        """Take the locks the hook needs; called before the ban entry takes the room's seq counter."""

    async def banned(
        self, connection: asyncpg.Connection, room_id: str, participant_id: str
    ) -> list[messaging_pb2.Message]:
        """Make the changes, after the ban entry; the entries they appended, in seq order."""


@dataclass(frozen=True, slots=True)
class BanEntry:
    entry: messaging_pb2.Message
    created: bool
    # Entries the ban brought after its own (a created ban only), in seq order.
    followups: tuple[messaging_pb2.Message, ...] = ()


def ban_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError):
        raise InvalidArgument("ban_id is missing or malformed.", code="invalid_ban_id") from None


class BanEntries:
    def __init__(
        self, pool: asyncpg.Pool, channel: grpc.aio.Channel, *, on_ban: Sequence[BanHook] = ()
    ) -> None:
        self._pool = pool
        self._rooms = rooms_pb2_grpc.RoomsServiceStub(channel)
        self._on_ban = tuple(on_ban)

    async def _room(self, room_id: str) -> rooms_pb2.Room:
        room = await get_room(self._rooms, room_id)
        return room

    async def _banned_participant(self, room_id: str, participant_id: str) -> rooms_pb2.Participant:
        """The participant as rooms has it now (never cached: the ban was just made)."""
        try:
            response = await self._rooms.GetParticipant(
                rooms_pb2.GetParticipantRequest(room_id=room_id, participant_id=participant_id),
                timeout=LOOKUP_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise NotFound(
                    "There is no such participant in this room.", code="participant_not_found"
                ) from exc
            raise Unavailable("Rooms could not be reached; try again.", code="rooms_unavailable") from exc
        participant: rooms_pb2.Participant = response.participant
        if not participant.banned:
            raise FailedPrecondition("This participant is not banned; ban them first.", code="not_banned")
        return participant

    async def append(self, principal: Principal, room_id: str, participant_id: str, key: str) -> BanEntry:
        if principal.token_type == "room":
            principal.require_room(room_id)
        room = await self._room(room_id)
        if principal.subject != room.host_id:
            raise PermissionDenied("Only the host can ban participants.", code="not_host")
        target = await self._banned_participant(room_id, participant_id)
        client_msg_id = f"ban:{key}"
        existing = await self._pool.fetchrow(_BY_KEY, room_id, target.id, client_msg_id)
        if existing is not None:
            return BanEntry(await read_entry(existing), created=False)
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                for hook in self._on_ban:
                    await hook.lock(connection, room_id, target.id)
                seq = await connection.fetchval(_NEXT_SEQ, room_id)
                row = await connection.fetchrow(
                    _INSERT_BAN,
                    uuid.uuid4(),
                    room_id,
                    seq,
                    target.id,
                    target.username,
                    target.verified,
                    client_msg_id,
                    KIND_BAN,
                )
                followups: list[messaging_pb2.Message] = []
                for hook in self._on_ban:
                    followups += await hook.banned(connection, room_id, target.id)
        except asyncpg.UniqueViolationError as exc:
            # A concurrent retry appended it first; the whole transaction (seq included) rolled back.
            if constraint_of(exc) != CLIENT_MSG_ID_CONSTRAINT:
                raise
            existing = await self._pool.fetchrow(_BY_KEY, room_id, target.id, client_msg_id)
            if existing is None:
                raise
            return BanEntry(await read_entry(existing), created=False)
        return BanEntry(await read_entry(row), created=True, followups=tuple(followups))

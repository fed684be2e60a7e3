"""SQL for the `messaging` schema: the only code that touches its tables."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from chatpop.messaging.v1 import messaging_pb2

CLIENT_MSG_ID_CONSTRAINT = "messages_room_sender_client_msg_key"

# One statement, so one transaction: the counter bump and the insert commit or roll back together.
# The counter row stays locked until commit, so seqs are handed out in commit order and a failed
# insert (e.g. a duplicate client_msg_id) leaves no gap.
_INSERT = """
WITH counter AS (
    INSERT INTO room_counters AS c (room_id, last_seq) VALUES ($2, 1)
    ON CONFLICT (room_id) DO UPDATE SET last_seq = c.last_seq + 1
    RETURNING last_seq
)
INSERT INTO messages (id, room_id, seq, sender_participant_id, sender_username, sender_is_host,
                      sender_verified, client_msg_id, text, reply_to_seq)
SELECT $1, $2, counter.last_seq, $3, $4, $5, $6, $7, $8, $9 FROM counter
RETURNING id, room_id, seq, sender_participant_id, sender_username, sender_is_host,
          sender_verified, client_msg_id, text, reply_to_seq, created_at
"""


_SELECT = (
    "SELECT id, room_id, seq, sender_participant_id, sender_username, sender_is_host, sender_verified, "
    "client_msg_id, text, reply_to_seq, created_at FROM messages "
)
_BY_CLIENT_MSG_ID = _SELECT + "WHERE room_id = $1 AND sender_participant_id = $2 AND client_msg_id = $3"
_RANGE = _SELECT + "WHERE room_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq"
_NEWEST = _SELECT + "WHERE room_id = $1 ORDER BY seq DESC LIMIT $2"


class DuplicateClientMsgId(Exception):
    """The sender already sent a message with this client_msg_id in this room."""


@dataclass(frozen=True, slots=True)
class NewMessage:
    room_id: str
    sender_participant_id: str
    sender_username: str
    sender_is_host: bool
    sender_verified: bool
    client_msg_id: str
    text: str
    reply_to_seq: int


def to_message(row: Any) -> messaging_pb2.Message:
    message = messaging_pb2.Message(
        id=str(row["id"]),
        room_id=row["room_id"],
        seq=row["seq"],
        sender_participant_id=row["sender_participant_id"],
        sender_username=row["sender_username"],
        sender_is_host=row["sender_is_host"],
        sender_verified=row["sender_verified"],
        client_msg_id=row["client_msg_id"],
        text=row["text"],
        reply_to_seq=row["reply_to_seq"] or 0,
    )
    message.created_at.FromDatetime(row["created_at"])
    return message


class MessageStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert(self, new: NewMessage) -> messaging_pb2.Message:
        """Assign the room's next seq and store the message, atomically."""
        try:
            row = await self._pool.fetchrow(
                _INSERT,
                uuid.uuid4(),
                new.room_id,
                new.sender_participant_id,
                new.sender_username,
                new.sender_is_host,
                new.sender_verified,
                new.client_msg_id,
                new.text,
                new.reply_to_seq or None,
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == CLIENT_MSG_ID_CONSTRAINT:
                raise DuplicateClientMsgId from exc
            raise
        return to_message(row)

    async def find_by_client_msg_id(
        self, room_id: str, sender_participant_id: str, client_msg_id: str
    ) -> messaging_pb2.Message | None:
        row = await self._pool.fetchrow(
            _BY_CLIENT_MSG_ID,
            room_id,
            sender_participant_id,
            client_msg_id,
        )
        return None if row is None else to_message(row)

    async def seq_exists(self, room_id: str, seq: int) -> bool:
        found = await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE room_id = $1 AND seq = $2)", room_id, seq
        )
        return bool(found)

    async def last_seq(self, room_id: str) -> int:
        value = await self._pool.fetchval("SELECT last_seq FROM room_counters WHERE room_id = $1", room_id)
        return int(value or 0)

    async def last_seqs(self, room_ids: Sequence[str]) -> dict[str, int]:
        """The last seq of each room; rooms without messages get 0."""
        rows = await self._pool.fetch(
            "SELECT room_id, last_seq FROM room_counters WHERE room_id = ANY($1::text[])", list(room_ids)
        )
        found = {row["room_id"]: int(row["last_seq"]) for row in rows}
        return {room_id: found.get(room_id, 0) for room_id in room_ids}

    async def range(self, room_id: str, low: int, high: int) -> list[messaging_pb2.Message]:
        """Messages with low <= seq <= high, ascending."""
        rows = await self._pool.fetch(
            _RANGE,
            room_id,
            low,
            high,
        )
        return [to_message(row) for row in rows]

    async def newest(self, room_id: str, count: int) -> list[messaging_pb2.Message]:
        """The room's newest `count` messages, ascending."""
        rows = await self._pool.fetch(
            _NEWEST,
            room_id,
            count,
        )
        return [to_message(row) for row in reversed(rows)]

"""Closing a room for good with "delete everything".

CloseRoom with `erase` closes the room (and its Back Room) and marks both erased, and in the same
transaction writes a `room.erase` outbox row per room. The relay then asks messaging to EraseRoom
(rooms' service credential) until messaging answers that everything is gone: its data keys are
destroyed first, so from the commit on nothing of the room's history can be read back, then its
rows, media and hot cache are deleted. An erased room stays closed: a takedown lifted later does not
reopen it. Erasing is idempotent (one outbox row per room, whatever the number of calls).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg
import grpc

from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop_common import outbox
from chatpop_common.service_auth import ServiceCredentials
from chatpop_rooms.store import _ROOM_COLUMN_NAMES, RoomRow, parse_uuid

ERASE_TOPIC = "room.erase"
ERASE_TIMEOUT = 10.0

_CLOSE_AND_ERASE = f"""
    UPDATE rooms SET closed_at = coalesce(closed_at, now()), erased_at = coalesce(erased_at, now()),
                     taken_down_closed = false, updated_at = now()
    WHERE id = $1
    RETURNING {", ".join(_ROOM_COLUMN_NAMES)}
"""  # noqa: S608 - fixed column list


class NotErasedYet(Exception):
    """messaging has not finished erasing the room (its media are still being purged)."""


async def close_and_erase(pool: asyncpg.Pool, room_id: str) -> RoomRow | None:
    """Close and mark erased the room and its Back Room; their erasure is in the outbox at commit."""
    key = parse_uuid(room_id)
    if key is None:
        return None
    async with pool.acquire() as conn, conn.transaction():
        record = await conn.fetchrow(_CLOSE_AND_ERASE, key)
        if record is None:
            return None
        await add_erasure(conn, str(record["id"]))
        if record["back_room_id"] is not None:
            await conn.fetchrow(_CLOSE_AND_ERASE, record["back_room_id"])
            await add_erasure(conn, str(record["back_room_id"]))
    return RoomRow.from_record(record)


async def add_erasure(conn: asyncpg.Connection, room_id: str) -> None:
    await outbox.add(conn, ERASE_TOPIC, json.dumps({"room_id": room_id}).encode(), room_id)


def _room_id(message: outbox.Message) -> str:
    try:
        return str(json.loads(message.payload)["room_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise outbox.PermanentFailure(f"not a room erasure: {exc}") from exc


class EraseDelivery:
    """The `room.erase` outbox handler: messaging's EraseRoom, until it answers erased."""

    def __init__(
        self, messaging: messaging_pb2_grpc.MessagingServiceStub, credentials: ServiceCredentials
    ) -> None:
        self._messaging = messaging
        self._credentials = credentials

    async def __call__(self, messages: Sequence[outbox.Message]) -> None:
        for message in messages:
            room_id = _room_id(message)
            try:
                response = await self._messaging.EraseRoom(
                    messaging_pb2.EraseRoomRequest(room_id=room_id),
                    metadata=await self._credentials.metadata(),
                    timeout=ERASE_TIMEOUT,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise outbox.PermanentFailure(f"EraseRoom refused {room_id}: {exc.details()}") from exc
                raise
            if not response.erased:
                raise NotErasedYet(room_id)

"""Erasing a closed room (EraseRoom): crypto-shredding first, then deleting everything.

rooms asks (its service credential, from its `room.erase` outbox row, after CloseRoom with erase), or
the admin CLI. Only a room rooms says is closed is erased (FAILED_PRECONDITION `room_open`).

1. One transaction destroys the room's data keys (keys.destroy_room_keys: the wrapped keys are
   deleted and the room is recorded as erased, so no later write can create a key again). From its
   commit on, whatever is left of the room's content, in Postgres, in Redis or in a backup, cannot be
   decrypted by anyone.
2. The room's rows are deleted in bounded batches, one short transaction each: reactions, reports,
   host pins, paid pins and paid order records, mutes, read positions, the board, the log itself, and
   the seq counter last. Media go through the usual purge (the outbox deletes their objects); their
   records are deleted once purged.
3. Its Redis keys (stream, tombstones, presence, rate limits: every `msg:{<room>}:*` key) are deleted.

Each call works for at most `budget` seconds and says whether everything is gone (`erased`); rooms
calls again until it is. A call that was interrupted (or timed out) is simply resumed by the next one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg
from redis.asyncio.cluster import RedisCluster

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2_grpc
from chatpop_common.datastores import RedisClient
from chatpop_common.errors import FailedPrecondition
from chatpop_messaging import keys
from chatpop_messaging.hotcache import REDIS_ERRORS
from chatpop_messaging.media import request_purge
from chatpop_messaging.rooms_lookup import get_room

PURGE_REASON = "room_closed"
# Keys deleted per Redis call.
_REDIS_BATCH = 500

# Tables keyed by room, emptied in this order (what refers to log entries before the log).
_TABLES = (
    "reactions",
    "reports",
    "pins",
    "paid_pins",
    "paid_orders",
    "mutes",
    "read_positions",
    "room_boards",
    "messages",
)
_DELETE_BATCH = {
    # A ctid is unique within one partition only: the outer DELETE names the room (its partition) too.
    table: f"DELETE FROM {table} WHERE room_id = $1 AND ctid = ANY(ARRAY("  # noqa: S608 - constant table names
    f"SELECT ctid FROM {table} WHERE room_id = $1 LIMIT $2))"
    for table in _TABLES
}
_LIVE_MEDIA = """
SELECT id FROM media WHERE room_id = $1 AND state IN ('pending', 'ready') LIMIT $2 FOR UPDATE
"""
_DELETE_PURGED_MEDIA = """
DELETE FROM media WHERE room_id = $1 AND ctid = ANY(ARRAY(
    SELECT ctid FROM media WHERE room_id = $1 AND state = 'deleted' LIMIT $2
))
"""
_MEDIA_LEFT = "SELECT count(*) FROM media WHERE room_id = $1"
_DELETE_COUNTER = "DELETE FROM room_counters WHERE room_id = $1"


@dataclass(slots=True)
class _Progress:
    entries: int = 0
    media: int = 0
    done: bool = True


class RoomEraser:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: RedisClient,
        rooms: rooms_pb2_grpc.RoomsServiceStub,
        *,
        batch: int,
        budget: float,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._rooms = rooms
        self._batch = batch
        self._budget = budget

    async def erase(self, room_id: str) -> messaging_pb2.EraseRoomResponse:
        room = await get_room(self._rooms, room_id)
        if not room.closed:
            raise FailedPrecondition("Only a closed room can be erased.", code="room_open")
        deadline = time.monotonic() + self._budget
        async with self._pool.acquire() as connection, connection.transaction():
            await keys.destroy_room_keys(connection, room_id)
        progress = _Progress()
        await self._purge_media(room_id, progress, deadline)
        for table in _TABLES:
            await self._empty(table, room_id, progress, deadline)
        await self._forget_media(room_id, progress, deadline)
        if progress.done:
            await self._pool.execute(_DELETE_COUNTER, room_id)
            progress.done = await self._forget_redis(room_id)
        return messaging_pb2.EraseRoomResponse(
            erased=progress.done, entries_deleted=progress.entries, media_purged=progress.media
        )

    async def _purge_media(self, room_id: str, progress: _Progress, deadline: float) -> None:
        while True:
            async with self._pool.acquire() as connection, connection.transaction():
                rows = await connection.fetch(_LIVE_MEDIA, room_id, self._batch)
                for row in rows:
                    if await request_purge(connection, room_id, row["id"], PURGE_REASON):
                        progress.media += 1
            if len(rows) < self._batch:
                return
            if time.monotonic() >= deadline:
                progress.done = False
                return

    async def _empty(self, table: str, room_id: str, progress: _Progress, deadline: float) -> None:
        if not progress.done:
            return
        while True:
            status = await self._pool.execute(_DELETE_BATCH[table], room_id, self._batch)
            deleted = int(status.split()[-1])
            if table == "messages":
                progress.entries += deleted
            if deleted < self._batch:
                return
            if time.monotonic() >= deadline:
                progress.done = False
                return

    async def _forget_media(self, room_id: str, progress: _Progress, deadline: float) -> None:
        """Records whose objects are gone go; records still being purged keep the erase unfinished."""
        if not progress.done:
            return
        while True:
            status = await self._pool.execute(_DELETE_PURGED_MEDIA, room_id, self._batch)
            if int(status.split()[-1]) < self._batch or time.monotonic() >= deadline:
                break
        if await self._pool.fetchval(_MEDIA_LEFT, room_id):
            progress.done = False

    async def _forget_redis(self, room_id: str) -> bool:
        """Delete every key of the room; False when Redis could not be reached (the next call retries)."""
        try:
            found: list[str | bytes] = []
            pattern = f"msg:{{{room_id}}}:*"
            # On a cluster every primary is scanned: the room's keys share one slot, but a slot being
            # migrated has keys on two nodes. Deleting them is one slot per call.
            keys = (
                self._redis.scan_iter(match=pattern, count=1000, target_nodes=RedisCluster.PRIMARIES)
                if isinstance(self._redis, RedisCluster)
                else self._redis.scan_iter(match=pattern, count=1000)
            )
            async for key in keys:
                found.append(key)
                if len(found) >= _REDIS_BATCH:
                    await self._redis.unlink(*found)
                    found.clear()
            if found:
                await self._redis.unlink(*found)
        except REDIS_ERRORS:
            return False
        return True

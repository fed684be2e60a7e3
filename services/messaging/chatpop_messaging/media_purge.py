"""Purging media: deleting its objects from storage once nothing may show it any more.

A purge is decided in a transaction (media.request_purge: the record turns `deleting`, a
`media.purge` outbox row is written) and carried out by the outbox relay (`MediaPurger.handle`):
every object under the media's prefix is deleted, then the record is marked `deleted` with its
variants cleared. Storage being away (StorageUnavailable) leaves the row to the relay's backoff;
deleting objects that are gone already is fine, so a retried batch does no harm. With
S3_VACUUM_URL set, SeaweedFS is then asked to vacuum, so the deleted bytes are really gone
(`Vacuums`: coalesced, one at a time, a few seconds after the purge and once more later).

What decides a purge: deleting the message that carries it (deletions.py), its uploader abandoning
it (AbandonMedia), a room closing (AnnounceRoomUpdate), and the sweeper (`MediaSweeper.sweep`, every
MEDIA_SWEEP_INTERVAL in every replica; rows are taken with SKIP LOCKED and a purge is recorded once
per media, so replicas sweeping at once do no harm): uploads left pending past MEDIA_PENDING_TTL,
media no message took within MEDIA_UNREFERENCED_TTL, media of closed rooms, and media older than its
room's retention_days.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence

import asyncpg

from chatpop.rooms.v1 import rooms_pb2_grpc
from chatpop_common import outbox
from chatpop_common.errors import NotFound, Unavailable
from chatpop_common.objectstore import ObjectStore, vacuum
from chatpop_messaging.media import object_prefix, request_purge
from chatpop_messaging.metrics import MEDIA_PURGED, MEDIA_VACUUMS
from chatpop_messaging.rooms_lookup import get_room

log = logging.getLogger(__name__)

# Media purged at once by the outbox handler.
PURGE_CONCURRENCY = 8
# Seconds a vacuum waits after a purge, and the second vacuum after the first (see Vacuums).
VACUUM_SETTLE = 3.0
VACUUM_FOLLOW_UP = 30.0
# Media purged per transaction, and transactions per kind of sweep per run (the rest waits for the
# next run).
SWEEP_BATCH = 200
SWEEP_BATCHES = 10
# Rooms with live media looked up at rooms per sweep (the next sweep goes on from there).
ROOMS_PER_SWEEP = 500

_MARK_DELETED = """
UPDATE media SET state = 'deleted', deleted_at = now(), variants = '[]'::jsonb
WHERE room_id = $1 AND id = $2 AND state = 'deleting'
RETURNING delete_reason
"""
_PENDING_EXPIRED = """
SELECT room_id, id FROM media
WHERE state = 'pending' AND created_at < now() - make_interval(secs => $1)
ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED
"""
_UNREFERENCED = """
SELECT room_id, id FROM media
WHERE state = 'ready' AND message_seq IS NULL AND created_at < now() - make_interval(secs => $1)
ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED
"""
_OF_ROOM = """
SELECT room_id, id FROM media
WHERE room_id = $1 AND state IN ('pending', 'ready') AND created_at < now() - make_interval(days => $2)
ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED
"""
_ROOMS_WITH_MEDIA = """
SELECT room_id, min(created_at) < now() - make_interval(days => 1) AS has_day_old FROM media
WHERE state IN ('pending', 'ready') AND room_id > $1
GROUP BY room_id ORDER BY room_id LIMIT $2
"""


class Vacuums:
    """Asks SeaweedFS to vacuum after purges: requests coalesce and one vacuum runs at a time.

    SeaweedFS's volume servers record a delete a moment after DeleteObjects has answered, so a vacuum
    at once may find nothing to reclaim yet: each round waits `settle` seconds first, and runs once
    more `follow_up` seconds later (unless another purge started a new round by then) for deletes
    recorded after it."""

    def __init__(
        self, url: str, *, settle: float = VACUUM_SETTLE, follow_up: float = VACUUM_FOLLOW_UP
    ) -> None:
        self._url = url
        self._settle = settle
        self._follow_up = follow_up
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def request(self) -> None:
        self._wanted.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="media vacuums")

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await asyncio.sleep(self._settle)
            await self._vacuum()
            try:
                await asyncio.wait_for(self._wanted.wait(), self._follow_up)
            except TimeoutError:
                await self._vacuum()

    async def _vacuum(self) -> None:
        try:
            await vacuum(self._url)
            MEDIA_VACUUMS.labels("ok").inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            MEDIA_VACUUMS.labels("failed").inc()
            log.warning("storage vacuum failed: %s", exc)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class MediaPurger:
    """The `media.purge` outbox handler."""

    def __init__(self, pool: asyncpg.Pool, store: ObjectStore, vacuums: Vacuums | None) -> None:
        self._pool = pool
        self._store = store
        self._vacuums = vacuums

    async def handle(self, batch: Sequence[outbox.Message]) -> None:
        targets = [_target(message) for message in batch]
        # A few at a time: a batch must be done well within the relay's lease.
        for start in range(0, len(targets), PURGE_CONCURRENCY):
            await asyncio.gather(
                *(
                    self._purge(room_id, media)
                    for room_id, media in targets[start : start + PURGE_CONCURRENCY]
                )
            )

    async def _purge(self, room_id: str, media: uuid.UUID) -> None:
        # Objects first: a record marked deleted never has objects left behind.
        if await self._store.delete_prefix(object_prefix(room_id, str(media))) and self._vacuums:
            self._vacuums.request()
        reason = await self._pool.fetchval(_MARK_DELETED, room_id, media)
        if reason is not None:
            MEDIA_PURGED.labels(reason).inc()


def _target(message: outbox.Message) -> tuple[str, uuid.UUID]:
    """The room and media a `media.purge` row names; a row that names none is refused for good."""
    try:
        body = json.loads(message.payload)
        return str(body["room_id"]), uuid.UUID(str(body["media_id"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise outbox.PermanentFailure(f"not a media purge: {exc}") from exc


class MediaSweeper:
    """Decides the purges nobody asked for: see the module's description."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        rooms: rooms_pb2_grpc.RoomsServiceStub,
        *,
        pending_ttl: float,
        unreferenced_ttl: float,
    ) -> None:
        self._pool = pool
        self._rooms = rooms
        self._pending_ttl = pending_ttl
        self._unreferenced_ttl = unreferenced_ttl
        # Where the next sweep goes on looking at rooms with live media.
        self._room_cursor = ""

    async def sweep(self) -> None:
        await self._purge_all(_PENDING_EXPIRED, (float(self._pending_ttl),), "pending_expired")
        await self._purge_all(_UNREFERENCED, (float(self._unreferenced_ttl),), "unreferenced")
        await self._sweep_rooms()

    async def purge_room(self, room_id: str, reason: str = "room_closed", *, older_than_days: int = 0) -> int:
        """Purge the live media of a room (only what is older than `older_than_days`, when set)."""
        return await self._purge_all(_OF_ROOM, (room_id, older_than_days), reason)

    async def _purge_all(self, select: str, args: tuple[object, ...], reason: str) -> int:
        total = 0
        for _ in range(SWEEP_BATCHES):
            async with self._pool.acquire() as connection, connection.transaction():
                rows = await connection.fetch(select, *args, SWEEP_BATCH)
                for row in rows:
                    if await request_purge(connection, row["room_id"], row["id"], reason):
                        total += 1
            if len(rows) < SWEEP_BATCH:
                break
        return total

    async def _sweep_rooms(self) -> None:
        rows = await self._pool.fetch(_ROOMS_WITH_MEDIA, self._room_cursor, ROOMS_PER_SWEEP)
        # A full page: the next sweep goes on after it; otherwise it starts over.
        self._room_cursor = rows[-1]["room_id"] if len(rows) == ROOMS_PER_SWEEP else ""
        for row in rows:
            room_id = row["room_id"]
            try:
                room = await get_room(self._rooms, room_id)
            except NotFound:
                # No such room any more: nothing may show its media.
                await self.purge_room(room_id)
                continue
            except Unavailable:
                log.info("media sweep: rooms did not answer about room %s; next time", room_id)
                continue
            if room.closed or room.taken_down:
                await self.purge_room(room_id)
            elif room.retention_days > 0 and row["has_day_old"]:
                await self.purge_room(room_id, "retention", older_than_days=room.retention_days)

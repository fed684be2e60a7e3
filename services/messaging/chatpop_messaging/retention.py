"""Retention: entries older than their room's retention are deleted for good, from the front of the log.

Every RETENTION_INTERVAL each replica walks the rooms messaging has entries for (`room_counters`), asks
rooms for their retention (ListRetentionPolicies, at most 1,000 ids a call) and, per room whose
retention is more than 0 days, deletes the entries (messages and changes alike) created before
now - retention_days, together with what refers to them: reactions, reports, host pins, paid pin rows
and the media they carry (purged through the outbox like any other media purge). Read positions stay.

The room's `floor_seq` (room_counters) is the lowest seq kept; it only grows. Deleting takes the log
from the front: the floor moves to the first entry that is not old enough, so an entry newer than
the cutoff is never deleted, and an old entry that sits after a newer one (seqs follow commit order,
created_at the start of the transaction) waits for the next run. Readers never look below the floor
(ListMessages stops there, a resume from below it starts there with the floor said), so the floor is
raised first, in a transaction of its own that holds the room's counter row for a moment, and the
rows below it are deleted afterwards, in a second short transaction that never waits for the counter
(sends and changes take it last, so waiting for it while holding message rows could deadlock). A run
interrupted in between leaves rows below the floor: the next run deletes them first.

Work is bounded: RETENTION_BATCH entries per transaction, a short pause between transactions. A
session advisory lock per room keeps two replicas from working on one room at once (the other skips
it); even without it, a row is deleted and counted once. The room's Redis stream loses its entries
below the floor (and tombstones) once the room is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import grpc

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.errors import Unavailable
from chatpop_common.periodic import run_every
from chatpop_common.service_auth import ServiceCredentials
from chatpop_messaging.hotcache import HotCache
from chatpop_messaging.media import request_purge
from chatpop_messaging.metrics import (
    RETENTION_DELETED,
    RETENTION_DURATION,
    RETENTION_FLOOR_LAG,
    RETENTION_RUNS,
)

log = logging.getLogger(__name__)

# Room ids per ListRetentionPolicies call (the RPC's bound).
POLICIES_PER_CALL = 1000
POLICIES_TIMEOUT = 10.0
PURGE_REASON = "retention"

_LOCK_KEY = "SELECT hashtextextended('chatpop-retention:' || $1, 0)"
_TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
_UNLOCK = "SELECT pg_advisory_unlock($1)"
_ROOMS = "SELECT room_id FROM room_counters WHERE room_id > $1 ORDER BY room_id LIMIT $2"
_FLOOR = "SELECT floor_seq FROM room_counters WHERE room_id = $1"
_CUTOFF = "SELECT now() - make_interval(days => $1)"
# The next entries from the floor on, each with whether it is old enough to go.
_FRONT = """
SELECT seq, created_at < $3 AS old FROM messages
WHERE room_id = $1 AND seq >= $2 ORDER BY seq LIMIT $4
"""
_LOWEST = "SELECT min(seq) FROM messages WHERE room_id = $1"
_RAISE_FLOOR = """
UPDATE room_counters SET floor_seq = GREATEST(floor_seq, $2) WHERE room_id = $1 RETURNING floor_seq
"""
_DELETE_ENTRIES = "DELETE FROM messages WHERE room_id = $1 AND seq >= $2 AND seq < $3"
_COUNT_ENTRIES = "SELECT count(*) FROM messages WHERE room_id = $1 AND seq >= $2 AND seq < $3"
# What refers to a deleted entry (by seq), deleted with it.
_DEPENDENTS = {
    "reactions": "DELETE FROM reactions WHERE room_id = $1 AND message_seq >= $2 AND message_seq < $3",
    "reports": "DELETE FROM reports WHERE room_id = $1 AND message_seq >= $2 AND message_seq < $3",
    "pins": "DELETE FROM pins WHERE room_id = $1 AND message_seq >= $2 AND message_seq < $3",
    "paid_pins": "DELETE FROM paid_pins WHERE room_id = $1 AND target_seq >= $2 AND target_seq < $3",
}
_LIVE_MEDIA = """
SELECT id FROM media
WHERE room_id = $1 AND message_seq >= $2 AND message_seq < $3 AND state IN ('pending', 'ready')
ORDER BY message_seq
"""
_COUNT_MEDIA = """
SELECT count(*) FROM media
WHERE room_id = $1 AND message_seq >= $2 AND message_seq < $3 AND state IN ('pending', 'ready')
"""
_OLDEST_KEPT = "SELECT created_at FROM messages WHERE room_id = $1 AND seq >= $2 ORDER BY seq LIMIT 1"

DELETED_KINDS = ("entries", "reactions", "reports", "pins", "paid_pins", "media")


async def floor_seq(connection: asyncpg.Pool | asyncpg.Connection, room_id: str) -> int:
    """The room's floor as readers see it: the lowest seq that may be read (1 when nothing was
    deleted)."""
    value = await connection.fetchval(_FLOOR, room_id)
    return max(int(value or 0), 1)


@dataclass(slots=True)
class RoomOutcome:
    """What one room's run deleted (or would, dry) and where its floor ends up."""

    room_id: str
    retention_days: int
    floor_seq: int
    entries: int = 0
    media: int = 0
    others: dict[str, int] = field(default_factory=dict)
    # Seconds by which the oldest entry kept is older than the cutoff (0 when none is).
    lag: float = 0.0

    def message(self) -> messaging_pb2.RoomRetention:
        return messaging_pb2.RoomRetention(
            room_id=self.room_id,
            retention_days=self.retention_days,
            entries=self.entries,
            media=self.media,
            floor_seq=self.floor_seq,
        )


@dataclass(frozen=True, slots=True)
class _Batch:
    # Entries [low, bound) go; `done` when the front reached an entry that stays (or the end).
    low: int
    bound: int
    done: bool


class Retention:
    """The retention job and RunRetention."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        cache: HotCache,
        rooms: rooms_pb2_grpc.RoomsServiceStub,
        credentials: ServiceCredentials,
        *,
        batch: int,
        pause: float,
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._rooms = rooms
        self._credentials = credentials
        self._batch = batch
        self._pause = pause

    async def periodically(self, interval: float) -> None:
        """The job: a run over every room every `interval` seconds, the first one interval after
        start-up (replicas rolling out together do not all start with a run)."""
        await asyncio.sleep(interval)
        await run_every(interval, self._scheduled, what="apply retention")

    async def _scheduled(self) -> None:
        await self.run()

    async def run(self, room_id: str = "", *, dry_run: bool = False) -> messaging_pb2.RunRetentionResponse:
        """Apply retention to one room, or every room messaging has entries for."""
        started = time.monotonic()
        response = messaging_pb2.RunRetentionResponse(dry_run=dry_run)
        lag = 0.0
        try:
            async for ids in self._room_pages(room_id):
                for policy in await self._policies(ids):
                    if policy.retention_days <= 0 or policy.erased:
                        continue
                    try:
                        outcome = await self._room(policy.room_id, policy.retention_days, dry_run=dry_run)
                    except (asyncpg.PostgresError, OSError):
                        if room_id:
                            raise
                        # One room's trouble (a lost connection, a lock timeout) waits for the next run.
                        log.warning("retention of room %s failed", policy.room_id, exc_info=True)
                        RETENTION_RUNS.labels("room_failed").inc()
                        continue
                    if outcome is None:
                        continue
                    lag = max(lag, outcome.lag)
                    if outcome.entries or outcome.media or room_id:
                        response.rooms.append(outcome.message())
                    response.entries += outcome.entries
                    response.media += outcome.media
        except Exception:
            RETENTION_RUNS.labels("failed").inc()
            raise
        RETENTION_RUNS.labels("dry_run" if dry_run else "ok").inc()
        if not dry_run:
            RETENTION_DURATION.observe(time.monotonic() - started)
            if not room_id:
                RETENTION_FLOOR_LAG.set(lag)
        return response

    async def _room_pages(self, room_id: str) -> AsyncIterator[list[str]]:
        if room_id:
            yield [room_id]
            return
        cursor = ""
        while True:
            rows = await self._pool.fetch(_ROOMS, cursor, POLICIES_PER_CALL)
            if not rows:
                return
            yield [row["room_id"] for row in rows]
            if len(rows) < POLICIES_PER_CALL:
                return
            cursor = rows[-1]["room_id"]

    async def _policies(self, room_ids: Sequence[str]) -> list[rooms_pb2.RetentionPolicy]:
        try:
            response = await self._rooms.ListRetentionPolicies(
                rooms_pb2.ListRetentionPoliciesRequest(room_ids=list(room_ids)),
                metadata=await self._credentials.metadata(),
                timeout=POLICIES_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                "Rooms could not say the rooms' retention; try again.", code="rooms_unavailable"
            ) from exc
        return list(response.policies)

    async def _room(self, room_id: str, days: int, *, dry_run: bool) -> RoomOutcome | None:
        """One room's run; None when another replica is working on it right now."""
        async with self._pool.acquire() as connection:
            key = await connection.fetchval(_LOCK_KEY, room_id)
            if not await connection.fetchval(_TRY_LOCK, key):
                return None
            try:
                cutoff: datetime = await connection.fetchval(_CUTOFF, days)
                if dry_run:
                    outcome = await self._dry(connection, room_id, days, cutoff)
                else:
                    outcome = await self._apply(connection, room_id, days, cutoff)
                oldest = await connection.fetchval(_OLDEST_KEPT, room_id, outcome.floor_seq)
            finally:
                await connection.fetchval(_UNLOCK, key)
        if oldest is not None and oldest < cutoff:
            outcome.lag = (cutoff - oldest).total_seconds()
        if not dry_run and (outcome.entries or outcome.media):
            await self._cache.trim_below(room_id, outcome.floor_seq)
        return outcome

    async def _front(
        self, connection: asyncpg.Connection, room_id: str, start: int, cutoff: datetime
    ) -> tuple[int, bool]:
        """Where the old front of the log from `start` ends within one batch: (bound, done)."""
        rows = await connection.fetch(_FRONT, room_id, start, cutoff, self._batch)
        for row in rows:
            if not row["old"]:
                return int(row["seq"]), True
        if not rows:
            return start, True
        return int(rows[-1]["seq"]) + 1, len(rows) < self._batch

    async def _apply(
        self, connection: asyncpg.Connection, room_id: str, days: int, cutoff: datetime
    ) -> RoomOutcome:
        floor = await floor_seq(connection, room_id)
        # Rows left below the floor by an interrupted run go first.
        lowest = await connection.fetchval(_LOWEST, room_id)
        low = min(int(lowest), floor) if lowest is not None else floor
        outcome = RoomOutcome(room_id, days, floor)
        while True:
            bound, done = await self._front(connection, room_id, floor, cutoff)
            if bound > floor:
                async with connection.transaction():
                    floor = int(await connection.fetchval(_RAISE_FLOOR, room_id, bound))
            if floor > low:
                await self._delete(connection, room_id, low, floor, outcome)
                low = floor
            outcome.floor_seq = floor
            if done:
                return outcome
            await asyncio.sleep(self._pause)

    async def _delete(
        self, connection: asyncpg.Connection, room_id: str, low: int, bound: int, outcome: RoomOutcome
    ) -> None:
        """Delete entries [low, bound) and what refers to them, in one short transaction."""
        async with connection.transaction():
            status = await connection.execute(_DELETE_ENTRIES, room_id, low, bound)
            entries = _count(status)
            counts = {"entries": entries}
            for kind, statement in _DEPENDENTS.items():
                counts[kind] = _count(await connection.execute(statement, room_id, low, bound))
            purged = 0
            for row in await connection.fetch(_LIVE_MEDIA, room_id, low, bound):
                if await request_purge(connection, room_id, row["id"], PURGE_REASON):
                    purged += 1
            counts["media"] = purged
        for kind, value in counts.items():
            if value:
                RETENTION_DELETED.labels(kind).inc(value)
        outcome.entries += entries
        outcome.media += purged
        for kind, value in counts.items():
            outcome.others[kind] = outcome.others.get(kind, 0) + value

    async def _dry(
        self, connection: asyncpg.Connection, room_id: str, days: int, cutoff: datetime
    ) -> RoomOutcome:
        """Count what `_apply` would delete now, deleting nothing."""
        floor = await floor_seq(connection, room_id)
        lowest = await connection.fetchval(_LOWEST, room_id)
        low = min(int(lowest), floor) if lowest is not None else floor
        cursor = floor
        while True:
            bound, done = await self._front(connection, room_id, cursor, cutoff)
            cursor = max(cursor, bound)
            if done:
                break
        outcome = RoomOutcome(room_id, days, cursor)
        if cursor > low:
            outcome.entries = int(await connection.fetchval(_COUNT_ENTRIES, room_id, low, cursor))
            outcome.media = int(await connection.fetchval(_COUNT_MEDIA, room_id, low, cursor))
        return outcome


def _count(status: str) -> int:
    """Rows a DELETE touched, from its command status ("DELETE 12")."""
    return int(status.rsplit(" ", 1)[-1])

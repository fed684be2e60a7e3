"""Reading message ranges: the Redis hot cache when it holds the whole range, Postgres otherwise.

Also keeps the hot cache warm: a room whose stream has a hole (or was lost) is rebuilt from Postgres
in the background, one rebuild per room at a time.
"""

from __future__ import annotations

import asyncio
import logging

from chatpop.messaging.v1 import messaging_pb2
from chatpop_messaging.hotcache import HotCache
from chatpop_messaging.metrics import HOT_CACHE_REBUILDS, HOT_CACHE_REQUESTS, RESUME_READS
from chatpop_messaging.store import MessageStore

log = logging.getLogger(__name__)


class MessageReader:
    def __init__(self, store: MessageStore, cache: HotCache) -> None:
        self._store = store
        self._cache = cache
        self._rebuilding: dict[str, asyncio.Task[None]] = {}
        self._rebuild_again: set[str] = set()

    async def read_range(
        self, room_id: str, low: int, high: int, *, newest: int, resume: bool = False
    ) -> list[messaging_pb2.Message]:
        """Messages low..high ascending; `newest` is the room's last seq (it bounds the hot window).

        `resume` counts the read among resumes by source (chatpop_resume_reads_total).
        """
        low = max(low, 1)
        if high < low:
            return []
        hot_floor = newest - self._cache.size + 1
        if high >= hot_floor:
            cached = await self._cache.read(room_id, low, high)
            if cached is not None:
                HOT_CACHE_REQUESTS.labels("hit").inc()
                if resume:
                    RESUME_READS.labels("hot_cache").inc()
                return cached
        HOT_CACHE_REQUESTS.labels("miss").inc()
        if resume:
            RESUME_READS.labels("postgres").inc()
        messages = await self._store.range(room_id, low, high)
        if low >= hot_floor and self._cache.available():
            # The whole range should have been in the stream: it was lost or has a hole.
            self.request_rebuild(room_id)
        return messages

    def request_rebuild(self, room_id: str) -> None:
        """Rebuild the room's stream from Postgres soon; coalesces requests per room."""
        if room_id in self._rebuilding:
            self._rebuild_again.add(room_id)
            return
        self._rebuilding[room_id] = asyncio.create_task(self._rebuild(room_id), name=f"rebuild {room_id}")

    async def _rebuild(self, room_id: str) -> None:
        try:
            while True:
                self._rebuild_again.discard(room_id)
                await self._repair(room_id)
                if room_id not in self._rebuild_again:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rebuilding the hot cache of room %s failed", room_id)
        finally:
            self._rebuilding.pop(room_id, None)
            self._rebuild_again.discard(room_id)

    async def _repair(self, room_id: str) -> None:
        bounds = await self._cache.bounds(room_id)
        if bounds is None:
            return
        head, tail = bounds
        last_seq = await self._store.last_seq(room_id)
        window_start = max(1, last_seq - self._cache.size + 1)
        if head and head <= window_start:
            # Only the newest entries are missing (usually appends that arrived out of order).
            if tail >= last_seq:
                return
            messages = await self._store.range(room_id, tail + 1, last_seq)
        else:
            messages = await self._store.newest(room_id, self._cache.size)
        if messages and await self._cache.merge(room_id, contiguous_tail(messages)):
            HOT_CACHE_REBUILDS.inc()

    async def close(self) -> None:
        tasks = list(self._rebuilding.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def contiguous_tail(messages: list[messaging_pb2.Message]) -> list[messaging_pb2.Message]:
    """The newest run of consecutive seqs (retention may have removed older messages)."""
    start = len(messages) - 1
    while start > 0 and messages[start - 1].seq == messages[start].seq - 1:
        start -= 1
    return messages[start:]

"""Cached lookups refreshed before they expire, so a busy key never waits for one.

The caches of what rooms says (participants, room policies) trust an entry for a TTL. Without more,
every send of a key that just expired waits for a lookup at rooms (an RPC, ~2 ms), and in a lively
room that is a steady share of the sends' tail latency. An entry past half its TTL is still served,
and its use starts one lookup in the background that replaces it: a key in use keeps a fresh entry,
and how stale an answer may be stays bounded by the TTL, as before. An entry nobody uses expires and
the next use waits for its lookup, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

# The first share of an entry's TTL during which it is served without a refresh.
REFRESH_AFTER = 0.5


class RefreshAhead:
    """Background refreshes, at most one per key at a time and `max_in_flight` in all."""

    def __init__(self, *, max_in_flight: int = 64) -> None:
        self._max_in_flight = max_in_flight
        self._keys: set[Hashable] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, key: Hashable, refresh: Callable[[], Awaitable[object]]) -> None:
        """Run `refresh` in the background unless one for `key` runs already (or too many do)."""
        if key in self._keys or len(self._keys) >= self._max_in_flight:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._keys.add(key)
        task = loop.create_task(self._run(key, refresh), name="refresh a cached lookup")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Hashable, refresh: Callable[[], Awaitable[object]]) -> None:
        try:
            await refresh()
        except Exception as exc:
            # The entry stays until it expires; the next use after that asks again (and fails loudly).
            log.debug("refreshing a cached lookup failed: %s", exc)
        finally:
            self._keys.discard(key)

    @property
    def in_flight(self) -> int:
        return len(self._keys)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

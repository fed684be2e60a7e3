"""What this edge process tells messaging about who is online: participants with an open socket here.

The process has a random instance id. Sockets only change local counts; one reporter task sends
what changed since the last successful report (who got a first socket, whose last socket closed),
one call at a time so reports never overtake each other, batching whatever piled up meanwhile. Every
`refresh` seconds it renews its record of every room (counts only, no names) before the record's
`ttl` runs out: a process killed without its goodbye drops out of every room after the ttl. When
messaging's record disagrees with a count (a report lost while messaging or Redis was away), that
room gets a complete report. Nothing here is ever awaited on a socket's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import grpc

from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop_common.backoff import Backoff
from chatpop_edge.metrics import PRESENCE_REPORTS

log = logging.getLogger(__name__)

# Rooms per ReportPresence call (messaging takes at most 500).
_BATCH = 200
# Seconds the goodbye may take on shutdown.
_GOODBYE_TIMEOUT = 2.0


class PresenceReporter:
    def __init__(
        self,
        messaging: messaging_pb2_grpc.MessagingServiceStub,
        *,
        ttl: int,
        refresh: float,
        timeout: float,
    ) -> None:
        self.instance_id = f"edge-{secrets.token_hex(8)}"
        self._messaging = messaging
        self._ttl = ttl
        self._refresh = refresh
        self._timeout = timeout
        # room → participant → open sockets in this process
        self._sockets: dict[str, dict[str, int]] = {}
        # room → participants messaging has from this process (as of the last successful report)
        self._reported: dict[str, set[str]] = {}
        self._dirty: set[str] = set()
        self._complete: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def online(self, room_id: str) -> set[str]:
        """Participants with a socket in this process (for tests and debugging)."""
        return set(self._sockets.get(room_id, ()))

    def opened(self, room_id: str, participant_id: str) -> None:
        room = self._sockets.setdefault(room_id, {})
        count = room.get(participant_id, 0)
        room[participant_id] = count + 1
        if count == 0:
            self._changed(room_id)

    def closed(self, room_id: str, participant_id: str) -> None:
        room = self._sockets.get(room_id)
        if room is None or participant_id not in room:
            return
        if room[participant_id] > 1:
            room[participant_id] -= 1
            return
        del room[participant_id]
        if not room:
            del self._sockets[room_id]
        self._changed(room_id)

    def _changed(self, room_id: str) -> None:
        self._dirty.add(room_id)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="presence reporter")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + self._refresh
        backoff = Backoff(first=0.2, limit=self._refresh)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_refresh - loop.time()))
            self._wake.clear()
            refreshing = loop.time() >= next_refresh
            rooms = set(self._dirty)
            if refreshing:
                rooms |= self._sockets.keys() | self._reported.keys()
            self._dirty.clear()
            try:
                await self._report(rooms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                PRESENCE_REPORTS.labels("failed").inc()
                log.warning("reporting presence failed: %s", exc)
                # Whatever was not reported is reported again, as a diff against the last success.
                self._dirty |= rooms
                await asyncio.sleep(backoff.next())
                self._wake.set()
                continue
            backoff.reset()
            if refreshing:
                next_refresh = loop.time() + self._refresh

    def _entry(self, room_id: str) -> tuple[messaging_pb2.PresenceReport, set[str]] | None:
        now = set(self._sockets.get(room_id, ()))
        before = self._reported.get(room_id, set())
        if room_id in self._complete:
            report = messaging_pb2.PresenceReport(
                room_id=room_id, joined=sorted(now), complete=True, count=len(now)
            )
        elif now or before:
            report = messaging_pb2.PresenceReport(
                room_id=room_id, joined=sorted(now - before), left=sorted(before - now), count=len(now)
            )
        else:
            return None
        return report, now

    async def _report(self, rooms: set[str]) -> None:
        entries = [entry for room_id in sorted(rooms) if (entry := self._entry(room_id)) is not None]
        for start in range(0, len(entries), _BATCH):
            batch = entries[start : start + _BATCH]
            # A failure leaves this and later batches unreported; the caller tries them all again.
            response = await self._messaging.ReportPresence(
                messaging_pb2.ReportPresenceRequest(
                    instance_id=self.instance_id,
                    ttl_seconds=self._ttl,
                    rooms=[report for report, _now in batch],
                ),
                timeout=self._timeout,
            )
            PRESENCE_REPORTS.labels("ok").inc()
            for report, now in batch:
                self._complete.discard(report.room_id)
                if now:
                    self._reported[report.room_id] = now
                else:
                    self._reported.pop(report.room_id, None)
            for room_id in response.resync_room_ids:
                self._complete.add(room_id)
                self._changed(room_id)

    async def close(self) -> None:
        """Stop, then say goodbye: nobody in any room is online through this process any more."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        rooms = sorted(self._reported.keys() | self._sockets.keys())
        self._sockets.clear()
        self._complete.update(rooms)
        try:
            await asyncio.wait_for(self._report(set(rooms)), _GOODBYE_TIMEOUT)
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            log.warning("presence goodbye failed; the records expire on their own: %s", exc)

"""The security events messaging records in identity's audit log (chatpop_common.audit_events).

- `room.report_resolved`: the host restored, deleted or dismissed a reported message.
- `room.rate_limited`: a participant's sends were refused by the rate limit; counted per participant,
  room and minute, and recorded once that minute is over, with the count (never one per refusal).
  Each process counts what it refused, so a participant whose sends reach two processes in one
  minute may appear once per process.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from chatpop.identity.v1 import identity_pb2
from chatpop_common.audit_events import AuditSender, audit_event

REPORT_RESOLVED = "room.report_resolved"
RATE_LIMITED = "room.rate_limited"
MINUTE = 60
# At most this many participants are counted per minute in one process; beyond it, refusals still
# happen but go uncounted (a flood must not grow memory without bound).
TRIPS_MAX = 50_000


def report_resolved(
    room_id: str,
    target_seq: int,
    resolution: str,
    *,
    host: str,
    host_participant: str,
    closed: int,
    key: str,
) -> identity_pb2.NewAuditEvent:
    return audit_event(
        REPORT_RESOLVED,
        idempotency_key=f"{REPORT_RESOLVED}:{key}",
        actor=host,
        target=f"message:{target_seq}",
        room_id=room_id,
        details={
            "resolution": resolution,
            "target_seq": target_seq,
            "reports_closed": closed,
            "host_participant_id": host_participant,
        },
    )


class RateLimitTrips:
    """Counts refused sends per (room, participant, minute) and records each finished minute once."""

    def __init__(self, sender: AuditSender, *, clock: Callable[[], float] = time.time) -> None:
        self._sender = sender
        self._clock = clock
        self._counts: dict[tuple[str, str, int], int] = {}
        # Keeps keys of different processes apart: each records its own counts.
        self._process = uuid.uuid4().hex[:12]

    def trip(self, room_id: str, participant_id: str) -> None:
        key = (room_id, participant_id, int(self._clock()) // MINUTE)
        if key not in self._counts and len(self._counts) >= TRIPS_MAX:
            return
        self._counts[key] = self._counts.get(key, 0) + 1

    def flush(self, *, everything: bool = False) -> None:
        """Record every minute that is over (or, at shutdown, every minute counted)."""
        current = int(self._clock()) // MINUTE
        for key in [k for k in self._counts if everything or k[2] < current]:
            room_id, participant_id, minute = key
            count = self._counts.pop(key)
            self._sender.emit(
                audit_event(
                    RATE_LIMITED,
                    idempotency_key=f"{RATE_LIMITED}:{room_id}:{participant_id}:{minute}:{self._process}",
                    actor=participant_id,
                    room_id=room_id,
                    details={"refused": count, "minute_start": minute * MINUTE},
                )
            )

    async def run(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.flush()

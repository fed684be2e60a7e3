"""The security events messaging records in identity's audit log (chatpop_common.audit_events).

- `room.report_resolved`: the host restored, deleted or dismissed a reported message. Written into
  the outbox in the transaction that closes the reports (`on_resolved`).
- `room.rate_limited`: a participant's sends were refused by the rate limit; counted per participant,
  room and minute, and written into the outbox once that minute is over, with the count (never one
  per refusal). Each process counts what it refused, so a participant whose sends reach two
  processes in one minute may appear once per process. Counts not yet written when a process dies
  are lost with it; a minute whose write fails is written with the next flush.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import asyncpg

from chatpop.identity.v1 import identity_pb2
from chatpop_common import audit_events
from chatpop_common.audit_events import AuditLog, audit_event
from chatpop_messaging.reports import OnResolved

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


def on_resolved(
    room_id: str, target_seq: int, resolution: str, *, host: str, host_participant: str
) -> OnResolved:
    """Records `room.report_resolved` in the transaction that closes the message's reports."""
    key = uuid.uuid4().hex

    async def record(conn: asyncpg.Connection, closed: int) -> None:
        event = report_resolved(
            room_id,
            target_seq,
            resolution,
            host=host,
            host_participant=host_participant,
            closed=closed,
            key=key,
        )
        await audit_events.add(conn, event)

    return record


class RateLimitTrips:
    """Counts refused sends per (room, participant, minute) and records each finished minute once."""

    def __init__(self, audit_log: AuditLog, *, clock: Callable[[], float] = time.time) -> None:
        self._audit_log = audit_log
        self._clock = clock
        self._counts: dict[tuple[str, str, int], int] = {}
        # Keeps keys of different processes apart: each records its own counts.
        self._process = uuid.uuid4().hex[:12]

    def trip(self, room_id: str, participant_id: str) -> None:
        key = (room_id, participant_id, int(self._clock()) // MINUTE)
        if key not in self._counts and len(self._counts) >= TRIPS_MAX:
            return
        self._counts[key] = self._counts.get(key, 0) + 1

    async def flush(self, *, everything: bool = False) -> None:
        """Record every minute that is over (or, at shutdown, every minute counted) in one transaction;
        when that fails the counts stay for the next flush."""
        current = int(self._clock()) // MINUTE
        keys = [key for key in self._counts if everything or key[2] < current]
        if not keys:
            return
        await self._audit_log.record(*(self._event(key, self._counts[key]) for key in keys))
        for key in keys:
            self._counts.pop(key, None)

    def _event(self, key: tuple[str, str, int], count: int) -> identity_pb2.NewAuditEvent:
        room_id, participant_id, minute = key
        return audit_event(
            RATE_LIMITED,
            idempotency_key=f"{RATE_LIMITED}:{room_id}:{participant_id}:{minute}:{self._process}",
            actor=participant_id,
            room_id=room_id,
            details={"refused": count, "minute_start": minute * MINUTE},
        )

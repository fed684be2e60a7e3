"""Sending a service's security events to identity's audit log (RecordAuditEvents).

Events are handed over after the change they describe has been committed, and delivered in the
background: a bounded in-memory queue, sent in batches with this service's credential and retried
with backoff while identity is unreachable. Every event carries an idempotency key, so a batch that
reached identity but whose answer was lost is not recorded twice. The queue lives in the process:
events still waiting when it stops, or beyond `capacity` during a long outage, are dropped, and each
drop is logged and counted (`chatpop_audit_events_dropped_total`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

import grpc
from prometheus_client import Counter

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop_common.backoff import Backoff
from chatpop_common.service_auth import ServiceCredentials

log = logging.getLogger(__name__)

BATCH_MAX = 100
SEND_TIMEOUT = 5.0

SENT = Counter("chatpop_audit_events_sent_total", "Audit events delivered to identity.")
DROPPED = Counter(
    "chatpop_audit_events_dropped_total",
    "Audit events given up on (queue full, refused by identity, or still queued at shutdown).",
)


def audit_event(
    kind: str,
    *,
    idempotency_key: str,
    actor: str = "",
    target: str = "",
    room_id: str = "",
    ip_hash: str = "",
    details: Mapping[str, Any] | None = None,
) -> identity_pb2.NewAuditEvent:
    return identity_pb2.NewAuditEvent(
        kind=kind,
        actor=actor,
        target=target,
        room_id=room_id,
        ip_hash=ip_hash,
        details_json=json.dumps(dict(details or {}), separators=(",", ":")),
        idempotency_key=idempotency_key,
    )


# Refusals that retrying cannot mend: the batch is dropped (and logged) instead of blocking the rest.
_PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
}


class AuditSender:
    def __init__(
        self,
        identity: identity_pb2_grpc.IdentityServiceStub,
        credentials: ServiceCredentials,
        *,
        capacity: int = 10_000,
        backoff: Backoff | None = None,
    ) -> None:
        self._identity = identity
        self._credentials = credentials
        self._queue: deque[identity_pb2.NewAuditEvent] = deque()
        self._capacity = capacity
        self._backoff = backoff or Backoff(first=0.5, limit=30.0)
        self._wake = asyncio.Event()

    def emit(self, event: identity_pb2.NewAuditEvent) -> None:
        """Queue one event for delivery; never blocks and never fails the caller."""
        if len(self._queue) >= self._capacity:
            dropped = self._queue.popleft()
            DROPPED.inc()
            log.error("audit queue full: dropped an event", extra={"kind": dropped.kind})
        self._queue.append(event)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def _send_batch(self) -> None:
        batch = [self._queue[i] for i in range(min(BATCH_MAX, len(self._queue)))]
        metadata = await self._credentials.metadata()
        try:
            await self._identity.RecordAuditEvents(
                identity_pb2.RecordAuditEventsRequest(events=batch), metadata=metadata, timeout=SEND_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _PERMANENT:
                raise
            DROPPED.inc(len(batch))
            log.error(
                "identity refused audit events: %s",
                exc.code().name,
                extra={"kinds": sorted({event.kind for event in batch})},
            )
        else:
            SENT.inc(len(batch))
        for _ in batch:
            self._queue.popleft()

    async def run(self) -> None:
        """Deliver queued events until cancelled; on failure wait (backoff) and try again."""
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._send_batch()
                self._backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self._backoff.next()
                reason = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
                log.warning(
                    "could not deliver %d audit events, retrying in %.1fs: %s",
                    len(self._queue),
                    delay,
                    reason,
                )
                await asyncio.sleep(delay)

    async def flush(self, grace: float) -> None:
        """On shutdown: one last attempt within `grace` seconds; whatever is left is logged as lost."""
        deadline = time.monotonic() + grace
        while self._queue and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self._send_batch(), max(0.1, deadline - time.monotonic()))
            except Exception:
                break
        if self._queue:
            DROPPED.inc(len(self._queue))
            log.error("%d audit events were not delivered before shutdown", len(self._queue))
            self._queue.clear()


def new_key(kind: str, *parts: object) -> str:
    """An idempotency key naming the event (`kind:part:part`), or a random one without parts."""
    if not parts:
        return f"{kind}:{uuid.uuid4().hex}"
    return ":".join([kind, *(str(part) for part in parts)])[:128]

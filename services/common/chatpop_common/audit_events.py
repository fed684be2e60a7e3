"""A service's security events for identity's audit log, through its transactional outbox.

An event is written into the service's `outbox` table (topic `audit.record`) in the transaction of
the change it describes (`add`), or on its own when that change is not in Postgres (`AuditLog`,
e.g. counters kept in Redis). The service's outbox relay hands the events to identity's
RecordAuditEvents with the service's credential (`AuditDelivery`); while identity is unreachable
they wait in the table and are retried with backoff, so an event is recorded exactly when its change
was committed, even across crashes and restarts. Every event carries an idempotency key, so a batch
that reached identity but whose answer was lost is not recorded twice. A batch identity refuses as
malformed goes dead in the outbox (logged, counted, kept); see chatpop_common.outbox.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import grpc
from google.protobuf.message import DecodeError

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop_common import outbox
from chatpop_common.service_auth import ServiceCredentials

TOPIC = "audit.record"
# identity's RecordAuditEvents takes at most this many events per call.
BATCH_MAX = 100
SEND_TIMEOUT = 5.0

# Refusals that retrying cannot mend: the event itself is not acceptable. A missing or refused
# credential (UNAUTHENTICATED, PERMISSION_DENIED) is a deployment to mend, not a reason to give up
# on events, so those are retried like an unreachable identity.
_PERMANENT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}


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


async def add(conn: asyncpg.Connection, event: identity_pb2.NewAuditEvent) -> bool:
    """Write `event` into the outbox in the caller's transaction; False when its key is there already."""
    return await outbox.add(conn, TOPIC, event.SerializeToString(), event.idempotency_key)


class IdentityUnavailable(Exception):
    """identity did not take the events this time; the outbox tries again later."""


class AuditLog:
    """Records events of changes made outside this service's Postgres, each call in a transaction of
    its own (all of its events or none)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, *events: identity_pb2.NewAuditEvent) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            for event in events:
                await add(conn, event)


class AuditDelivery:
    """The outbox handler of `TOPIC`: the events, in order, to identity's RecordAuditEvents."""

    def __init__(
        self, identity: identity_pb2_grpc.IdentityServiceStub, credentials: ServiceCredentials
    ) -> None:
        self._identity = identity
        self._credentials = credentials

    async def __call__(self, messages: Sequence[outbox.Message]) -> None:
        try:
            events = [identity_pb2.NewAuditEvent.FromString(message.payload) for message in messages]
        except DecodeError as exc:
            raise outbox.PermanentFailure("an audit event in the outbox cannot be read") from exc
        for start in range(0, len(events), BATCH_MAX):
            try:
                metadata = await self._credentials.metadata()
            except grpc.aio.AioRpcError as exc:
                raise IdentityUnavailable(f"no service token: {exc.code().name}") from exc
            try:
                await self._identity.RecordAuditEvents(
                    identity_pb2.RecordAuditEventsRequest(events=events[start : start + BATCH_MAX]),
                    metadata=metadata,
                    timeout=SEND_TIMEOUT,
                )
            except grpc.aio.AioRpcError as exc:
                reason = f"RecordAuditEvents: {exc.code().name} {exc.details() or ''}".strip()
                if exc.code() in _PERMANENT:
                    raise outbox.PermanentFailure(reason) from exc
                raise IdentityUnavailable(reason) from exc


def deliver_to_identity(
    relay: outbox.Relay, identity: identity_pb2_grpc.IdentityServiceStub, credentials: ServiceCredentials
) -> None:
    """Make `relay` deliver this service's audit events."""
    relay.register(TOPIC, AuditDelivery(identity, credentials))

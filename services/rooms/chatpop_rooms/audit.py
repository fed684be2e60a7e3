"""The security events rooms records in identity's audit log (chatpop_common.audit_events).

- `room.ban_created` / `room.ban_lifted`: a host bans a participant or lifts a ban; the actor is the
  host's identity, the target the banned participant, with the tier, reason and network hash.
  Written into the outbox in the transaction of the ban or its lifting (`on_banned`, `on_lifted`).
- `room.access_code_lockout`: wrong access codes used up a client's (or the whole room's) attempts;
  one event per lockout, never one per attempt. The attempts are counted in Redis, so the event is
  written into the outbox on its own, when the lockout begins.
"""

from __future__ import annotations

import asyncpg

from chatpop.identity.v1 import identity_pb2
from chatpop_common import audit_events
from chatpop_common.audit_events import audit_event
from chatpop_rooms.bans import BanOutcome, BanRow, OnBanned, OnLifted

BAN_CREATED = "room.ban_created"
BAN_LIFTED = "room.ban_lifted"
ACCESS_CODE_LOCKOUT = "room.access_code_lockout"


def ban_created(outcome: BanOutcome, host: str, host_participant: str) -> identity_pb2.NewAuditEvent:
    ban = outcome.ban
    return audit_event(
        BAN_CREATED,
        idempotency_key=f"{BAN_CREATED}:{ban.id}",
        actor=host,
        target=ban.participant_id,
        room_id=ban.room_id,
        ip_hash=outcome.client_ip_hash,
        details={
            "ban_id": ban.id,
            "tier": ban.tier,
            "reason": ban.reason,
            "subject": outcome.participant.subject,
            **({"host_participant_id": host_participant} if host_participant else {}),
        },
    )


def ban_lifted(ban: BanRow, host: str, host_participant: str) -> identity_pb2.NewAuditEvent:
    return audit_event(
        BAN_LIFTED,
        idempotency_key=f"{BAN_LIFTED}:{ban.id}",
        actor=host,
        target=ban.participant_id,
        room_id=ban.room_id,
        details={
            "ban_id": ban.id,
            "tier": ban.tier,
            **({"host_participant_id": host_participant} if host_participant else {}),
        },
    )


def access_code_lockout(
    room_id: str, subject: str, client_ip_hash: str, *, whole_room: bool, window_seconds: int, key: str
) -> identity_pb2.NewAuditEvent:
    return audit_event(
        ACCESS_CODE_LOCKOUT,
        idempotency_key=f"{ACCESS_CODE_LOCKOUT}:{key}",
        actor=subject,
        room_id=room_id,
        ip_hash=client_ip_hash,
        details={"scope": "room" if whole_room else "client", "window_seconds": window_seconds},
    )


def on_banned(host: str, host_participant: str) -> OnBanned:
    """Records `room.ban_created` in the transaction that creates the ban."""

    async def record(conn: asyncpg.Connection, outcome: BanOutcome) -> None:
        await audit_events.add(conn, ban_created(outcome, host, host_participant))

    return record


def on_lifted(host: str, host_participant: str) -> OnLifted:
    """Records `room.ban_lifted` in the transaction that lifts the ban."""

    async def record(conn: asyncpg.Connection, ban: BanRow) -> None:
        await audit_events.add(conn, ban_lifted(ban, host, host_participant))

    return record

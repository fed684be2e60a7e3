"""Bodies of the admin REST resources (`/api/v1/admin/*`) and their proto conversions."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from chatpop.identity.v1 import identity_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_edge.models import (
    MAX_SEQ,
    ROOM_CODE_MAX_LENGTH,
    ROOM_CODE_PATTERN,
    RequestBody,
    Room,
    timestamp,
)

# As identity checks them (chatpop_identity.audit): the contract states the same bounds.
AUDIT_KIND_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
AUDIT_KIND_MAX_LENGTH = 64
AUDIT_TEXT_MAX_LENGTH = 128
AUDIT_PAGE_MAX = 200
AUDIT_PAGE_DEFAULT = 50
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# Audit event ids, like seqs, stay within what JavaScript holds exactly.
AUDIT_ID_MAX = MAX_SEQ


class AuditEvent(BaseModel):
    id: int = Field(description="Grows with every event recorded; `before` takes it.")
    at: datetime | None = Field(description="When the event was recorded.")
    kind: str = Field(
        description="What happened, namespaced by the service that saw it, e.g. `identity.login_succeeded`."
    )
    actor: str | None = Field(
        description="Who did it: an identity or participant id, `cli` for the admin command line; "
        "null when unknown (a failed login)."
    )
    target: str | None = Field(description="Whom or what it was done to, e.g. an identity id.")
    room_id: str | None = Field(description="The room it happened in, if any.")
    ip_hash: str | None = Field(description="Keyed hash of the client's IP, if known; never the IP.")
    details: dict[str, Any] = Field(description="The kind's details, e.g. `failures` for failed logins.")

    @classmethod
    def from_proto(cls, event: identity_pb2.AuditEvent) -> AuditEvent:
        details = json.loads(event.details_json) if event.details_json else {}
        return cls(
            id=event.id,
            at=timestamp(event.at),
            kind=event.kind,
            actor=event.actor or None,
            target=event.target or None,
            room_id=event.room_id or None,
            ip_hash=event.ip_hash or None,
            details=details if isinstance(details, dict) else {},
        )


class AuditPage(BaseModel):
    events: list[AuditEvent] = Field(description="Newest first.")
    next_before: int | None = Field(
        description="Pass as `before` for the next (older) page; null when this page is the last."
    )


# --- takedowns --------------------------------------------------------------------------------------

TAKEDOWN_REASON_MAX_LENGTH = 500
TAKEDOWN_LIST_MAX = 200
TAKEDOWN_LIST_DEFAULT = 50


class TakedownRequest(RequestBody):
    reason: str = Field(
        min_length=1,
        max_length=TAKEDOWN_REASON_MAX_LENGTH,
        description="Why, for the record (the audit log and the list of rooms taken down).",
    )


class TakenDownRoom(BaseModel):
    room: Room = Field(description="The room as it is now: `closed` and `taken_down`.")
    reason: str
    taken_down_by: str = Field(description="Identity id of the admin who took it down.")
    taken_down_at: datetime | None
    changed: bool = Field(
        default=True, description="False when the room was already taken down (nothing changed)."
    )

    @classmethod
    def from_proto(
        cls, taken: rooms_pb2.TakenDownRoom, public_url: str, *, changed: bool = True
    ) -> TakenDownRoom:
        return cls(
            room=Room.from_proto(taken.room, public_url),
            reason=taken.reason,
            taken_down_by=taken.taken_down_by,
            taken_down_at=timestamp(taken.taken_down_at),
            changed=changed,
        )


class TakenDownRooms(BaseModel):
    rooms: list[TakenDownRoom] = Field(description="Most recently taken down first.")


# --- site-wide bans ---------------------------------------------------------------------------------

SITE_BAN_REASON_MAX_LENGTH = 500
SITE_BAN_LIST_MAX = 200
SITE_BAN_LIST_DEFAULT = 100
IP_HASH_PATTERN = r"^[0-9a-f]{64}$"
# Long enough for any IPv6 text form.
IP_MAX_LENGTH = 45


class SiteBanRequest(RequestBody):
    """Exactly one of: `identity_id`; `room_code` with `participant_id` (the identity behind that
    participant); `ip` (hashed by the edge at once, never stored); `ip_hash`."""

    identity_id: str | None = Field(
        default=None, max_length=36, pattern=UUID_PATTERN, description="An anonymous session or account."
    )
    room_code: str | None = Field(
        default=None,
        min_length=1,
        max_length=ROOM_CODE_MAX_LENGTH,
        pattern=ROOM_CODE_PATTERN,
        description="With `participant_id`: ban whoever that participant of this room is.",
    )
    participant_id: str | None = Field(default=None, max_length=36, pattern=UUID_PATTERN)
    ip: str | None = Field(
        default=None, min_length=2, max_length=IP_MAX_LENGTH, description="A client IP address (v4 or v6)."
    )
    ip_hash: str | None = Field(
        default=None,
        min_length=64,
        max_length=64,
        pattern=IP_HASH_PATTERN,
        description="A network's keyed hash, as the audit log shows it.",
    )
    reason: str = Field(
        min_length=1, max_length=SITE_BAN_REASON_MAX_LENGTH, description="Why, for the record."
    )


class SiteBan(BaseModel):
    id: str
    identity_id: str | None = Field(description="The banned identity, for an identity ban.")
    ip_hash: str | None = Field(description="The banned network's keyed hash, for a network ban.")
    reason: str
    banned_by: str = Field(description="Identity id of the admin who banned.")
    created_at: datetime | None
    lifted_at: datetime | None = Field(description="Set once lifted.")
    changed: bool = Field(default=True, description="False when nothing changed (already banned or lifted).")

    @classmethod
    def from_proto(cls, ban: identity_pb2.SiteBan, *, changed: bool = True) -> SiteBan:
        return cls(
            id=ban.id,
            identity_id=ban.identity_id or None,
            ip_hash=ban.client_ip_hash or None,
            reason=ban.reason,
            banned_by=ban.banned_by,
            created_at=timestamp(ban.created_at),
            lifted_at=timestamp(ban.lifted_at) if ban.HasField("lifted_at") else None,
            changed=changed,
        )


class SiteBans(BaseModel):
    bans: list[SiteBan] = Field(description="Bans in force, newest first.")


# --- stats --------------------------------------------------------------------------------------------


class RoomCounts(BaseModel):
    total: int
    open: int = Field(description="Not closed (rooms taken down are closed).")
    created_today: int = Field(description="Created since midnight UTC.")


class DayCount(BaseModel):
    day: str = Field(description="A UTC day, YYYY-MM-DD.")
    messages: int


class Stats(BaseModel):
    rooms: RoomCounts
    open_sockets: int = Field(
        description="WebSockets open on the edge process that answered (each edge counts its own)."
    )
    messages_per_day: list[DayCount] = Field(description="The last 7 UTC days, oldest first, today last.")
    open_reports: int = Field(description="Reports of messages not resolved yet.")
    audit_events_today: int = Field(description="Audit events recorded since midnight UTC.")

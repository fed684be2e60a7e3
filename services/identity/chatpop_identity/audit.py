"""The audit log: security events in an append-only table that only ever grows.

The database refuses UPDATE, DELETE and TRUNCATE on `audit_events` (a trigger), so an event, once
recorded, stays as it was. Events carry ids and keyed hashes only (never an email or an IP), so
they can outlive the accounts they name. identity records its own events (`identity.*`), in the
same transaction as the change they describe where there is one; other services append theirs
through RecordAuditEvents. Chat messages are never events.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from chatpop_common.errors import InvalidArgument

# identity's own kinds.
LOGIN_SUCCEEDED = "identity.login_succeeded"
LOGIN_FAILED = "identity.login_failed"
REFRESH_TOKEN_REUSED = "identity.refresh_token_reused"
PASSWORD_RESET_REQUESTED = "identity.password_reset_requested"
PASSWORD_RESET_COMPLETED = "identity.password_reset_completed"
PASSWORD_CHANGED = "identity.password_changed"
ADMIN_GRANTED = "identity.admin_granted"
ADMIN_REVOKED = "identity.admin_revoked"
IDENTITY_PREFIX = "identity."
# The actor of what the admin command line does.
CLI_ACTOR = "cli"

KIND_MAX_LENGTH = 64
KIND_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
TEXT_MAX_LENGTH = 128
DETAILS_MAX_BYTES = 4096
BATCH_MAX = 100
PAGE_MAX = 200
PAGE_DEFAULT = 50
_KIND = re.compile(KIND_PATTERN)

_COLUMNS = "id, at, kind, actor, target, room_id, ip_hash, details"
_INSERT = (
    "INSERT INTO audit_events (kind, actor, target, room_id, ip_hash, details, idempotency_key)"
    " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)"
)


@dataclass(frozen=True)
class NewEvent:
    kind: str
    actor: str | None = None
    target: str | None = None
    room_id: uuid.UUID | None = None
    ip_hash: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime
    kind: str
    actor: str | None
    target: str | None
    room_id: uuid.UUID | None
    ip_hash: str | None
    details: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "actor": self.actor,
            "target": self.target,
            "room_id": str(self.room_id) if self.room_id else None,
            "ip_hash": self.ip_hash,
            "details": self.details,
        }


@dataclass(frozen=True)
class Filters:
    """All that are set must match."""

    kind: str | None = None
    actor: str | None = None
    target: str | None = None
    room_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Page:
    events: list[Event]
    # The cursor for the next page, or None when this one is the last.
    next_before: int | None


def _event(row: asyncpg.Record) -> Event:
    return Event(
        id=row["id"],
        at=row["at"],
        kind=row["kind"],
        actor=row["actor"],
        target=row["target"],
        room_id=row["room_id"],
        ip_hash=row["ip_hash"],
        details=json.loads(row["details"]),
    )


async def record(conn: asyncpg.Connection, event: NewEvent) -> bool:
    """Append one event on `conn` (inside the caller's transaction, if any); False when its
    idempotency key was recorded before."""
    status = await conn.execute(
        _INSERT + " ON CONFLICT (idempotency_key) DO NOTHING",
        event.kind,
        event.actor or None,
        event.target or None,
        event.room_id,
        event.ip_hash or None,
        json.dumps(event.details, separators=(",", ":")),
        event.idempotency_key or None,
    )
    return bool(status.endswith(" 1"))


class AuditLog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record_batch(self, events: Sequence[NewEvent]) -> int:
        """All or none, in order; returns how many were new (not seen before by idempotency key)."""
        recorded = 0
        async with self._pool.acquire() as conn, conn.transaction():
            for event in events:
                recorded += await record(conn, event)
        return recorded

    async def page(self, filters: Filters, *, before: int | None = None, limit: int = PAGE_DEFAULT) -> Page:
        """Newest first, `limit` at a time; `before` is the previous page's `next_before`."""
        conditions: list[str] = []
        values: list[Any] = []
        bounds: list[tuple[str, Any]] = [
            ("kind =", filters.kind),
            ("actor =", filters.actor),
            ("target =", filters.target),
            ("room_id =", filters.room_id),
            ("at >=", filters.since),
            ("at <", filters.until),
            ("id <", before),
        ]
        for condition, value in bounds:
            if value is not None:
                values.append(value)
                conditions.append(f"{condition} ${len(values)}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        values.append(limit + 1)
        # Column names and operators come from the fixed lists above; every value is a bind parameter.
        query = f"SELECT {_COLUMNS} FROM audit_events {where} ORDER BY id DESC LIMIT ${len(values)}"  # noqa: S608
        rows = await self._pool.fetch(query, *values)
        events = [_event(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(events=events, next_before=events[-1].id if more and events else None)

    async def count_today(self) -> int:
        """Events recorded since midnight UTC."""
        found = await self._pool.fetchval(
            "SELECT count(*) FROM audit_events WHERE at >= date_trunc('day', now() AT TIME ZONE 'UTC')"
            " AT TIME ZONE 'UTC'"
        )
        return int(found or 0)


# --- what callers may ask for and append -------------------------------------------------------


def check_text(value: str, name: str) -> str | None:
    """Trimmed, or None when empty; InvalidArgument past TEXT_MAX_LENGTH."""
    text = value.strip()
    if len(text) > TEXT_MAX_LENGTH:
        raise InvalidArgument(
            f"{name} must be at most {TEXT_MAX_LENGTH} characters.", code="invalid_argument"
        )
    if "\x00" in text:
        # Postgres text holds no NUL character: refused here rather than failing in the query.
        raise InvalidArgument(f"{name} cannot hold a NUL character.", code="invalid_argument")
    return text or None


def check_kind(value: str) -> str | None:
    kind = value.strip()
    if not kind:
        return None
    if len(kind) > KIND_MAX_LENGTH or not _KIND.fullmatch(kind):
        raise InvalidArgument(
            "kind must be lower-case words joined by dots, like `rooms.participant_banned`"
            f" (at most {KIND_MAX_LENGTH} characters).",
            code="invalid_argument",
        )
    return kind


def check_room_id(value: str) -> uuid.UUID | None:
    text = value.strip()
    if not text:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidArgument("room_id must be a UUID.", code="invalid_argument") from None


def check_page_size(value: int) -> int:
    if value == 0:
        return PAGE_DEFAULT
    if not 1 <= value <= PAGE_MAX:
        raise InvalidArgument(f"page_size must be 1 to {PAGE_MAX}.", code="invalid_argument")
    return value


def check_details(raw: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    if len(raw.encode("utf-8")) > DETAILS_MAX_BYTES:
        raise InvalidArgument(
            f"details_json must be at most {DETAILS_MAX_BYTES} bytes.", code="invalid_argument"
        )
    try:
        details = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidArgument("details_json must be a JSON object.", code="invalid_argument") from None
    if not isinstance(details, dict):
        raise InvalidArgument("details_json must be a JSON object.", code="invalid_argument")
    # Postgres jsonb holds no NUL character either.
    if "\\u0000" in raw:
        raise InvalidArgument("details_json cannot hold a NUL character.", code="invalid_argument")
    return details


def check_new_event(
    *,
    kind: str,
    actor: str,
    target: str,
    room_id: str,
    ip_hash: str,
    details_json: str,
    idempotency_key: str,
) -> NewEvent:
    """An event another service appends; its kind may not be one of identity's own."""
    checked = check_kind(kind)
    if checked is None:
        raise InvalidArgument("Every event needs a kind.", code="invalid_argument")
    if checked.startswith(IDENTITY_PREFIX):
        raise InvalidArgument(
            f"Kinds under `{IDENTITY_PREFIX}` are recorded by identity itself.", code="invalid_argument"
        )
    return NewEvent(
        kind=checked,
        actor=check_text(actor, "actor"),
        target=check_text(target, "target"),
        room_id=check_room_id(room_id),
        ip_hash=check_text(ip_hash, "ip_hash"),
        details=check_details(details_json),
        idempotency_key=check_text(idempotency_key, "idempotency_key"),
    )

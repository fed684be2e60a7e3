"""Bans: the host removes a participant from their room, and keeps them (or their network) out.

A ban takes effect at once: the participant is marked banned and its token version goes up in the
same transaction, so every room token it holds stops working wherever room tokens are checked, and
JoinRoom refuses it. How far a ban reaches on a new join is its tier:
- `session`: the banned identity (anonymous session or account), under any name;
- `device`: that identity, and any new anonymous session from the network it joined from (a device
  that throws its session away and starts a new one is still that device on that network);
- `ip`: that identity, and anyone, anonymous or signed in, joining from that network.
Networks are known only as the keyed hash of the client IP the edge makes; the room's host is never
refused by a ban in their own room.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.errors import FailedPrecondition, InvalidArgument, NotFound
from chatpop_rooms.back_rooms import lift_for_unban, take_seat_for_ban
from chatpop_rooms.store import ParticipantRow, parse_uuid

REASON_MAX = 500
LIST_DEFAULT = 100
LIST_MAX = 200
ANONYMOUS = "anonymous"

SESSION, DEVICE, IP = "session", "device", "ip"
TIERS: dict[int, str] = {
    rooms_pb2.BAN_TIER_SESSION: SESSION,
    rooms_pb2.BAN_TIER_DEVICE: DEVICE,
    rooms_pb2.BAN_TIER_IP: IP,
}
_TIER_VALUES = {name: value for value, name in TIERS.items()}

_BAN_COLUMNS = (
    "b.id, b.room_id, b.participant_id, p.username, b.tier, b.reason, b.banned_by, b.created_at, b.lifted_at"
)
_SELECT_BAN = f"SELECT {_BAN_COLUMNS} FROM bans b JOIN participants p ON p.id = b.participant_id"  # noqa: S608
_INSERT_BAN = """
    INSERT INTO bans (id, room_id, participant_id, subject, client_ip_hash, tier, reason, banned_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_BAN_PARTICIPANT = """
    UPDATE participants SET banned = true, version = version + 1 WHERE room_id = $1 AND id = $2
"""
# Bans in force that refuse this join: the identity itself under any tier; its network for an `ip`
# ban, and for a `device` ban when the joiner is anonymous.
_REFUSING = """
    SELECT tier FROM bans
    WHERE room_id = $1 AND lifted_at IS NULL
      AND (subject = $2
           OR (client_ip_hash = $3 AND (tier = 'ip' OR (tier = 'device' AND $4))))
    LIMIT 1
"""
_PARTICIPANT_FOR_BAN = """
    SELECT id, subject, username, is_host, client_ip_hash FROM participants
    WHERE room_id = $1 AND id = $2 FOR UPDATE
"""


@dataclass(frozen=True, slots=True)
class BanRow:
    id: str
    room_id: str
    participant_id: str
    username: str
    tier: str
    reason: str
    banned_by: str
    created_at: datetime
    lifted_at: datetime | None

    @classmethod
    def from_record(cls, record: asyncpg.Record | dict[str, Any]) -> BanRow:
        values = dict(record)
        for key in ("id", "room_id", "participant_id"):
            values[key] = str(values[key])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class BanOutcome:
    ban: BanRow
    participant: ParticipantRow
    created: bool
    # The keyed hash of the banned participant's network, when known.
    client_ip_hash: str = ""
    # The ban took their Back Room seat: the Back Room and their participant there, to disconnect.
    back_room_id: str = ""
    back_room_participant_id: str = ""


def validate_tier(value: int) -> str:
    tier = TIERS.get(value)
    if tier is None:
        raise InvalidArgument("Choose how far the ban reaches: session, device or ip.", code="invalid_tier")
    return tier


def validate_reason(raw: str) -> str:
    reason = raw.strip()
    if len(reason) > REASON_MAX:
        raise InvalidArgument(f"A reason has at most {REASON_MAX} characters.", code="invalid_reason")
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in reason):
        raise InvalidArgument("A reason cannot contain control characters.", code="invalid_reason")
    return reason


def validate_limit(limit: int) -> int:
    if limit < 0 or limit > LIST_MAX:
        raise InvalidArgument(f"Ask for 1 to {LIST_MAX} bans.", code="invalid_limit")
    return limit or LIST_DEFAULT


def ban_message(row: BanRow) -> rooms_pb2.Ban:
    created = Timestamp()
    created.FromDatetime(row.created_at)
    return rooms_pb2.Ban(
        id=row.id,
        room_id=row.room_id,
        participant_id=row.participant_id,
        username=row.username,
        tier=_TIER_VALUES[row.tier],  # type: ignore[arg-type]
        reason=row.reason,
        banned_by=row.banned_by,
        created_at=created,
    )


# Called inside the transaction of a ban that was created or lifted, with its connection: what must be
# recorded with the change (its audit event) commits with it or not at all.
OnBanned = Callable[[asyncpg.Connection, "BanOutcome"], Awaitable[None]]
OnLifted = Callable[[asyncpg.Connection, BanRow], Awaitable[None]]


def _no_participant() -> NotFound:
    return NotFound("There is no such participant in this room.", code="participant_not_found")


class BanStore:
    """SQL for bans; the participant's banned flag and version change in the same transactions."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ban(
        self,
        *,
        room_id: str,
        host_id: str,
        participant_id: str,
        tier: str,
        reason: str,
        banned_by: str,
        on_banned: OnBanned | None = None,
    ) -> BanOutcome:
        room_key, participant_key = parse_uuid(room_id), parse_uuid(participant_id)
        if room_key is None or participant_key is None:
            raise _no_participant()
        async with self._pool.acquire() as conn, conn.transaction():
            # Locked, so two bans of one participant take turns and the second finds the first.
            target = await conn.fetchrow(_PARTICIPANT_FOR_BAN, room_key, participant_key)
            if target is None:
                raise _no_participant()
            if target["is_host"] or target["subject"] == host_id:
                raise FailedPrecondition(
                    "The host cannot be banned from their own room.", code="cannot_ban_host"
                )
            existing = await conn.fetchrow(
                _SELECT_BAN + " WHERE b.room_id = $1 AND b.participant_id = $2 AND b.lifted_at IS NULL",
                room_key,
                participant_key,
            )
            created = existing is None
            if existing is None:
                ip_hash = target["client_ip_hash"]
                if tier == IP and not ip_hash:
                    raise FailedPrecondition(
                        "This participant's network is not known, so it cannot be banned; ban the session.",
                        code="network_unknown",
                    )
                ban_id = uuid.uuid4()
                await conn.execute(
                    _INSERT_BAN,
                    ban_id,
                    room_key,
                    participant_key,
                    target["subject"],
                    ip_hash,
                    tier,
                    reason,
                    banned_by,
                )
                await conn.execute(_BAN_PARTICIPANT, room_key, participant_key)
                existing = await conn.fetchrow(_SELECT_BAN + " WHERE b.id = $1", ban_id)
            # A holder's seat goes with the ban (no refund), and their Back Room tokens with it.
            back_room_id, back_participant_id = await take_seat_for_ban(
                conn, room_key, participant_key, target["subject"]
            )
            participant = await conn.fetchrow(
                "SELECT id, room_id, subject, username, is_host, version, banned, verified, joined_at"
                " FROM participants WHERE room_id = $1 AND id = $2",
                room_key,
                participant_key,
            )
            assert existing is not None and participant is not None
            outcome = BanOutcome(
                BanRow.from_record(existing),
                ParticipantRow.from_record(participant),
                created,
                client_ip_hash=target["client_ip_hash"] or "",
                back_room_id=back_room_id,
                back_room_participant_id=back_participant_id,
            )
            if created and on_banned is not None:
                await on_banned(conn, outcome)
        return outcome

    async def lift(
        self, *, room_id: str, ban_id: str, lifted_by: str, on_lifted: OnLifted | None = None
    ) -> tuple[BanRow, bool]:
        """Lift a ban for future joins; (the ban, whether this call lifted it)."""
        room_key, ban_key = parse_uuid(room_id), parse_uuid(ban_id)
        if room_key is None or ban_key is None:
            raise NotFound("There is no such ban in this room.", code="ban_not_found")
        async with self._pool.acquire() as conn, conn.transaction():
            lifted = await conn.fetchrow(
                "UPDATE bans SET lifted_at = now(), lifted_by = $3"
                " WHERE room_id = $1 AND id = $2 AND lifted_at IS NULL RETURNING participant_id",
                room_key,
                ban_key,
                lifted_by,
            )
            if lifted is not None:
                # The version stays up: tokens the ban revoked stay revoked; a new join gets a new one.
                await conn.execute(
                    "UPDATE participants SET banned = false WHERE room_id = $1 AND id = $2",
                    room_key,
                    lifted["participant_id"],
                )
                await lift_for_unban(conn, room_key, lifted["participant_id"])
            record = await conn.fetchrow(
                _SELECT_BAN + " WHERE b.room_id = $1 AND b.id = $2", room_key, ban_key
            )
            if record is None:
                raise NotFound("There is no such ban in this room.", code="ban_not_found")
            ban = BanRow.from_record(record)
            if lifted is not None and on_lifted is not None:
                await on_lifted(conn, ban)
        return ban, lifted is not None

    async def in_force(self, room_id: str, limit: int) -> list[BanRow]:
        room_key = parse_uuid(room_id)
        if room_key is None:
            return []
        records = await self._pool.fetch(
            _SELECT_BAN
            + " WHERE b.room_id = $1 AND b.lifted_at IS NULL ORDER BY b.created_at DESC, b.id LIMIT $2",
            room_key,
            limit,
        )
        return [BanRow.from_record(record) for record in records]

    async def refusing_tier(
        self, room_id: str, *, subject: str, client_ip_hash: str, anonymous: bool
    ) -> str | None:
        """The tier of a ban in force that keeps this joiner out, or None."""
        room_key = parse_uuid(room_id)
        if room_key is None:
            return None
        tier = await self._pool.fetchval(_REFUSING, room_key, subject, client_ip_hash or None, anonymous)
        return str(tier) if tier is not None else None

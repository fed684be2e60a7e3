"""Back Rooms: a main room's paid seats, and the separate room where the host meets the holders.

The Back Room is a room of its own (a `rooms` row with `parent_room_id`), created the first time its
host enables it, with the host as its host and its own unguessable code that JoinRoom never admits.
Everything keyed by a room id (messages, tokens, sockets) works there unchanged; only EnterBackRoom
lets people in: the host, and whoever holds a seat and is not banned from the main room.

Seats belong to the main room. GrantSeat (payments, when an order is paid) decides in one
transaction: the buyer's participant row is locked (so one buyer's orders and a ban take turns), and
the main room's `back_room_seats_taken` goes up only `WHERE back_room_seats_taken < back_room_seat_limit`,
so concurrent payments for the last seats never oversell. Each order's first outcome is recorded and
answered again on a retry. Removing a seat (the host, or a ban in the main room) bumps the holder's
Back Room participant's token version in the same transaction, so their Back Room tokens stop working
at once (`seat_removed`), and frees the seat for the next buyer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from chatpop_rooms.store import _ROOM_COLUMNS, RoomRow, parse_uuid
from chatpop_rooms.validation import NAME_MAX

SEAT_PRICE_MIN = 50
SEAT_PRICE_MAX = 100_000
SEAT_LIMIT_MIN = 1
SEAT_LIMIT_MAX = 1000
ORDER_ID_MAX = 200
BACK_ROOM_SUFFIX = " · Back Room"
CODE_DRAWS = 8

GRANTED, FULL, ALREADY_HOLDER, BANNED, UNAVAILABLE = (
    "granted",
    "full",
    "already_holder",
    "banned",
    "unavailable",
)
OUTCOMES: dict[str, rooms_pb2.SeatOutcome] = {
    GRANTED: rooms_pb2.SEAT_OUTCOME_GRANTED,
    FULL: rooms_pb2.SEAT_OUTCOME_FULL,
    ALREADY_HOLDER: rooms_pb2.SEAT_OUTCOME_ALREADY_HOLDER,
    BANNED: rooms_pb2.SEAT_OUTCOME_BANNED,
    UNAVAILABLE: rooms_pb2.SEAT_OUTCOME_UNAVAILABLE,
}
REMOVED_BY_HOST, REMOVED_BY_BAN = "host", "banned"

_SELECT_ROOM_FOR_UPDATE = f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE id = $1 FOR UPDATE"  # noqa: S608
_SEAT_COLUMNS = "s.id, s.room_id, s.participant_id, p.username, s.order_id, s.price_cents, s.granted_at"
_SELECT_SEAT = f"SELECT {_SEAT_COLUMNS} FROM seats s JOIN participants p ON p.id = s.participant_id"  # noqa: S608
_INSERT_BACK_ROOM = f"""
    INSERT INTO rooms (id, code, name, description, visibility, media_photo, media_voice, media_video,
                       theme, retention_days, slow_mode_seconds, host_id, parent_room_id)
    SELECT $2, $3, $4, '', 'public', media_photo, media_voice, media_video, theme, retention_days,
           slow_mode_seconds, host_id, id
    FROM rooms WHERE id = $1
    RETURNING {_ROOM_COLUMNS}
"""  # noqa: S608
_APPLY_SETTINGS = f"""
    UPDATE rooms SET back_room_enabled = coalesce($2, back_room_enabled),
                     back_room_seat_price_cents = coalesce($3, back_room_seat_price_cents),
                     back_room_seat_limit = coalesce($4, back_room_seat_limit),
                     back_room_id = $5, updated_at = now()
    WHERE id = $1
    RETURNING {_ROOM_COLUMNS}
"""  # noqa: S608
_TAKE_SEAT = """
    UPDATE rooms SET back_room_seats_taken = back_room_seats_taken + 1, updated_at = now()
    WHERE id = $1 AND back_room_enabled AND closed_at IS NULL
      AND back_room_seats_taken < back_room_seat_limit
    RETURNING id
"""
_FREE_SEAT = """
    UPDATE rooms SET back_room_seats_taken = back_room_seats_taken - 1, updated_at = now() WHERE id = $1
"""
# The holder's Back Room participant: its tokens stop working (and a ban shows there too).
_REVOKE_BACK_ROOM_PARTICIPANT = """
    UPDATE participants SET version = version + 1, banned = banned OR $3
    WHERE room_id = $1 AND subject = $2
    RETURNING id
"""


@dataclass(frozen=True, slots=True)
class SeatRow:
    id: str
    room_id: str
    participant_id: str
    username: str
    order_id: str
    price_cents: int
    granted_at: datetime

    @classmethod
    def from_record(cls, record: asyncpg.Record | dict[str, Any]) -> SeatRow:
        values = dict(record)
        for key in ("id", "room_id", "participant_id"):
            values[key] = str(values[key])
        return cls(**values)

    def message(self) -> rooms_pb2.Seat:
        granted = Timestamp()
        granted.FromDatetime(self.granted_at)
        return rooms_pb2.Seat(
            participant_id=self.participant_id,
            username=self.username,
            order_id=self.order_id,
            price_cents=self.price_cents,
            granted_at=granted,
        )


@dataclass(frozen=True, slots=True)
class BackRoomChanges:
    """What a host asked to change; None keeps the current value."""

    enabled: bool | None = None
    seat_price_cents: int | None = None
    seat_limit: int | None = None

    @property
    def empty(self) -> bool:
        return self.enabled is None and self.seat_price_cents is None and self.seat_limit is None

    @property
    def needs_payouts(self) -> bool:
        """Anything but switching it off is a paid feature: never for anonymous hosts."""
        return bool(self.enabled) or self.seat_price_cents is not None or self.seat_limit is not None


@dataclass(frozen=True, slots=True)
class Grant:
    outcome: str
    seat: SeatRow | None
    room: RoomRow
    created: bool


@dataclass(frozen=True, slots=True)
class Removal:
    seat: SeatRow
    changed: bool
    room: RoomRow
    back_room_participant_id: str
    refund: bool


def validate_settings(settings: rooms_pb2.BackRoomSettings) -> BackRoomChanges:
    price = settings.seat_price_cents if settings.HasField("seat_price_cents") else None
    limit = settings.seat_limit if settings.HasField("seat_limit") else None
    if price is not None and not SEAT_PRICE_MIN <= price <= SEAT_PRICE_MAX:
        raise InvalidArgument(
            f"A seat costs {SEAT_PRICE_MIN} to {SEAT_PRICE_MAX} cents.", code="invalid_seat_price"
        )
    if limit is not None and not SEAT_LIMIT_MIN <= limit <= SEAT_LIMIT_MAX:
        raise InvalidArgument(
            f"A Back Room has {SEAT_LIMIT_MIN} to {SEAT_LIMIT_MAX} seats.", code="invalid_seat_limit"
        )
    return BackRoomChanges(
        enabled=settings.enabled if settings.HasField("enabled") else None,
        seat_price_cents=price,
        seat_limit=limit,
    )


def require_complete(changes: BackRoomChanges, room: RoomRow | None) -> None:
    """Enabling needs a price and a seat limit, given now or set before."""
    if not changes.enabled:
        return
    price = changes.seat_price_cents or (room.back_room_seat_price_cents if room else None)
    limit = changes.seat_limit or (room.back_room_seat_limit if room else None)
    if price is None or limit is None:
        raise InvalidArgument(
            "A Back Room needs a seat price and a seat limit.", code="back_room_settings_required"
        )


def back_room_message(room: RoomRow, *, show_id: bool) -> rooms_pb2.BackRoom | None:
    """The main room's Back Room as everyone sees it; its id only for its members."""
    if room.is_back_room or (room.back_room_id is None and room.back_room_seat_limit is None):
        return None
    limit = room.back_room_seat_limit or 0
    return rooms_pb2.BackRoom(
        enabled=room.back_room_enabled,
        seat_price_cents=room.back_room_seat_price_cents or 0,
        seat_limit=limit,
        seats_taken=room.back_room_seats_taken,
        full=room.back_room_seats_taken >= limit,
        back_room_id=(room.back_room_id or "") if show_id else "",
    )


def _back_room_name(name: str) -> str:
    return name[: NAME_MAX - len(BACK_ROOM_SUFFIX)].rstrip() + BACK_ROOM_SUFFIX


def no_back_room() -> NotFound:
    return NotFound("This room has no Back Room.", code="no_back_room")


def validate_order_id(raw: str) -> str:
    order_id = raw.strip()
    if not order_id or len(order_id) > ORDER_ID_MAX or any(ord(ch) < 33 for ch in order_id):
        raise InvalidArgument("order_id is missing or malformed.", code="invalid_order_id")
    return order_id


async def take_seat_for_ban(
    conn: asyncpg.Connection, room_key: uuid.UUID, participant_key: uuid.UUID, subject: str
) -> tuple[str, str]:
    """Inside a ban's transaction: the banned holder's seat goes (no refund) and their Back Room
    tokens stop working. (Back Room id, their participant there), or empty strings."""
    removed = await conn.fetchrow(
        "UPDATE seats SET removed_at = now(), removed_reason = $3"
        " WHERE room_id = $1 AND participant_id = $2 AND removed_at IS NULL RETURNING id",
        room_key,
        participant_key,
        REMOVED_BY_BAN,
    )
    if removed is not None:
        await conn.execute(_FREE_SEAT, room_key)
    back_room_id = await conn.fetchval("SELECT back_room_id FROM rooms WHERE id = $1", room_key)
    if back_room_id is None:
        return "", ""
    back_participant = await conn.fetchval(_REVOKE_BACK_ROOM_PARTICIPANT, back_room_id, subject, True)
    return str(back_room_id), str(back_participant) if back_participant is not None else ""


async def lift_for_unban(conn: asyncpg.Connection, room_key: uuid.UUID, participant_key: uuid.UUID) -> None:
    """Inside an unban's transaction: the Back Room participant is no longer shown banned (their seat
    stays gone; a new one lets them in again)."""
    await conn.execute(
        "UPDATE participants bp SET banned = false FROM rooms r, participants mp"
        " WHERE r.id = $1 AND bp.room_id = r.back_room_id AND mp.room_id = r.id AND mp.id = $2"
        " AND bp.subject = mp.subject",
        room_key,
        participant_key,
    )


class BackRoomStore:
    """SQL for Back Rooms and seats."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def apply_settings(
        self, room_id: str, changes: BackRoomChanges, room_codes: Callable[[], str]
    ) -> RoomRow:
        """Store the host's settings; the Back Room itself is created the first time it is enabled."""
        key = parse_uuid(room_id)
        if key is None:
            raise NotFound("There is no such room.", code="room_not_found")
        async with self._pool.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(_SELECT_ROOM_FOR_UPDATE, key)
            if record is None:
                raise NotFound("There is no such room.", code="room_not_found")
            room = RoomRow.from_record(record)
            if room.is_back_room:
                raise FailedPrecondition("A Back Room has no Back Room of its own.", code="back_room_nested")
            require_complete(changes, room)
            if changes.seat_limit is not None and changes.seat_limit < room.back_room_seats_taken:
                raise FailedPrecondition(
                    f"{room.back_room_seats_taken} seats are taken: the limit cannot go below that.",
                    code="seat_limit_below_taken",
                )
            back_room_id = room.back_room_id
            if changes.enabled and back_room_id is None:
                back_room_id = await self._create_back_room(conn, room, room_codes)
            record = await conn.fetchrow(
                _APPLY_SETTINGS,
                key,
                changes.enabled,
                changes.seat_price_cents,
                changes.seat_limit,
                uuid.UUID(back_room_id) if back_room_id else None,
            )
        assert record is not None
        return RoomRow.from_record(record)

    async def _create_back_room(
        self, conn: asyncpg.Connection, room: RoomRow, room_codes: Callable[[], str]
    ) -> str:
        back_room_id = uuid.uuid4()
        for _ in range(CODE_DRAWS):
            try:
                # A savepoint: a code already taken spoils only this attempt, not the transaction.
                async with conn.transaction():
                    await conn.execute(
                        _INSERT_BACK_ROOM,
                        uuid.UUID(room.id),
                        back_room_id,
                        room_codes(),
                        _back_room_name(room.name),
                    )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == "rooms_code_key":
                    continue
                raise
            return str(back_room_id)
        raise Unavailable("Could not allocate a room code; try again.", code="room_code_unavailable")

    async def grant(self, *, order_id: str, room_id: str, participant_id: str, price_cents: int) -> Grant:
        room_key, participant_key = parse_uuid(room_id), parse_uuid(participant_id)
        if room_key is None:
            raise NotFound("There is no such room.", code="room_not_found")
        if participant_key is None:
            raise NotFound("There is no such participant in this room.", code="participant_not_found")
        async with self._pool.acquire() as conn, conn.transaction():
            # One order is decided once, even when its fulfilment is retried concurrently.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"rooms.seat:{order_id}"
            )
            decided = await conn.fetchrow(
                "SELECT outcome, seat_id, room_id FROM seat_orders WHERE order_id = $1", order_id
            )
            if decided is not None:
                return await self._decided(conn, decided)
            room_record = await conn.fetchrow(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE id = $1", room_key)  # noqa: S608
            if room_record is None:
                raise NotFound("There is no such room.", code="room_not_found")
            room = RoomRow.from_record(room_record)
            participant = await conn.fetchrow(
                "SELECT subject, is_host, banned FROM participants WHERE room_id = $1 AND id = $2 FOR UPDATE",
                room_key,
                participant_key,
            )
            if participant is None:
                raise NotFound("There is no such participant in this room.", code="participant_not_found")
            outcome = await self._decide(conn, room, participant_key, participant)
            seat: SeatRow | None = None
            if outcome == GRANTED:
                seat_id = uuid.uuid4()
                await conn.execute(
                    "INSERT INTO seats (id, room_id, participant_id, subject, order_id, price_cents)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    seat_id,
                    room_key,
                    participant_key,
                    participant["subject"],
                    order_id,
                    price_cents,
                )
                seat = await self._seat(conn, seat_id)
            await conn.execute(
                "INSERT INTO seat_orders (order_id, room_id, participant_id, outcome, seat_id)"
                " VALUES ($1, $2, $3, $4, $5)",
                order_id,
                room_key,
                participant_key,
                outcome,
                uuid.UUID(seat.id) if seat else None,
            )
            room = await self._room(conn, room_key)
        return Grant(outcome=outcome, seat=seat, room=room, created=True)

    async def _decide(
        self, conn: asyncpg.Connection, room: RoomRow, participant_key: uuid.UUID, participant: asyncpg.Record
    ) -> str:
        if (
            room.is_back_room
            or not room.back_room_enabled
            or room.closed_at is not None
            or room.taken_down_at is not None
        ):
            return UNAVAILABLE
        if participant["banned"]:
            return BANNED
        if participant["is_host"] or participant["subject"] == room.host_id:
            return ALREADY_HOLDER
        holding = await conn.fetchval(
            "SELECT 1 FROM seats WHERE room_id = $1 AND participant_id = $2 AND removed_at IS NULL",
            uuid.UUID(room.id),
            participant_key,
        )
        if holding:
            return ALREADY_HOLDER
        taken = await conn.fetchval(_TAKE_SEAT, uuid.UUID(room.id))
        if taken is None:
            # Either the last seat went to an earlier payment, or the host switched it off meanwhile.
            enabled = await conn.fetchval(
                "SELECT back_room_enabled FROM rooms WHERE id = $1", uuid.UUID(room.id)
            )
            return FULL if enabled else UNAVAILABLE
        return GRANTED

    async def _decided(self, conn: asyncpg.Connection, decided: asyncpg.Record) -> Grant:
        seat = await self._seat(conn, decided["seat_id"]) if decided["seat_id"] is not None else None
        room = await self._room(conn, decided["room_id"])
        return Grant(outcome=str(decided["outcome"]), seat=seat, room=room, created=False)

    async def _seat(self, conn: asyncpg.Connection, seat_id: uuid.UUID) -> SeatRow:
        record = await conn.fetchrow(_SELECT_SEAT + " WHERE s.id = $1", seat_id)
        assert record is not None
        return SeatRow.from_record(record)

    async def _room(self, conn: asyncpg.Connection, room_key: uuid.UUID) -> RoomRow:
        record = await conn.fetchrow(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE id = $1", room_key)  # noqa: S608
        assert record is not None
        return RoomRow.from_record(record)

    async def remove(self, *, room_id: str, participant_id: str, refund: bool) -> Removal:
        """The host takes a holder's seat away; asking again finds it gone (`changed` false)."""
        room_key, participant_key = parse_uuid(room_id), parse_uuid(participant_id)
        if room_key is None or participant_key is None:
            raise NotFound("This participant holds no seat here.", code="seat_not_found")
        async with self._pool.acquire() as conn, conn.transaction():
            removed = await conn.fetchrow(
                "UPDATE seats SET removed_at = now(), removed_reason = $3, refund = $4"
                " WHERE room_id = $1 AND participant_id = $2 AND removed_at IS NULL"
                " RETURNING id, subject, refund",
                room_key,
                participant_key,
                REMOVED_BY_HOST,
                refund,
            )
            if removed is None:
                # Already removed: the latest seat of this participant, as it was.
                last = await conn.fetchrow(
                    "SELECT id, subject, refund FROM seats WHERE room_id = $1 AND participant_id = $2"
                    " ORDER BY granted_at DESC LIMIT 1",
                    room_key,
                    participant_key,
                )
                if last is None:
                    raise NotFound("This participant holds no seat here.", code="seat_not_found")
                seat = await self._seat(conn, last["id"])
                room = await self._room(conn, room_key)
                back_participant = await self._back_participant(conn, room, last["subject"])
                return Removal(seat, False, room, back_participant, bool(last["refund"]))
            await conn.execute(_FREE_SEAT, room_key)
            seat = await self._seat(conn, removed["id"])
            room = await self._room(conn, room_key)
            back_participant = ""
            if room.back_room_id is not None:
                revoked = await conn.fetchval(
                    _REVOKE_BACK_ROOM_PARTICIPANT, uuid.UUID(room.back_room_id), removed["subject"], False
                )
                back_participant = str(revoked) if revoked is not None else ""
        return Removal(seat, True, room, back_participant, refund)

    async def _back_participant(self, conn: asyncpg.Connection, room: RoomRow, subject: str) -> str:
        if room.back_room_id is None:
            return ""
        found = await conn.fetchval(
            "SELECT id FROM participants WHERE room_id = $1 AND subject = $2",
            uuid.UUID(room.back_room_id),
            subject,
        )
        return str(found) if found is not None else ""

    async def seats(self, room_id: str) -> list[SeatRow]:
        key = parse_uuid(room_id)
        if key is None:
            return []
        records = await self._pool.fetch(
            _SELECT_SEAT + " WHERE s.room_id = $1 AND s.removed_at IS NULL ORDER BY s.granted_at, s.id", key
        )
        return [SeatRow.from_record(record) for record in records]

    async def holds_seat(self, room_id: str, subject: str) -> bool:
        """Whether this identity holds a seat of the main room now."""
        key = parse_uuid(room_id)
        if key is None:
            return False
        found = await self._pool.fetchval(
            "SELECT 1 FROM seats WHERE room_id = $1 AND subject = $2 AND removed_at IS NULL LIMIT 1",
            key,
            subject,
        )
        return bool(found)

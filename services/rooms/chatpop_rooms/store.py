"""SQL for the `rooms` schema (asyncpg); the only code that touches its tables."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_ROOM_COLUMN_NAMES = (
    "id",
    "code",
    "name",
    "description",
    "visibility",
    "access_code_hash",
    "access_code_sealed",
    "media_photo",
    "media_voice",
    "media_video",
    "theme",
    "retention_days",
    "slow_mode_seconds",
    "anonymous_names_per_network",
    "host_id",
    "closed_at",
    "created_at",
    "updated_at",
    "taken_down_at",
    "parent_room_id",
    "back_room_id",
    "back_room_enabled",
    "back_room_seat_price_cents",
    "back_room_seat_limit",
    "back_room_seats_taken",
    "erased_at",
)
_PARTICIPANT_COLUMN_NAMES = (
    "id",
    "room_id",
    "subject",
    "username",
    "is_host",
    "version",
    "banned",
    "verified",
    "joined_at",
)
_ROOM_COLUMNS = ", ".join(_ROOM_COLUMN_NAMES)
_PARTICIPANT_COLUMNS = ", ".join(_PARTICIPANT_COLUMN_NAMES)

# Column lists are fixed constants; every value travels as a bind parameter.
_SELECT_ROOM = f"SELECT {_ROOM_COLUMNS} FROM rooms"  # noqa: S608
_SELECT_PARTICIPANT = f"SELECT {_PARTICIPANT_COLUMNS} FROM participants"  # noqa: S608
_SELECT_PARTICIPANTS_BY_KEYS = (
    _SELECT_PARTICIPANT  # noqa: S608 (constant text; the keys are parameters)
    + " WHERE (room_id, id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))"
)
_INSERT_ROOM = f"""
    INSERT INTO rooms (id, code, name, description, visibility, access_code_hash, access_code_sealed,
                       media_photo, media_voice, media_video, theme, retention_days, slow_mode_seconds,
                       anonymous_names_per_network, host_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
    RETURNING {_ROOM_COLUMNS}
"""  # noqa: S608
_CLOSE_ROOM = f"""
    UPDATE rooms SET closed_at = coalesce(closed_at, now()),
                     updated_at = CASE WHEN closed_at IS NULL THEN now() ELSE updated_at END
    WHERE id = $1
    RETURNING {_ROOM_COLUMNS}
"""  # noqa: S608
_INSERT_PARTICIPANT = f"""
    INSERT INTO participants
        (id, room_id, subject, username, is_host, verified, identity_kind, client_ip_hash)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    RETURNING {_PARTICIPANT_COLUMNS}
"""  # noqa: S608
_MY_ROOMS = f"""
    WITH mine AS (
        SELECT room_id FROM participants WHERE subject = $1
        UNION
        SELECT id FROM rooms WHERE host_id = $1
    )
    SELECT {", ".join(f"r.{name} AS r_{name}" for name in _ROOM_COLUMN_NAMES)},
           {", ".join(f"p.{name} AS p_{name}" for name in _PARTICIPANT_COLUMN_NAMES)}
    FROM mine
    JOIN rooms r ON r.id = mine.room_id
    LEFT JOIN participants p ON p.room_id = r.id AND p.subject = $1
    WHERE p.banned IS NOT TRUE AND r.parent_room_id IS NULL
    ORDER BY coalesce(p.joined_at, r.created_at) DESC, r.id
    LIMIT $2
"""  # noqa: S608
_ANONYMOUS = "anonymous"
_NAME_CONSTRAINTS = frozenset({"participants_room_username_key", "participants_room_verified_username_key"})

# Columns UpdateRoom may change; anything else never reaches the SQL text.
UPDATABLE_COLUMNS = frozenset(
    {
        "name",
        "description",
        "visibility",
        "access_code_hash",
        "access_code_sealed",
        "media_photo",
        "media_voice",
        "media_video",
        "theme",
        "retention_days",
        "slow_mode_seconds",
        "anonymous_names_per_network",
    }
)


class CodeTaken(Exception):
    """Another room already has the generated code; the caller draws a new one."""


class UsernameTaken(Exception):
    """Someone else in the room already uses this username (compared case-insensitively)."""


class AnonymousLimitReached(Exception):
    """This client address already joined the room under as many anonymous names as allowed."""


class AlreadyJoined(Exception):
    """This subject joined the room concurrently; `participant` is the row that won."""

    def __init__(self, participant: ParticipantRow) -> None:
        super().__init__(participant.id)
        self.participant = participant


@dataclass(frozen=True, slots=True)
class RoomRow:
    id: str
    code: str
    name: str
    description: str
    visibility: str
    access_code_hash: str | None
    access_code_sealed: str | None
    media_photo: bool
    media_voice: bool
    media_video: bool
    theme: str
    retention_days: int
    slow_mode_seconds: int
    anonymous_names_per_network: int | None
    host_id: str
    closed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # Set while an admin's takedown stands (chatpop_rooms.takedowns).
    taken_down_at: datetime | None = None
    # A Back Room names its main room; a main room names its Back Room once it was first enabled
    # (chatpop_rooms.back_rooms).
    parent_room_id: str | None = None
    back_room_id: str | None = None
    back_room_enabled: bool = False
    back_room_seat_price_cents: int | None = None
    back_room_seat_limit: int | None = None
    back_room_seats_taken: int = 0
    # Closed with "delete everything" (chatpop_rooms.erasure).
    erased_at: datetime | None = None

    @property
    def is_back_room(self) -> bool:
        return self.parent_room_id is not None

    @classmethod
    def from_record(cls, record: asyncpg.Record | dict[str, Any]) -> RoomRow:
        values = dict(record)
        values["id"] = str(values["id"])
        for key in ("parent_room_id", "back_room_id"):
            if values.get(key) is not None:
                values[key] = str(values[key])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ParticipantRow:
    id: str
    room_id: str
    subject: str
    username: str
    is_host: bool
    version: int
    banned: bool
    verified: bool
    joined_at: datetime

    @classmethod
    def from_record(cls, record: asyncpg.Record | dict[str, Any]) -> ParticipantRow:
        values = dict(record)
        values["id"] = str(values["id"])
        values["room_id"] = str(values["room_id"])
        return cls(**values)


def parse_uuid(raw: str) -> uuid.UUID | None:
    """Ids arrive as strings from callers; anything that is not a UUID names nothing we store."""
    try:
        return uuid.UUID(raw)
    except (ValueError, AttributeError):
        return None


@dataclass(frozen=True, slots=True)
class NewRoom:
    id: str
    name: str
    description: str
    visibility: str
    access_code_hash: str | None
    access_code_sealed: str | None
    media_photo: bool
    media_voice: bool
    media_video: bool
    theme: str
    retention_days: int
    slow_mode_seconds: int
    anonymous_names_per_network: int | None
    host_id: str


class RoomStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def insert_room(self, room: NewRoom, code: str) -> RoomRow:
        try:
            record = await self._pool.fetchrow(
                _INSERT_ROOM,
                uuid.UUID(room.id),
                code,
                room.name,
                room.description,
                room.visibility,
                room.access_code_hash,
                room.access_code_sealed,
                room.media_photo,
                room.media_voice,
                room.media_video,
                room.theme,
                room.retention_days,
                room.slow_mode_seconds,
                room.anonymous_names_per_network,
                room.host_id,
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "rooms_code_key":
                raise CodeTaken(code) from exc
            raise
        assert record is not None
        return RoomRow.from_record(record)

    async def room_by_id(self, room_id: str) -> RoomRow | None:
        key = parse_uuid(room_id)
        if key is None:
            return None
        record = await self._pool.fetchrow(_SELECT_ROOM + " WHERE id = $1", key)
        return RoomRow.from_record(record) if record else None

    async def rooms_by_ids(self, room_ids: Iterable[str]) -> dict[str, RoomRow]:
        """The rooms of these ids that exist, by id (one query)."""
        keys = list({key for key in map(parse_uuid, room_ids) if key is not None})
        if not keys:
            return {}
        records = await self._pool.fetch(_SELECT_ROOM + " WHERE id = ANY($1::uuid[])", keys)
        rooms = (RoomRow.from_record(record) for record in records)
        return {room.id: room for room in rooms}

    async def room_by_code(self, code: str) -> RoomRow | None:
        record = await self._pool.fetchrow(_SELECT_ROOM + " WHERE code = $1", code)
        return RoomRow.from_record(record) if record else None

    async def retention_policies(self, room_ids: list[str]) -> list[asyncpg.Record]:
        """Each known room's retention_days, closed and erased (ids that are no room are left out)."""
        keys = [key for key in (parse_uuid(room_id) for room_id in room_ids) if key is not None]
        if not keys:
            return []
        rows: list[asyncpg.Record] = await self._pool.fetch(
            """
            SELECT id::text AS room_id, retention_days, closed_at IS NOT NULL AS closed,
                   erased_at IS NOT NULL AS erased
            FROM rooms WHERE id = ANY($1::uuid[])
            """,
            keys,
        )
        return rows

    async def update_room(self, room_id: str, changes: dict[str, Any]) -> RoomRow | None:
        unknown = set(changes) - UPDATABLE_COLUMNS
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        key = parse_uuid(room_id)
        if key is None:
            return None
        columns = sorted(changes)
        assignments = ", ".join(f"{column} = ${index}" for index, column in enumerate(columns, start=2))
        sets = f"{assignments}, updated_at = now()" if assignments else "updated_at = now()"
        record = await self._pool.fetchrow(
            f"UPDATE rooms SET {sets} WHERE id = $1 RETURNING {_ROOM_COLUMNS}",  # noqa: S608 - whitelisted columns
            key,
            *(changes[column] for column in columns),
        )
        return RoomRow.from_record(record) if record else None

    async def close_room(self, room_id: str) -> RoomRow | None:
        """Close the room, and its Back Room with it; closing again keeps the first closing time."""
        key = parse_uuid(room_id)
        if key is None:
            return None
        async with self._pool.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(_CLOSE_ROOM, key)
            if record is not None and record["back_room_id"] is not None:
                await conn.fetchrow(_CLOSE_ROOM, record["back_room_id"])
        return RoomRow.from_record(record) if record else None

    async def participant_by_subject(self, room_id: str, subject: str) -> ParticipantRow | None:
        record = await self._pool.fetchrow(
            _SELECT_PARTICIPANT + " WHERE room_id = $1 AND subject = $2",
            uuid.UUID(room_id),
            subject,
        )
        return ParticipantRow.from_record(record) if record else None

    async def insert_participant(
        self,
        *,
        room_id: str,
        subject: str,
        username: str,
        is_host: bool,
        verified: bool,
        identity_kind: str,
        client_ip_hash: str | None = None,
        anonymous_ip_limit: int | None = None,
        anonymous_ip_window: int = 3600,
    ) -> ParticipantRow:
        """A first join. Raises AlreadyJoined, UsernameTaken or AnonymousLimitReached.

        First joins of one room take turns (a transaction-scoped advisory lock), so the per-address
        count and the name checks see every earlier join and nobody slips in between check and
        insert. The per-address count covers anonymous joins of the last `anonymous_ip_window`
        seconds: a group on one network can keep arriving, a flood from one address cannot. A
        verified name (the joiner's own reserved one) only has to be free among verified names; any
        other name must be free altogether.
        """
        room_key = uuid.UUID(room_id)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"rooms.join:{room_id}"
            )
            existing = await conn.fetchrow(
                _SELECT_PARTICIPANT + " WHERE room_id = $1 AND subject = $2", room_key, subject
            )
            if existing is not None:
                raise AlreadyJoined(ParticipantRow.from_record(existing))
            # The host is never counted: their own room's quota belongs to their guests.
            if (
                identity_kind == _ANONYMOUS
                and client_ip_hash
                and anonymous_ip_limit is not None
                and not is_host
            ):
                count = await conn.fetchval(
                    "SELECT count(*) FROM participants"
                    " WHERE room_id = $1 AND client_ip_hash = $2 AND identity_kind = $3"
                    " AND joined_at > now() - make_interval(secs => $4) AND NOT is_host",
                    room_key,
                    client_ip_hash,
                    _ANONYMOUS,
                    float(anonymous_ip_window),
                )
                if count >= anonymous_ip_limit:
                    raise AnonymousLimitReached()
            if not verified:
                clash = await conn.fetchval(
                    "SELECT 1 FROM participants WHERE room_id = $1 AND username_lower = lower($2) LIMIT 1",
                    room_key,
                    username,
                )
                if clash:
                    raise UsernameTaken(username)
            try:
                record = await conn.fetchrow(
                    _INSERT_PARTICIPANT,
                    uuid.uuid4(),
                    room_key,
                    subject,
                    username,
                    is_host,
                    verified,
                    identity_kind,
                    client_ip_hash or None,
                )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name in _NAME_CONSTRAINTS:
                    raise UsernameTaken(username) from exc
                raise
        assert record is not None
        return ParticipantRow.from_record(record)

    async def taken_usernames(self, room_id: str, usernames_lower: list[str]) -> set[str]:
        """Which of these lower-case names participants of the room already use."""
        rows = await self._pool.fetch(
            "SELECT username_lower FROM participants WHERE room_id = $1 AND username_lower = ANY($2::text[])",
            uuid.UUID(room_id),
            usernames_lower,
        )
        return {str(row["username_lower"]) for row in rows}

    async def participant(self, room_id: str, participant_id: str) -> ParticipantRow | None:
        room_key, participant_key = parse_uuid(room_id), parse_uuid(participant_id)
        if room_key is None or participant_key is None:
            return None
        record = await self._pool.fetchrow(
            _SELECT_PARTICIPANT + " WHERE room_id = $1 AND id = $2",
            room_key,
            participant_key,
        )
        return ParticipantRow.from_record(record) if record else None

    async def participants_by_keys(
        self, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], ParticipantRow]:
        """The participants of these (room id, participant id) that exist, by that pair (one query)."""
        pairs = {
            (room, participant)
            for room, participant in ((parse_uuid(r), parse_uuid(p)) for r, p in keys)
            if room is not None and participant is not None
        }
        if not pairs:
            return {}
        records = await self._pool.fetch(
            _SELECT_PARTICIPANTS_BY_KEYS,
            [room for room, _ in pairs],
            [participant for _, participant in pairs],
        )
        found = (ParticipantRow.from_record(record) for record in records)
        return {(row.room_id, row.id): row for row in found}

    async def participants(self, room_id: str) -> list[ParticipantRow]:
        room_key = parse_uuid(room_id)
        if room_key is None:
            return []
        records = await self._pool.fetch(
            _SELECT_PARTICIPANT + " WHERE room_id = $1 ORDER BY joined_at, id",
            room_key,
        )
        return [ParticipantRow.from_record(record) for record in records]

    async def my_rooms(self, subject: str, limit: int) -> list[tuple[RoomRow, ParticipantRow | None]]:
        """Rooms the subject hosts or joined (not those it was banned from), newest first."""
        records = await self._pool.fetch(_MY_ROOMS, subject, limit)
        mine: list[tuple[RoomRow, ParticipantRow | None]] = []
        for record in records:
            room = RoomRow.from_record({name: record[f"r_{name}"] for name in _ROOM_COLUMN_NAMES})
            participant = None
            if record["p_id"] is not None:
                participant = ParticipantRow.from_record(
                    {name: record[f"p_{name}"] for name in _PARTICIPANT_COLUMN_NAMES}
                )
            mine.append((room, participant))
        return mine

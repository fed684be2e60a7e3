"""Stored rows → protobuf messages. The access-code hash never leaves this service."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from chatpop.rooms.v1 import rooms_pb2
from chatpop_rooms.store import ParticipantRow, RoomRow
from chatpop_rooms.validation import THEMES, VISIBILITIES

_VISIBILITY_VALUES = {name: value for value, name in VISIBILITIES.items()}
_THEME_VALUES = {name: value for value, name in THEMES.items()}


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def room_message(row: RoomRow, *, names_per_network_default: int) -> rooms_pb2.Room:
    return rooms_pb2.Room(
        id=row.id,
        code=row.code,
        name=row.name,
        description=row.description,
        visibility=_VISIBILITY_VALUES[row.visibility],  # type: ignore[arg-type]
        media=rooms_pb2.MediaSettings(photo=row.media_photo, voice=row.media_voice, video=row.media_video),
        theme=_THEME_VALUES[row.theme],  # type: ignore[arg-type]
        retention_days=row.retention_days,
        slow_mode_seconds=row.slow_mode_seconds,
        anonymous_names_per_network=row.anonymous_names_per_network or names_per_network_default,
        host_id=row.host_id,
        closed=row.closed_at is not None,
        taken_down=row.taken_down_at is not None,
        created_at=_timestamp(row.created_at),
        updated_at=_timestamp(row.updated_at),
    )


def participant_message(row: ParticipantRow) -> rooms_pb2.Participant:
    return rooms_pb2.Participant(
        id=row.id,
        room_id=row.room_id,
        subject=row.subject,
        username=row.username,
        is_host=row.is_host,
        version=row.version,
        banned=row.banned,
        verified=row.verified,
        joined_at=_timestamp(row.joined_at),
    )

"""Stored rows → protobuf messages. The access-code hash never leaves this service."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from chatpop.rooms.v1 import rooms_pb2
from chatpop_rooms.back_rooms import back_room_message
from chatpop_rooms.store import ParticipantRow, RoomRow
from chatpop_rooms.validation import THEMES, VISIBILITIES

_VISIBILITY_VALUES = {name: value for value, name in VISIBILITIES.items()}
_THEME_VALUES = {name: value for value, name in THEMES.items()}


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def room_message(
    row: RoomRow, *, names_per_network_default: int, show_back_room_id: bool = False
) -> rooms_pb2.Room:
    """`show_back_room_id` for the Back Room's members only (its host and seat holders)."""
    message = rooms_pb2.Room(
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
        parent_room_id=row.parent_room_id or "",
        erased=row.erased_at is not None,
    )
    back_room = back_room_message(row, show_id=show_back_room_id)
    if back_room is not None:
        message.back_room.CopyFrom(back_room)
    return message


def participant_message(row: ParticipantRow, *, seat_removed: bool = False) -> rooms_pb2.Participant:
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
        seat_removed=seat_removed,
    )

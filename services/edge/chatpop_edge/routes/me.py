"""What belongs to the caller across rooms: the rooms they host or joined, with unread counts."""

from __future__ import annotations

from fastapi import APIRouter

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_edge import models
from chatpop_edge.backends import auth_metadata
from chatpop_edge.deps import BackendsDep, RequiredToken, SettingsDep
from chatpop_edge.errors import error_responses

router = APIRouter(prefix="/api/v1/me", tags=["me"])

# The activity lookup counts unread messages up to this many; more shows as "99+".
_UNREAD_SHOWN = 99


@router.get(
    "/rooms",
    response_model=models.MyRooms,
    responses=error_responses(401, 403),
    summary="Rooms you host or joined (access token): an account's on every device, an anonymous "
    "session's on this device; newest activity first, with unread counts",
)
async def my_rooms(backends: BackendsDep, settings: SettingsDep, token: RequiredToken) -> models.MyRooms:
    listed = await backends.rooms.ListMyRooms(
        rooms_pb2.ListMyRoomsRequest(), metadata=auth_metadata(token), timeout=backends.timeout
    )
    mine = list(listed.rooms)
    if not mine:
        return models.MyRooms(rooms=[])
    activity = await backends.messaging.GetRoomActivity(
        messaging_pb2.GetRoomActivityRequest(
            participants=[
                messaging_pb2.RoomParticipantRef(
                    room_id=entry.room.id,
                    participant_id=entry.participant.id if entry.HasField("participant") else "",
                )
                for entry in mine
            ]
        ),
        timeout=backends.timeout,
    )
    rooms: list[models.MyRoom] = []
    for entry, found in zip(mine, activity.activities, strict=True):
        backends.remember_room(entry.room)
        room = models.Room.from_proto(entry.room, settings.public_url)
        participant = (
            models.Participant.from_proto(entry.participant) if entry.HasField("participant") else None
        )
        since = (participant.joined_at if participant else None) or room.created_at
        rooms.append(
            models.MyRoom(
                room=room,
                participant=participant,
                is_host=entry.is_host,
                last_seq=found.last_seq,
                last_activity_at=models.timestamp(found.last_message_at) or since,
                unread=min(found.unread, _UNREAD_SHOWN),
                unread_more=found.unread > _UNREAD_SHOWN,
            )
        )
    rooms.sort(
        key=lambda mine: mine.last_activity_at.timestamp() if mine.last_activity_at else 0, reverse=True
    )
    return models.MyRooms(rooms=rooms)

"""Bans over REST: the host removes a participant from the room, lifts bans, and lists them.

A ban is made at rooms (the participant's room tokens stop working and joining again is refused, per
tier), then told to the room as an entry of its log at messaging, with the host's token both times:
every live socket gets a `banned` frame and the banned participant's own sockets close with 4403
`banned`. A ban takes a seat holder's Back Room seat (no refund): their Back Room sockets close with
4403 `seat_removed`. Both steps are idempotent, so a ban whose announcement failed (503) is simply sent again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, Field

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_edge import models
from chatpop_edge.back_rooms import disconnect_from_back_room
from chatpop_edge.backends import auth_metadata
from chatpop_edge.deps import BackendsDep, RequiredToken
from chatpop_edge.errors import error_responses
from chatpop_edge.room_events import announce_room_update
from chatpop_edge.routes.rooms import RoomCode

router = APIRouter(prefix="/api/v1/rooms", tags=["bans"])

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
REASON_MAX = 500
LIST_MAX = 200

Tier = Literal["session", "device", "ip"]
_TIERS: dict[str, rooms_pb2.BanTier] = {
    "session": rooms_pb2.BAN_TIER_SESSION,
    "device": rooms_pb2.BAN_TIER_DEVICE,
    "ip": rooms_pb2.BAN_TIER_IP,
}
_TIER_NAMES = {value: name for name, value in _TIERS.items()}

BanId = Annotated[str, Path(min_length=36, max_length=36, pattern=UUID_PATTERN, description="The ban's id.")]


class BanRequest(models.RequestBody):
    participant_id: str = Field(
        min_length=36, max_length=36, pattern=UUID_PATTERN, description="The participant to ban."
    )
    tier: Tier = Field(
        description="How far the ban reaches on a new join: `session` refuses the participant's identity"
        " (anonymous session or account) under any name; `device` also refuses any new anonymous session"
        " from the network (client IP) they joined from; `ip` refuses anyone from that network, signed in"
        " or not. The host is never refused in their own room."
    )
    reason: str = Field(default="", max_length=REASON_MAX, description="Why, for the host's list of bans.")


class Ban(BaseModel):
    id: str
    participant_id: str = Field(description="The banned participant.")
    username: str = Field(description="The banned participant's username in the room.")
    tier: Tier
    reason: str
    banned_by: str = Field(description="Identity id of who banned (the host).")
    created_at: datetime | None

    @classmethod
    def from_proto(cls, ban: rooms_pb2.Ban) -> Ban:
        return cls(
            id=ban.id,
            participant_id=ban.participant_id,
            username=ban.username,
            tier=_TIER_NAMES[ban.tier],  # type: ignore[arg-type]
            reason=ban.reason,
            banned_by=ban.banned_by,
            created_at=models.timestamp(ban.created_at),
        )


class BanResponse(BaseModel):
    ban: Ban
    seq: int = Field(description="Seq of the room's `banned` entry for this ban.")
    created: bool = Field(description="False when the participant was banned already.")


class UnbanResponse(BaseModel):
    ban: Ban
    changed: bool = Field(description="False when the ban had been lifted already.")


class BanList(BaseModel):
    bans: list[Ban] = Field(description="Bans in force, newest first.")


@router.post(
    "/{code}/bans",
    response_model=BanResponse,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": BanResponse, "description": "Banned already: the ban in force"},
        **error_responses(401, 403, 404, 409, 503),
    },
    summary="Ban a participant (host only; access token or the host's room token); idempotent",
)
async def ban_participant(
    code: RoomCode, body: BanRequest, response: Response, backends: BackendsDep, token: RequiredToken
) -> BanResponse:
    room_id = await backends.room_id(code, token)
    banned = await backends.rooms.BanParticipant(
        rooms_pb2.BanParticipantRequest(
            room_id=room_id, participant_id=body.participant_id, tier=_TIERS[body.tier], reason=body.reason
        ),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    backends.standing.forget(room_id, body.participant_id)
    # A seat holder's Back Room closes for them too (the ban took the seat, without a refund).
    await disconnect_from_back_room(backends, banned.back_room_id, banned.back_room_participant_id, token)
    announced = await backends.messaging.AppendBan(
        messaging_pb2.AppendBanRequest(
            room_id=room_id, participant_id=body.participant_id, ban_id=banned.ban.id
        ),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    if banned.created and banned.back_room_id:
        # The main room shows the seats left; a seat may just have come free.
        await announce_room_update(backends, room_id, token)
    response.status_code = status.HTTP_201_CREATED if banned.created else status.HTTP_200_OK
    return BanResponse(ban=Ban.from_proto(banned.ban), seq=announced.entry.seq, created=banned.created)


@router.delete(
    "/{code}/bans/{ban_id}",
    response_model=UnbanResponse,
    responses=error_responses(401, 403, 404),
    summary="Lift a ban for future joins (host only); the participant joins again for a new room token",
)
async def unban_participant(
    code: RoomCode, ban_id: BanId, backends: BackendsDep, token: RequiredToken
) -> UnbanResponse:
    room_id = await backends.room_id(code, token)
    lifted = await backends.rooms.UnbanParticipant(
        rooms_pb2.UnbanParticipantRequest(room_id=room_id, ban_id=ban_id),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    backends.standing.forget(room_id, lifted.ban.participant_id)
    return UnbanResponse(ban=Ban.from_proto(lifted.ban), changed=lifted.changed)


@router.get(
    "/{code}/bans",
    response_model=BanList,
    responses=error_responses(401, 403, 404),
    summary="The room's bans in force, newest first (host only)",
)
async def list_bans(
    code: RoomCode,
    backends: BackendsDep,
    token: RequiredToken,
    limit: Annotated[int, Query(ge=1, le=LIST_MAX, description="Most bans to return.")] = 100,
) -> BanList:
    room_id = await backends.room_id(code, token)
    listed = await backends.rooms.ListBans(
        rooms_pb2.ListBansRequest(room_id=room_id, limit=limit),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return BanList(bans=[Ban.from_proto(ban) for ban in listed.bans])

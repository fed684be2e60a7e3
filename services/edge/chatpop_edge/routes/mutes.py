"""Personal mutes over REST: a participant hides another participant's messages from their own view.

Mutes belong to messaging and are private: nobody else learns of them, and nothing changes for anyone
else. They are keyed by the muter's participant id, the same on every device of their identity.
History leaves a muted participant's messages out for the muter (its pages still account for their
seqs through `low_seq`). Live frames are encoded once per room, so clients hide them: a room socket
gets `mutes {participant_ids}` right after `ready`, and again whenever the list changes. A change
reaches the participant's sockets on every edge process the same way: messaging signals the new
list on the room's stream, and each edge's room channel hands it to that participant's sockets only
(`realtime/hub.py`). The answer to the call carries the list too, for the device that made it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from chatpop.messaging.v1 import messaging_pb2
from chatpop_edge import models
from chatpop_edge.backends import Backends, auth_metadata
from chatpop_edge.deps import BackendsDep, RequiredToken
from chatpop_edge.errors import error_responses
from chatpop_edge.routes.bans import UUID_PATTERN
from chatpop_edge.routes.rooms import RoomCode, room_principal

router = APIRouter(prefix="/api/v1/rooms", tags=["mutes"])

# A participant mutes at most this many others per room (messaging refuses more).
MAX_MUTES = 1000

MutedId = Annotated[
    str,
    Path(
        min_length=36,
        max_length=36,
        pattern=UUID_PATTERN,
        description="The participant to mute or unmute (a participant of the same room, not yourself).",
    ),
]


class Mute(BaseModel):
    participant_id: str = Field(description="The muted participant.")
    username: str = Field(description="Their username in the room.")
    muted_at: datetime | None

    @classmethod
    def from_proto(cls, mute: messaging_pb2.Mute) -> Mute:
        return cls(
            participant_id=mute.participant_id,
            username=mute.username,
            muted_at=models.timestamp(mute.created_at),
        )


class MuteList(BaseModel):
    mutes: list[Mute] = Field(max_length=MAX_MUTES, description="Your mutes in the room, newest first.")


class MuteChange(MuteList):
    participant_id: str = Field(description="The participant muted or unmuted.")
    changed: bool = Field(description="False when they were muted (or not muted) already.")


async def load_mutes(backends: Backends, room_id: str, token: str) -> list[str]:
    """The participant ids the room token's participant muted, newest first."""
    response = await backends.messaging.ListMutes(
        messaging_pb2.ListMutesRequest(room_id=room_id),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return [mute.participant_id for mute in response.mutes]


def _changed(
    participant_id: str,
    result: messaging_pb2.MuteParticipantResponse | messaging_pb2.UnmuteParticipantResponse,
) -> MuteChange:
    return MuteChange(
        participant_id=participant_id,
        changed=result.changed,
        mutes=[Mute.from_proto(mute) for mute in result.mutes],
    )


@router.put(
    "/{code}/mutes/{participant_id}",
    response_model=MuteChange,
    responses=error_responses(401, 403, 404, 409, 422),
    summary="Mute a participant: their messages leave your history and your live view (room token);"
    " private and idempotent; at most 1000 per room",
)
async def mute_participant(
    code: RoomCode, participant_id: MutedId, backends: BackendsDep, token: RequiredToken
) -> MuteChange:
    room_id, _principal = await room_principal(backends, code, token)
    result = await backends.messaging.MuteParticipant(
        messaging_pb2.MuteParticipantRequest(room_id=room_id, participant_id=participant_id),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return _changed(participant_id, result)


@router.delete(
    "/{code}/mutes/{participant_id}",
    response_model=MuteChange,
    responses=error_responses(401, 403, 404, 422),
    summary="Unmute a participant: their messages come back (room token); unmuting who is not muted"
    " changes nothing",
)
async def unmute_participant(
    code: RoomCode, participant_id: MutedId, backends: BackendsDep, token: RequiredToken
) -> MuteChange:
    room_id, _principal = await room_principal(backends, code, token)
    result = await backends.messaging.UnmuteParticipant(
        messaging_pb2.UnmuteParticipantRequest(room_id=room_id, participant_id=participant_id),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return _changed(participant_id, result)


@router.get(
    "/{code}/mutes",
    response_model=MuteList,
    responses=error_responses(401, 403, 404),
    summary="The participants you muted in the room, newest first (room token)",
)
async def list_mutes(code: RoomCode, backends: BackendsDep, token: RequiredToken) -> MuteList:
    room_id, _principal = await room_principal(backends, code, token)
    response = await backends.messaging.ListMutes(
        messaging_pb2.ListMutesRequest(room_id=room_id),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return MuteList(mutes=[Mute.from_proto(mute) for mute in response.mutes])

"""Changes to what a room shows, made by its participants: reactions and deleting messages.

Each change is an entry of the room's log (messaging): every live socket gets it as a frame with its
own seq, and a client that resumes after that seq gets it too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from chatpop.messaging.v1 import messaging_pb2
from chatpop_edge import models
from chatpop_edge.backends import auth_metadata
from chatpop_edge.deps import BackendsDep, RequiredToken
from chatpop_edge.errors import error_responses
from chatpop_edge.routes.rooms import RoomCode, room_principal

router = APIRouter(prefix="/api/v1/rooms", tags=["messages"])

MessageSeq = Annotated[int, Path(ge=1, le=models.MAX_SEQ, description="The message's seq.")]


@router.post(
    "/{code}/messages/{seq}/reactions",
    response_model=models.ReactionState,
    responses=error_responses(401, 403, 404, 409, 429),
    summary="Put one of your reactions on a message or take it off (room token); idempotent",
)
async def set_reaction(
    code: RoomCode,
    seq: MessageSeq,
    body: models.SetReactionRequest,
    backends: BackendsDep,
    token: RequiredToken,
) -> models.ReactionState:
    room_id, _principal = await room_principal(backends, code, token)
    result = await backends.messaging.SetReaction(
        messaging_pb2.SetReactionRequest(room_id=room_id, target_seq=seq, emoji=body.emoji, on=body.on),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.ReactionState(
        target_seq=seq,
        reactions=models.reaction_counts(result.state),
        my_reactions=list(result.my_reactions),
        state_seq=result.state.state_seq,
        changed=result.changed,
    )


@router.delete(
    "/{code}/messages/{seq}",
    response_model=models.DeletedMessage,
    responses=error_responses(401, 403, 404),
    summary="Delete a message: your own, or any in your room as its host (room token); idempotent",
)
async def delete_message(
    code: RoomCode, seq: MessageSeq, backends: BackendsDep, token: RequiredToken
) -> models.DeletedMessage:
    room_id, _principal = await room_principal(backends, code, token)
    result = await backends.messaging.DeleteMessage(
        messaging_pb2.DeleteMessageRequest(room_id=room_id, target_seq=seq),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.DeletedMessage(target_seq=seq, changed=result.changed)

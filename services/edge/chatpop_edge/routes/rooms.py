"""Rooms, joining and messages over REST."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.auth import Principal
from chatpop_edge import models
from chatpop_edge.back_rooms import require_payouts_for_new_room, require_payouts_for_room
from chatpop_edge.backends import Backends, auth_metadata
from chatpop_edge.deps import BackendsDep, ClientIpHash, OptionalToken, RequiredToken, SettingsDep
from chatpop_edge.errors import ApiError, error_responses
from chatpop_edge.realtime.batcher import SendFailure
from chatpop_edge.room_events import announce_room_update

router = APIRouter(prefix="/api/v1/rooms", tags=["rooms"])

RoomCode = Annotated[
    str,
    Path(
        min_length=1,
        max_length=models.ROOM_CODE_MAX_LENGTH,
        pattern=models.ROOM_CODE_PATTERN,
        description="The room's code.",
    ),
]


# History-style paging: newest first, backwards from before_seq.
BeforeSeq = Annotated[
    int | None,
    Query(ge=1, le=models.MAX_SEQ, description="Only messages older than this seq; omit for the newest."),
]
PageLimit = Annotated[int, Query(ge=1, le=100, description="Most items in the page.")]


async def room_principal(backends: Backends, code: str, token: str) -> tuple[str, Principal]:
    """The room's id and the verified room token, which must be for that very room."""
    principal = await backends.verifier.verify(token)
    if principal.token_type != "room":
        raise ApiError(401, "invalid_token", "A room token is required (join the room first).")
    room_id = await backends.room_id(code, token)
    principal.require_room(room_id)
    # A token from before a ban works nowhere, even though its signature is still good.
    await backends.standing.check(principal)
    return room_id, principal


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=models.Room,
    responses=error_responses(401, 403, 409, 429),
    summary="Create a room; the caller becomes its host",
    description="A `back_room` with `enabled: true` sells seats: only for an account whose payouts can"
    " receive money (409 `payments_not_enabled`; 403 `anonymous_host` without an account).",
)
async def create_room(
    body: models.CreateRoomRequest,
    response: Response,
    backends: BackendsDep,
    settings: SettingsDep,
    token: RequiredToken,
) -> models.Room:
    await require_payouts_for_new_room(backends, token, body.back_room)
    created = await backends.rooms.CreateRoom(
        body.to_proto(), metadata=auth_metadata(token), timeout=backends.timeout
    )
    backends.remember_room(created.room)
    response.headers["Location"] = f"/api/v1/rooms/{created.room.code}"
    return models.Room.from_proto(created.room, settings.public_url)


@router.get(
    "/{code}",
    response_model=models.Room,
    responses=error_responses(401, 404),
    summary="Room info (never the access code); a token is optional, but one that is sent must be valid",
    description="A room taken down by ChatPop's moderators answers 404 `room_taken_down` (admins still"
    " see it, with `taken_down`). A Back Room's code answers 404 `room_not_found` to anyone but its host"
    " and seat holders, and a Back Room token of a holder whose seat was removed 403 `seat_removed`.",
)
async def get_room(
    code: RoomCode, backends: BackendsDep, settings: SettingsDep, token: OptionalToken
) -> models.Room:
    room = await backends.get_room(code, token)
    if room.parent_room_id and token is not None:
        principal = await backends.verifier.verify(token)
        if principal.token_type == "room" and principal.room_id == room.id:
            await backends.standing.check(principal)
    if room.taken_down and not await _is_admin(backends, token):
        raise ApiError(404, "room_taken_down", "This room was taken down by ChatPop's moderators.")
    return models.Room.from_proto(room, settings.public_url)


async def _is_admin(backends: Backends, token: str | None) -> bool:
    if token is None:
        return False
    principal = await backends.verifier.verify(token)
    return principal.token_type == "access" and principal.is_admin


@router.patch(
    "/{code}",
    response_model=models.Room,
    responses=error_responses(401, 403, 404, 409),
    summary="Edit a room's settings (host only)",
    description="Switching the Back Room on needs payouts that can receive money (409"
    " `payments_not_enabled`); its seat limit never goes below the seats taken (409"
    " `seat_limit_below_taken`).",
)
async def update_room(
    code: RoomCode,
    body: models.UpdateRoomRequest,
    backends: BackendsDep,
    settings: SettingsDep,
    token: RequiredToken,
) -> models.Room:
    room_id = await backends.room_id(code, token)
    await require_payouts_for_room(backends, room_id, body.back_room)
    updated = await backends.rooms.UpdateRoom(
        body.to_proto(room_id), metadata=auth_metadata(token), timeout=backends.timeout
    )
    # Live clients show the change at once; the change stands even if telling them fails.
    await announce_room_update(backends, room_id, token)
    return models.Room.from_proto(updated.room, settings.public_url)


@router.post(
    "/{code}/close",
    response_model=models.Room,
    responses=error_responses(401, 403, 404),
    summary="Close the room for good (host only): nobody can join or send any more; history stays, "
    "unless `erase` deletes everything",
)
async def close_room(
    code: RoomCode,
    backends: BackendsDep,
    settings: SettingsDep,
    token: RequiredToken,
    body: models.CloseRoomRequest | None = None,
) -> models.Room:
    room_id = await backends.room_id(code, token)
    erase = body is not None and body.erase
    closed = await backends.rooms.CloseRoom(
        rooms_pb2.CloseRoomRequest(room_id=room_id, erase=erase),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    # Everyone in the room (and in its Back Room, closed with it) sees it close at once; it is closed
    # even if telling them fails.
    await announce_room_update(backends, room_id, token)
    if closed.room.back_room.back_room_id:
        await announce_room_update(backends, closed.room.back_room.back_room_id, token)
    return models.Room.from_proto(closed.room, settings.public_url)


@router.get(
    "/{code}/access-code",
    response_model=models.AccessCode,
    responses=error_responses(401, 403, 404, 409),
    summary="A private room's access code, for its host (409 `room_public` for a public room)",
)
async def access_code(code: RoomCode, backends: BackendsDep, token: RequiredToken) -> models.AccessCode:
    room_id = await backends.room_id(code, token)
    shown = await backends.rooms.GetAccessCode(
        rooms_pb2.GetAccessCodeRequest(room_id=room_id),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.AccessCode(access_code=shown.access_code if shown.available else None)


@router.post(
    "/{code}/read",
    response_model=models.ReadPosition,
    responses=error_responses(401, 403, 404),
    summary="Mark the room read up to a seq (room token); the position never moves back",
)
async def mark_read(
    code: RoomCode, body: models.ReadRequest, backends: BackendsDep, token: RequiredToken
) -> models.ReadPosition:
    room_id, _principal = await room_principal(backends, code, token)
    marked = await backends.messaging.MarkRead(
        messaging_pb2.MarkReadRequest(room_id=room_id, seq=body.seq),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.ReadPosition(read_seq=marked.read_seq)


@router.post(
    "/{code}/usernames/suggest",
    response_model=models.UsernameSuggestion,
    responses=error_responses(401, 403, 404, 409, 429),
    summary="Roll the dice: a free generated username, held for you for a few minutes",
)
async def suggest_username(
    code: RoomCode, backends: BackendsDep, token: RequiredToken, ip_hash: ClientIpHash
) -> models.UsernameSuggestion:
    rolled = await backends.rooms.SuggestUsername(
        rooms_pb2.SuggestUsernameRequest(code=code, client_ip_hash=ip_hash),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.UsernameSuggestion(
        username=rolled.username, remaining=rolled.remaining, held_for=rolled.held_for_seconds
    )


@router.get(
    "/{code}/me",
    response_model=models.MyParticipant,
    responses=error_responses(401, 403, 404),
    summary="Your participant in this room (access token); 404 `not_joined` before you join",
)
async def my_participant(
    code: RoomCode, backends: BackendsDep, settings: SettingsDep, token: RequiredToken
) -> models.MyParticipant:
    mine = await backends.rooms.GetMyParticipant(
        rooms_pb2.GetMyParticipantRequest(code=code), metadata=auth_metadata(token), timeout=backends.timeout
    )
    backends.remember_room(mine.room)
    return models.MyParticipant(
        participant=models.Participant.from_proto(mine.participant),
        room=models.Room.from_proto(mine.room, settings.public_url),
    )


@router.get(
    "/{code}/participants",
    response_model=models.ParticipantList,
    responses=error_responses(401, 403, 404),
    summary="Who is in the room, with host and verified badges and who is online now (room token)",
)
async def list_participants(
    code: RoomCode, backends: BackendsDep, token: RequiredToken
) -> models.ParticipantList:
    room_id, _principal = await room_principal(backends, code, token)
    listed, presence = await asyncio.gather(
        backends.rooms.ListParticipants(
            rooms_pb2.ListParticipantsRequest(room_id=room_id), timeout=backends.timeout
        ),
        backends.messaging.GetPresence(
            messaging_pb2.GetPresenceRequest(room_id=room_id),
            metadata=auth_metadata(token),
            timeout=backends.timeout,
        ),
    )
    online = set(presence.online)
    return models.ParticipantList(
        participants=[
            models.RoomMember.from_participant(p, online=p.id in online)
            for p in listed.participants
            if not p.banned
        ],
        presence_version=presence.version,
    )


@router.post(
    "/{code}/join",
    response_model=models.JoinResponse,
    responses=error_responses(401, 403, 404, 409, 429),
    summary="Join under a username; returns the room token",
)
async def join_room(
    code: RoomCode,
    body: models.JoinRequest,
    backends: BackendsDep,
    settings: SettingsDep,
    token: RequiredToken,
    ip_hash: ClientIpHash,
) -> models.JoinResponse:
    joined = await backends.rooms.JoinRoom(
        rooms_pb2.JoinRoomRequest(
            code=code,
            username=body.username or "",
            access_code=body.access_code or "",
            client_ip_hash=ip_hash,
        ),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    backends.remember_room(joined.room)
    return models.JoinResponse(
        participant=models.Participant.from_proto(joined.participant),
        room_token=joined.room_token,
        room_token_expires_in=joined.room_token_expires_in,
        room=models.Room.from_proto(joined.room, settings.public_url),
    )


@router.get(
    "/{code}/messages",
    response_model=models.MessagePage,
    responses=error_responses(401, 403, 404),
    summary="A page of history, newest first (room token)",
)
async def list_messages(
    code: RoomCode,
    backends: BackendsDep,
    token: RequiredToken,
    before_seq: BeforeSeq = None,
    limit: PageLimit = 50,
) -> models.MessagePage:
    room_id, _principal = await room_principal(backends, code, token)
    page = await backends.messaging.ListMessages(
        messaging_pb2.ListMessagesRequest(room_id=room_id, before_seq=before_seq or 0, limit=limit),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.MessagePage(
        messages=[models.Message.from_proto(m) for m in page.messages],
        has_more=page.has_more,
        last_seq=page.last_seq,
        low_seq=page.low_seq,
        board=models.RoomBoard.from_proto(page.board) if page.HasField("board") else None,
        touched=[models.Message.from_proto(m) for m in page.touched],
        floor_seq=max(page.floor_seq, 1),
    )


@router.post(
    "/{code}/messages",
    response_model=models.SendMessageResponse,
    responses={
        201: {"model": models.SendMessageResponse, "description": "Created"},
        **error_responses(401, 403, 404, 409, 429),
    },
    summary="Send a message (room token); idempotent on client_msg_id",
)
async def send_message(
    code: RoomCode,
    body: models.SendMessageRequest,
    response: Response,
    backends: BackendsDep,
    token: RequiredToken,
) -> models.SendMessageResponse:
    room_id, principal = await room_principal(backends, code, token)
    request = messaging_pb2.SendMessageRequest(
        room_id=room_id,
        client_msg_id=body.client_msg_id,
        text=body.text,
        reply_to_seq=body.reply_to_seq or 0,
        media_id=body.media_id or "",
    )
    if backends.sends is None:
        sent = await backends.messaging.SendMessage(
            request, metadata=auth_metadata(token), timeout=backends.timeout
        )
    else:
        # With the process's other sends, in one SendMessages call (the token was verified above).
        try:
            sent = await backends.sends.send(request, principal)
        except SendFailure as failure:
            mapped = failure.mapped()
            raise ApiError(
                mapped.status, mapped.code, mapped.message, retry_after=mapped.retry_after
            ) from None
    # 201 for a new message, 200 when a retry returned the one already stored.
    response.status_code = status.HTTP_201_CREATED if sent.created else status.HTTP_200_OK
    return models.SendMessageResponse(message=models.Message.from_proto(sent.message), created=sent.created)

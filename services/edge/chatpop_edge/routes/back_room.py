"""The Back Room over REST: entering it, its seat holders, and the host removing a seat.

The Back Room is a room of its own. Entering it with a main-room token of its host or of a seat
holder gives a room token for the Back Room; the client then uses the ordinary room routes and the
WebSocket with the Back Room's code and that token. Nobody else finds it: its code answers 404
`room_not_found`, and a main-room token used on it 403 `wrong_room`.

Removing a seat is made at rooms (the holder's Back Room tokens stop working at once), then the
holder's open Back Room sockets close on every edge (4403 `seat_removed`), then, when the host asked
for it, payments refunds the seat's order, and the main room is told that a seat came free. Every
step is idempotent, so a removal answered with 503 is simply sent again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from chatpop.payments.v1 import payments_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_edge import models
from chatpop_edge.back_rooms import disconnect_from_back_room
from chatpop_edge.backends import auth_metadata
from chatpop_edge.deps import BackendsDep, RequiredToken, SettingsDep
from chatpop_edge.errors import error_responses
from chatpop_edge.room_events import announce_room_update
from chatpop_edge.routes.bans import UUID_PATTERN
from chatpop_edge.routes.rooms import RoomCode, room_principal

router = APIRouter(prefix="/api/v1/rooms", tags=["back room"])

ParticipantId = Annotated[
    str,
    Path(
        min_length=36,
        max_length=36,
        pattern=UUID_PATTERN,
        description="The holder's participant id in the main room.",
    ),
]


class Seat(BaseModel):
    participant_id: str = Field(description="The holder's participant in the main room.")
    username: str
    granted_at: datetime | None

    @classmethod
    def from_proto(cls, seat: rooms_pb2.Seat) -> Seat:
        return cls(
            participant_id=seat.participant_id,
            username=seat.username,
            granted_at=models.timestamp(seat.granted_at),
        )


class SeatList(BaseModel):
    seats: list[Seat] = Field(description="Current seat holders, in the order they got their seats.")
    back_room: models.BackRoom


class SeatRemoval(BaseModel):
    seat: Seat
    changed: bool = Field(description="False when the seat had been removed already.")
    refunded: bool = Field(description="The seat's order is being refunded in full (the host asked for it).")
    back_room: models.BackRoom


class BackRoomEntry(BaseModel):
    back_room: models.Room = Field(description="The Back Room: use its `code` with the ordinary room routes.")
    participant: models.Participant = Field(
        description="You in the Back Room (your username in the main room)."
    )
    room_token: str = Field(description="Bearer token for the Back Room's messages and WebSocket.")
    room_token_expires_in: int


@router.post(
    "/{code}/back-room/enter",
    response_model=BackRoomEntry,
    responses=error_responses(401, 403, 404, 409),
    summary="Enter the room's Back Room (main-room token of its host or of a seat holder)",
    description="403 `no_seat` without a seat, 403 `banned` when banned from the main room, 404"
    " `no_back_room` when the room never had one. Entering again returns the same participant with a"
    " fresh token.",
)
async def enter_back_room(
    code: RoomCode, backends: BackendsDep, settings: SettingsDep, token: RequiredToken
) -> BackRoomEntry:
    room_id, _principal = await room_principal(backends, code, token)
    entered = await backends.rooms.EnterBackRoom(
        rooms_pb2.EnterBackRoomRequest(room_id=room_id),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    backends.remember_room(entered.back_room)
    return BackRoomEntry(
        back_room=models.Room.from_proto(entered.back_room, settings.public_url),
        participant=models.Participant.from_proto(entered.participant),
        room_token=entered.room_token,
        room_token_expires_in=entered.room_token_expires_in,
    )


@router.get(
    "/{code}/back-room/seats",
    response_model=SeatList,
    responses=error_responses(401, 403, 404),
    summary="Who holds a seat in the Back Room (the host, or a holder; access token or main-room token)",
)
async def list_seats(code: RoomCode, backends: BackendsDep, token: RequiredToken) -> SeatList:
    room_id = await backends.room_id(code, token)
    listed = await backends.rooms.ListSeats(
        rooms_pb2.ListSeatsRequest(room_id=room_id), metadata=auth_metadata(token), timeout=backends.timeout
    )
    return SeatList(
        seats=[Seat.from_proto(seat) for seat in listed.seats],
        back_room=models.BackRoom.from_proto(listed.back_room),
    )


@router.delete(
    "/{code}/back-room/seats/{participant_id}",
    response_model=SeatRemoval,
    responses=error_responses(401, 403, 404, 409, 503),
    summary="Remove a holder's seat (host only); their Back Room closes for them at once",
    description="With `refund=true` the seat's order is refunded in full; without, the money stays (a"
    " removal for abuse). The holder's open Back Room sockets close with 4403 `seat_removed` and their"
    " Back Room tokens answer 403 `seat_removed`. Idempotent: send it again after a 503.",
)
async def remove_seat(
    code: RoomCode,
    participant_id: ParticipantId,
    backends: BackendsDep,
    token: RequiredToken,
    refund: Annotated[bool, Query(description="Refund the seat's order in full.")] = False,
) -> SeatRemoval:
    room_id = await backends.room_id(code, token)
    removed = await backends.rooms.RemoveSeat(
        rooms_pb2.RemoveSeatRequest(room_id=room_id, participant_id=participant_id, refund=refund),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    await disconnect_from_back_room(
        backends, removed.back_room.back_room_id, removed.back_room_participant_id, token
    )
    refunded = False
    if removed.refund:
        await backends.payments.RefundSeat(
            payments_pb2.RefundSeatRequest(room_id=room_id, order_id=removed.seat.order_id),
            metadata=auth_metadata(token),
            timeout=backends.timeout,
        )
        refunded = True
    if removed.changed:
        # Everyone in the main room sees a seat come free; it is free even if telling them fails.
        await announce_room_update(backends, room_id, token)
    return SeatRemoval(
        seat=Seat.from_proto(removed.seat),
        changed=removed.changed,
        refunded=refunded,
        back_room=models.BackRoom.from_proto(removed.back_room),
    )

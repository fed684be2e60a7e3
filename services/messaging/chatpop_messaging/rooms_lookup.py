"""Asking rooms about a room: the one lookup several capabilities share, and how its failures read."""

from __future__ import annotations

import grpc

from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.errors import NotFound, Unavailable

# Seconds a lookup at rooms may take.
LOOKUP_TIMEOUT = 5.0


async def get_room(stub: rooms_pb2_grpc.RoomsServiceStub, room_id: str) -> rooms_pb2.Room:
    """The room by id; NotFound when rooms has no such room, Unavailable when rooms cannot answer."""
    try:
        response = await stub.GetRoom(rooms_pb2.GetRoomRequest(room_id=room_id), timeout=LOOKUP_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise NotFound("There is no such room.", code="room_not_found") from exc
        raise Unavailable("Rooms could not be reached; try again.", code="rooms_unavailable") from exc
    room: rooms_pb2.Room = response.room
    return room

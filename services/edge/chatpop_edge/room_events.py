"""Telling a room's live clients that the room itself changed (settings edited, room closed).

Routes that change a room call `announce_room_update` after rooms accepted the change. messaging
reads the room from rooms itself and sends every socket of the room, on every edge process, a
`room_updated` frame. The change is already saved, so a failed announcement is logged and never
fails the request: clients also read the room again after every reconnect.
"""

from __future__ import annotations

import logging

import grpc

from chatpop.messaging.v1 import messaging_pb2
from chatpop_edge.backends import Backends, auth_metadata

log = logging.getLogger(__name__)


async def announce_room_update(backends: Backends, room_id: str, token: str) -> bool:
    """Announce the room's current state with the host's token; False (logged) when it failed."""
    try:
        await backends.messaging.AnnounceRoomUpdate(
            messaging_pb2.AnnounceRoomUpdateRequest(room_id=room_id),
            metadata=auth_metadata(token),
            timeout=backends.timeout,
        )
    except grpc.aio.AioRpcError as exc:
        log.warning(
            "announcing a room update failed",
            extra={"room_id": room_id, "grpc_code": exc.code().name, "details": exc.details()},
        )
        return False
    return True

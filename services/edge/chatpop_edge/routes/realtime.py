"""The room WebSocket: `/ws/v1/rooms/{code}?token=<room_token>[&after_seq=N]`."""

from __future__ import annotations

import logging
import re

import grpc
from fastapi import APIRouter, WebSocket
from starlette.datastructures import Headers, QueryParams
from starlette.types import Scope

from chatpop_common.errors import ServiceError
from chatpop_edge import models
from chatpop_edge.backends import Backends
from chatpop_edge.errors import map_rpc_error
from chatpop_edge.metrics import WS_CONNECTIONS
from chatpop_edge.realtime.frames import FrameError, parse_after_seq
from chatpop_edge.realtime.hub import CLOSE_TAKEN_DOWN, TAKEN_DOWN, RoomHub
from chatpop_edge.realtime.session import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_INVALID_TOKEN,
    CLOSE_NOT_FOUND,
    CLOSE_TRY_AGAIN,
    SocketSession,
    close_code_for,
)
from chatpop_edge.routes.mutes import load_mutes
from chatpop_edge.settings import EdgeSettings

router = APIRouter()
log = logging.getLogger(__name__)

_ROOM_CODE = re.compile(models.ROOM_CODE_PATTERN)


_SOCKET_PATH = re.compile(r"/ws/v1/rooms/([^/]+)")


def room_code_of(scope: Scope) -> str | None:
    """The room code when a WebSocket scope is the room socket's path (as the route matches it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    match = _SOCKET_PATH.fullmatch(path)
    return match.group(1) if match else None


def _socket_token(websocket: WebSocket, query: QueryParams) -> str | None:
    """Browsers cannot set headers on a WebSocket, so the token comes in the query string."""
    token = query.get("token", "").strip()
    if token:
        return token
    scheme, _, value = Headers(scope=websocket.scope).get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _forget_upgrade_request(scope: Scope) -> None:
    """The upgrade request's headers and query (the token among them) were read; an open socket
    would keep them (~2 KiB) for nothing."""
    scope["headers"] = []
    scope["query_string"] = b""


@router.websocket("/ws/v1/rooms/{code}")
async def room_socket(websocket: WebSocket, code: str) -> None:
    state = websocket.app.state
    backends: Backends = state.backends
    settings: EdgeSettings = state.settings
    hub: RoomHub = state.hub
    # Accept first: a close before the handshake reaches browsers as a bare 403 with no code.
    await websocket.accept()

    # Read from the scope, not through websocket.query_params/.headers, which would keep them.
    query = QueryParams(websocket.scope["query_string"])
    token = _socket_token(websocket, query)
    if token is None:
        await websocket.close(CLOSE_INVALID_TOKEN, "unauthenticated")
        return
    if len(token) > models.MAX_TOKEN_LENGTH:
        await websocket.close(CLOSE_INVALID_TOKEN, "invalid_token")
        return
    if len(code) > models.ROOM_CODE_MAX_LENGTH or not _ROOM_CODE.fullmatch(code):
        # No room has such a code.
        await websocket.close(CLOSE_NOT_FOUND, "room_not_found")
        return
    resume_after: int | None = None
    raw_after = query.get("after_seq")
    if raw_after is not None:
        try:
            resume_after = parse_after_seq(raw_after)
        except FrameError as exc:
            await websocket.close(CLOSE_BAD_REQUEST, exc.code)
            return
    try:
        principal = await backends.verifier.verify(token)
    except ServiceError as exc:
        await websocket.close(CLOSE_INVALID_TOKEN, exc.code)
        return
    except grpc.aio.AioRpcError:
        await websocket.close(CLOSE_TRY_AGAIN, "service_unavailable")
        return
    if principal.token_type != "room":
        await websocket.close(CLOSE_INVALID_TOKEN, "invalid_token")
        return
    try:
        room_id = await backends.room_id(code, token)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            await websocket.close(CLOSE_NOT_FOUND, "room_not_found")
        else:
            await websocket.close(CLOSE_TRY_AGAIN, "service_unavailable")
        return
    if principal.room_id != room_id:
        await websocket.close(CLOSE_FORBIDDEN, "wrong_room")
        return
    try:
        await backends.standing.check(principal)
    except ServiceError as exc:
        # `banned` or `seat_removed` (4403), a room taken down (4410), or a token from before a lifted
        # ban (4401: join again for a new one).
        close_code = {
            "banned": CLOSE_FORBIDDEN,
            "seat_removed": CLOSE_FORBIDDEN,
            TAKEN_DOWN: CLOSE_TAKEN_DOWN,
        }.get(exc.code, CLOSE_INVALID_TOKEN)
        await websocket.close(close_code, exc.code)
        return
    except grpc.aio.AioRpcError:
        await websocket.close(CLOSE_TRY_AGAIN, "service_unavailable")
        return

    try:
        muted = await load_mutes(backends, room_id, token)
    except grpc.aio.AioRpcError as exc:
        await websocket.close(close_code_for(exc), map_rpc_error(exc).code)
        return

    del query
    _forget_upgrade_request(websocket.scope)
    session = SocketSession(
        websocket, room_id=room_id, principal=principal, token=token, backends=backends, settings=settings
    )
    session.set_mutes(muted)
    WS_CONNECTIONS.inc()
    try:
        await session.run(hub, resume_after)
    finally:
        WS_CONNECTIONS.dec()

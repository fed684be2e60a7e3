"""One authorised call: the CLI's service token in the metadata, the operator's deadline, errors named."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.admin.connection import Services, UsageError

Response = TypeVar("Response")


class CallFailed(Exception):
    """A call the services refused or could not answer; `what` names it for the operator."""

    def __init__(self, error: grpc.aio.AioRpcError, what: str) -> None:
        super().__init__(f"{what}: {error.code().name} {error.details()}")
        self.error = error
        self.what = what


async def call(
    services: Services,
    method: Callable[..., Awaitable[Response]],
    request: Any,
    what: str,
) -> Response:
    metadata: Sequence[tuple[str, str]]
    try:
        metadata = await services.metadata()
    except grpc.aio.AioRpcError as exc:
        raise CallFailed(exc, "IssueServiceToken") from None
    try:
        return await method(request, metadata=metadata, timeout=services.settings.timeout)
    except grpc.aio.AioRpcError as exc:
        raise CallFailed(exc, what) from None


async def room_id(services: Services, room: str) -> str:
    """A room's id from its id or its code (rooms GetRoom by code)."""
    text = room.strip()
    if not text:
        raise UsageError("a room id or code is required")
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    response = await call(services, services.rooms.GetRoom, rooms_pb2.GetRoomRequest(code=text), "GetRoom")
    return str(response.room.id)

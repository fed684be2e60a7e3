"""rooms' ListRetentionPolicies (messaging's retention job asks it) against the real rooms and identity
servers of test_rooms_service.py: each named room's retention, closed and erased; unknown ids left out;
only messaging's or the CLI's service credential."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from test_rooms_service import Platform, _create, _error, platform, signing_key

from chatpop.identity.v1 import identity_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.clients import bearer
from chatpop_common.service_auth import service_proof
from tests.integration.identity_server import SERVICE_TOKEN_SECRET

__all__ = ["platform", "signing_key"]  # the module-scoped fixtures, shared with test_rooms_service.py


async def as_service(platform: Platform, service: str) -> object:
    issued_at = int(time.time())
    response = await platform.identity.IssueServiceToken(
        identity_pb2.IssueServiceTokenRequest(
            service=service,
            issued_at=issued_at,
            proof=service_proof(SERVICE_TOKEN_SECRET, service, issued_at),
        ),
        timeout=5,
    )
    return bearer(response.service_token)


async def policies(platform: Platform, room_ids: list[str], metadata: object) -> list[tuple[str, int, bool]]:
    response = await platform.rooms.ListRetentionPolicies(
        rooms_pb2.ListRetentionPoliciesRequest(room_ids=room_ids), metadata=metadata, timeout=10
    )
    return sorted((p.room_id, p.retention_days, p.closed) for p in response.policies)


async def test_each_known_room_says_its_retention(platform: Platform) -> None:
    host = await platform.anonymous()
    kept = await _create(platform, host, retention_days=0)
    month = await _create(platform, host)
    week = await _create(platform, host, retention_days=7)
    await platform.rooms.CloseRoom(rooms_pb2.CloseRoomRequest(room_id=week.id), metadata=host.md, timeout=10)
    messaging = await as_service(platform, "messaging")
    asked = [kept.id, month.id, week.id, str(uuid.uuid4()), "not-a-room-id"]
    assert await policies(platform, asked, messaging) == sorted(
        [(kept.id, 0, False), (month.id, 30, False), (week.id, 7, True)]
    )
    # The admin CLI may ask too; a change of retention shows at once.
    await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(room_id=month.id, retention_days=2), metadata=host.md, timeout=10
    )
    assert await policies(platform, [month.id], await as_service(platform, "cli")) == [(month.id, 2, False)]


async def test_only_messaging_and_the_cli_may_ask(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _create(platform, host)
    for metadata in (host.md, await as_service(platform, "payments")):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await policies(platform, [room.id], metadata)
        assert _error(raised)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "forbidden")
    messaging = await as_service(platform, "messaging")
    for room_ids in ([], [str(uuid.uuid4()) for _ in range(1001)]):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await policies(platform, room_ids, messaging)
        assert _error(raised)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_room_ids")

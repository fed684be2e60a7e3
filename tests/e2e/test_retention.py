"""Retention through the edge: a room's oldest messages are deleted for good (made old by backdating
them in Postgres, then deleted by RunRetention with the admin CLI's service credential); a client
resuming from below the floor is told `trimmed` and gets the kept messages, with no reload; history
pages end at the floor and say so."""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc
import httpx

from chatpop.identity.v1 import identity_pb2_grpc
from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop_common.service_auth import ServiceCredentials
from tests.e2e.chat import ChatSocket, bearer, documented, join, open_room
from tests.e2e.conftest import Stack


async def send_and_ack(socket: ChatSocket, text: str) -> int:
    msg_id = await socket.send(text)
    frame = await socket.ack_or_error(msg_id)
    assert frame["type"] == "ack", frame
    return int(frame["seq"])


async def run_retention(stack: Stack, room_id: str) -> messaging_pb2.RunRetentionResponse:
    secret = stack.specs["messaging"].env["SERVICE_TOKEN_SECRET"]
    async with (
        grpc.aio.insecure_channel(stack.address("identity")) as identity_channel,
        grpc.aio.insecure_channel(stack.address("messaging")) as messaging_channel,
    ):
        cli = ServiceCredentials(identity_pb2_grpc.IdentityServiceStub(identity_channel), "cli", secret)
        response: messaging_pb2.RunRetentionResponse = await messaging_pb2_grpc.MessagingServiceStub(
            messaging_channel
        ).RunRetention(
            messaging_pb2.RunRetentionRequest(room_id=room_id), metadata=await cli.metadata(), timeout=30
        )
        return response


async def test_a_client_resuming_below_the_floor_is_told_trimmed_and_gets_the_kept_messages(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    room = await open_room(client, retention_days=1)
    host = await join(client, room.code, "KeeperHost", token=room.host_token)
    socket = await ChatSocket.open(stack.ws_url, room.code, host["room_token"])
    try:
        sent = [await send_and_ack(socket, f"message {n}") for n in range(7)]
    finally:
        await socket.close()
    old, kept = sent[:4], sent[4:]

    connection = await asyncpg.connect(stack.database_url, server_settings={"search_path": "messaging"})
    try:
        await connection.execute(
            "UPDATE messages SET created_at = now() - interval '2 days' WHERE room_id = $1 AND seq <= $2",
            room.id,
            old[-1],
        )
        result = await run_retention(stack, room.id)
        assert [(r.room_id, r.entries, r.floor_seq, r.retention_days) for r in result.rooms] == [
            (room.id, len(old), kept[0], 1)
        ]
        rows = await connection.fetch("SELECT seq FROM messages WHERE room_id = $1 ORDER BY seq", room.id)
        assert [row["seq"] for row in rows] == kept
    finally:
        await connection.close()

    # A client that saw only the first message comes back: `trimmed`, then the rest, no reload.
    resumed = await ChatSocket.open(stack.ws_url, room.code, host["room_token"], after_seq=old[0])
    try:
        await resumed.wait_for_seq(kept[-1])
        types = [frame["type"] for frame in resumed.frames]
        assert "reload" not in types
        trimmed = [frame for frame in resumed.frames if frame["type"] == "trimmed"]
        assert trimmed == [{"type": "trimmed", "floor_seq": kept[0]}]
        assert types.index("trimmed") < types.index("message")
        assert resumed.seqs() == kept
        # Live again: a new message follows.
        latest = await send_and_ack(resumed, "after the floor")
        await resumed.wait_for_seq(latest)
        assert resumed.seqs() == [*kept, latest]
    finally:
        await resumed.close()

    # A client that was up to date resumes with no `trimmed` at all.
    current = await ChatSocket.open(stack.ws_url, room.code, host["room_token"], after_seq=kept[-1])
    try:
        await current.wait_for_seq(latest)
        assert "trimmed" not in [frame["type"] for frame in current.frames]
        assert current.seqs() == [latest]
    finally:
        await current.close()

    # History ends at the floor and says where it is.
    response = await client.get(
        f"/api/v1/rooms/{room.code}/messages", params={"limit": 2}, headers=bearer(host["room_token"])
    )
    page = documented(openapi, "GET", "/api/v1/rooms/{code}/messages", response)
    assert page["floor_seq"] == kept[0] and page["has_more"]
    response = await client.get(
        f"/api/v1/rooms/{room.code}/messages",
        params={"limit": 50, "before_seq": page["low_seq"]},
        headers=bearer(host["room_token"]),
    )
    older = documented(openapi, "GET", "/api/v1/rooms/{code}/messages", response)
    assert older["floor_seq"] == kept[0] and not older["has_more"]
    assert sorted(m["seq"] for m in [*page["messages"], *older["messages"]]) == [*kept, latest]

"""Messages that carry media: the frames and history show the record, and every referencing rule is
enforced over the WebSocket and REST alike."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from tests import media_samples as samples
from tests.e2e.chat import ChatSocket, bearer, documented, history, new_id
from tests.e2e.conftest import Stack
from tests.e2e.media import MediaRoom, media_room, uploaded

SEND_TEMPLATE = "/api/v1/rooms/{code}/messages"
Sender = Callable[[MediaRoom, str, dict[str, Any]], Awaitable[tuple[int, str]]]


async def _photo(client: httpx.AsyncClient, room: MediaRoom, room_token: str, tmp_path: Path) -> str:
    body = await uploaded(
        client, room.code, room_token, "photo", samples.webp_photo(tmp_path / f"{new_id()}.webp")
    )
    return str(body["media"]["id"])


async def test_a_message_with_media_reaches_the_room_and_history_with_its_record(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any], tmp_path: Path
) -> None:
    room = await media_room(client)
    media_id = await _photo(client, room, room.host.room_token, tmp_path)
    watcher = await ChatSocket.open(stack.ws_url, room.code, room.guest.room_token)
    sender = await ChatSocket.open(stack.ws_url, room.code, room.host.room_token)
    try:
        sent = await sender.send("", media_id=media_id)
        ack = await sender.wait_for(lambda f: f["type"] == "ack" and f["client_msg_id"] == sent)
        frame = await watcher.wait_for(lambda f: f["type"] == "message" and f["seq"] == ack["seq"])
    finally:
        await sender.close()
        await watcher.close()
    media = frame["media"]
    assert media["id"] == media_id
    assert (media["kind"], media["state"]) == ("photo", "ready")
    assert media["content_type"].startswith("image/")
    assert (media["width"], media["height"]) == (40, 30)
    assert media["duration_ms"] is None
    assert sorted(media["variants"]) == ["full", "thumb"]
    assert frame["text"] == ""
    assert not any("url" in key for key in media)

    # REST: text with media; the answer and history carry the same record.
    other = await _photo(client, room, room.guest.room_token, tmp_path)
    response = await client.post(
        f"/api/v1/rooms/{room.code}/messages",
        json={"client_msg_id": new_id(), "text": "look", "media_id": other},
        headers=bearer(room.guest.room_token),
    )
    assert response.status_code == 201, response.text
    body = documented(openapi, "POST", SEND_TEMPLATE, response)
    assert body["message"]["media"]["id"] == other
    listed = {m["seq"]: m for m in await history(client, room.code, room.host.room_token)}
    assert listed[ack["seq"]]["media"] == media
    assert listed[body["message"]["seq"]]["media"]["id"] == other
    # A message without media says so.
    plain = await client.post(
        f"/api/v1/rooms/{room.code}/messages",
        json={"client_msg_id": new_id(), "text": "plain"},
        headers=bearer(room.guest.room_token),
    )
    assert plain.json()["message"]["media"] is None


async def _send_ws(stack: Stack, room: MediaRoom, room_token: str, extra: dict[str, Any]) -> dict[str, Any]:
    socket = await ChatSocket.open(stack.ws_url, room.code, room_token)
    try:
        sent = await socket.send(extra.pop("text", ""), **extra)
        return await socket.wait_for(
            lambda f: f["type"] in ("ack", "error") and f.get("client_msg_id") == sent
        )
    finally:
        await socket.close()


async def _send_rest(
    client: httpx.AsyncClient, room: MediaRoom, room_token: str, extra: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        f"/api/v1/rooms/{room.code}/messages",
        json={"client_msg_id": new_id(), "text": "", **extra},
        headers=bearer(room_token),
    )


async def _assert_refused(
    stack: Stack,
    client: httpx.AsyncClient,
    openapi: dict[str, Any],
    room: MediaRoom,
    room_token: str,
    extra: dict[str, Any],
    status: int,
    code: str,
) -> None:
    frame = await _send_ws(stack, room, room_token, dict(extra))
    assert (frame["type"], frame["code"]) == ("error", code), frame
    assert frame["message"]
    response = await _send_rest(client, room, room_token, dict(extra))
    assert response.status_code == status, response.text
    assert documented(openapi, "POST", SEND_TEMPLATE, response)["error"]["code"] == code


async def test_every_referencing_rule_is_enforced_over_the_socket_and_rest(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any], tmp_path: Path
) -> None:
    room = await media_room(client)
    other_room = await media_room(client)

    # Media of another room (its own participant's upload there).
    elsewhere = await _photo(client, other_room, other_room.host.room_token, tmp_path)
    await _assert_refused(
        stack, client, openapi, room, room.host.room_token, {"media_id": elsewhere}, 403, "media_not_in_room"
    )
    # An outside link, or an inline media object, in place of an id.
    await _assert_refused(
        stack,
        client,
        openapi,
        room,
        room.host.room_token,
        {"text": "see", "media_url": "https://example.com/cat.jpg"},
        422,
        "media_reference_invalid",
    )
    await _assert_refused(
        stack,
        client,
        openapi,
        room,
        room.host.room_token,
        {"text": "see", "media": {"id": elsewhere, "kind": "photo"}},
        422,
        "media_reference_invalid",
    )
    # Not an id at all; an id nobody uploaded.
    await _assert_refused(
        stack,
        client,
        openapi,
        room,
        room.host.room_token,
        {"media_id": "not-a-uuid"},
        422,
        "media_reference_invalid",
    )
    await _assert_refused(
        stack,
        client,
        openapi,
        room,
        room.host.room_token,
        {"media_id": str(uuid.uuid4())},
        404,
        "media_not_found",
    )
    # Another participant's upload.
    guests = await _photo(client, room, room.guest.room_token, tmp_path)
    await _assert_refused(
        stack, client, openapi, room, room.host.room_token, {"media_id": guests}, 403, "media_not_yours"
    )
    # Pending (opened, never completed) and abandoned records.
    async with grpc.aio.insecure_channel(stack.address("messaging")) as channel:
        messaging = messaging_pb2_grpc.MessagingServiceStub(channel)
        metadata = (("authorization", f"Bearer {room.host.room_token}"),)
        pending = await messaging.CreateMedia(
            messaging_pb2.CreateMediaRequest(room_id=room.room_id, kind=messaging_pb2.MEDIA_KIND_PHOTO),
            metadata=metadata,
        )
        abandoned = await _photo(client, room, room.host.room_token, tmp_path)
        await messaging.AbandonMedia(
            messaging_pb2.AbandonMediaRequest(room_id=room.room_id, media_id=abandoned), metadata=metadata
        )
    for media_id in (pending.media.id, abandoned):
        await _assert_refused(
            stack, client, openapi, room, room.host.room_token, {"media_id": media_id}, 409, "media_not_ready"
        )
    # Text may be empty only with media.
    frame = await _send_ws(stack, room, room.host.room_token, {})
    assert (frame["type"], frame["code"]) == ("error", "invalid_frame")
    empty = await _send_rest(client, room, room.host.room_token, {})
    assert (empty.status_code, empty.json()["error"]["code"]) == (422, "invalid_request")


@pytest.mark.parametrize("via", ["ws", "rest"])
async def test_media_already_on_a_message_cannot_go_on_another(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path, via: str
) -> None:
    room = await media_room(client)
    media_id = await _photo(client, room, room.host.room_token, tmp_path)
    first = await _send_rest(client, room, room.host.room_token, {"media_id": media_id})
    assert first.status_code == 201, first.text
    if via == "ws":
        frame = await _send_ws(stack, room, room.host.room_token, {"media_id": media_id})
        assert (frame["type"], frame["code"]) == ("error", "media_in_use")
    else:
        again = await _send_rest(client, room, room.host.room_token, {"media_id": media_id})
        assert (again.status_code, again.json()["error"]["code"]) == (409, "media_in_use")

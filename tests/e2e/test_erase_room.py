"""Closing a room with "delete everything", through the edge: the room reads closed and erased, its
history is empty, its media objects are gone from S3, and the raw tables and Redis hold nothing of it
(no data key is left either, so nothing a copy kept could be decrypted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from tests import media_samples as samples
from tests.e2e.chat import ChatSocket, bearer, documented, history, new_id
from tests.e2e.conftest import Stack
from tests.e2e.media import eventually, media_room, room_objects, uploaded

CLOSE = "/api/v1/rooms/{code}/close"
# Every messaging table that names a room.
ROOM_TABLES = (
    "messages",
    "reactions",
    "reports",
    "pins",
    "paid_pins",
    "paid_orders",
    "mutes",
    "read_positions",
    "room_boards",
    "media",
    "room_counters",
    "room_keys",
)


async def _raw_rows(stack: Stack, room_id: str) -> dict[str, int]:
    connection = await asyncpg.connect(stack.database_url)
    try:
        return {
            table: int(
                await connection.fetchval(
                    f"SELECT count(*) FROM messaging.{table} WHERE room_id = $1",
                    room_id,
                )
            )
            for table in ROOM_TABLES
        }
    finally:
        await connection.close()


async def _redis_keys(stack: Stack, room_id: str) -> list[bytes]:
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        return [key async for key in client.scan_iter(match=f"msg:{{{room_id}}}:*")]
    finally:
        await client.aclose()


async def test_closing_with_delete_everything_leaves_nothing_of_the_room(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any], tmp_path: Path
) -> None:
    room = await media_room(client)
    marker = f"erase-me-{new_id()}"
    photo = await uploaded(
        client, room.code, room.guest.room_token, "photo", samples.webp_photo(tmp_path / f"{new_id()}.webp")
    )
    guest = await ChatSocket.open(stack.ws_url, room.code, room.guest.room_token)
    try:
        sent = await guest.send(f"{marker} with a photo", media_id=photo["media"]["id"])
        await guest.ack_or_error(sent)
        sent = await guest.send(f"{marker} plain")
        ack = await guest.ack_or_error(sent)
        assert ack["type"] == "ack", ack
    finally:
        await guest.close()
    assert await room_objects(stack, room.room_id), "the photo is stored"
    assert (await _raw_rows(stack, room.room_id))["messages"] >= 2
    assert await _redis_keys(stack, room.room_id), "the hot cache holds the room"

    # Only the host may; an unknown field is refused.
    refused = await client.post(
        f"/api/v1/rooms/{room.code}/close", json={"erase": True}, headers=bearer(room.guest.token)
    )
    assert refused.status_code == 403, refused.text
    typo = await client.post(
        f"/api/v1/rooms/{room.code}/close", json={"erase_all": True}, headers=bearer(room.host.token)
    )
    assert typo.status_code == 422, typo.text

    closed = await client.post(
        f"/api/v1/rooms/{room.code}/close", json={"erase": True}, headers=bearer(room.host.token)
    )
    assert closed.status_code == 200, closed.text
    body = documented(openapi, "POST", CLOSE, closed)
    assert (body["closed"], body["erased"]) == (True, True)
    fetched = await client.get(f"/api/v1/rooms/{room.code}")
    assert (fetched.json()["closed"], fetched.json()["erased"]) == (True, True)

    async def nothing_left() -> bool:
        return await _raw_rows(stack, room.room_id) == dict.fromkeys(ROOM_TABLES, 0)

    await eventually(nothing_left, what="messaging deleted every row of the room")

    async def no_objects() -> bool:
        return not await room_objects(stack, room.room_id)

    await eventually(no_objects, what="the room's media objects are gone from S3")
    assert await _redis_keys(stack, room.room_id) == []
    assert await history(client, room.code, room.host.room_token) == []
    connection = await asyncpg.connect(stack.database_url)
    try:
        assert await connection.fetchval(
            "SELECT count(*) FROM messaging.erased_rooms WHERE room_id = $1", room.room_id
        )
        delivered = await connection.fetchval(
            "SELECT delivered_at IS NOT NULL FROM rooms.outbox WHERE topic = 'room.erase' AND key = $1",
            room.room_id,
        )
        assert delivered
    finally:
        await connection.close()


async def test_closing_without_erase_keeps_the_history(stack: Stack, client: httpx.AsyncClient) -> None:
    room = await media_room(client)
    guest = await ChatSocket.open(stack.ws_url, room.code, room.guest.room_token)
    try:
        ack = await guest.ack_or_error(await guest.send("still here after closing"))
        assert ack["type"] == "ack"
    finally:
        await guest.close()
    closed = await client.post(f"/api/v1/rooms/{room.code}/close", headers=bearer(room.host.token))
    assert closed.status_code == 200 and closed.json()["erased"] is False
    assert [m["text"] for m in await history(client, room.code, room.host.room_token)] == [
        "still here after closing"
    ]

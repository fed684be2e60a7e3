"""The live room across two edge processes: typing and presence reach the sockets of the other edge,
presence survives an edge killed without a goodbye, idle sockets are closed, and a host's change
reaches every socket as `room_updated`, with the room as the REST API shows it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.e2e.chat import ChatSocket, Frame, anonymous, bearer, join, open_room
from tests.e2e.conftest import SECOND_EDGE, SECOND_EDGE_ENV, Stack

PRESENCE_TTL = float(SECOND_EDGE_ENV["PRESENCE_TTL"])
IDLE_TIMEOUT = float(SECOND_EDGE_ENV["WS_IDLE_TIMEOUT"])


def ws(base_url: str) -> str:
    return base_url.replace("http://", "ws://")


async def warm(sockets: list[ChatSocket], http: httpx.AsyncClient, code: str, token: str) -> None:
    """A message through the room reaches every socket live: each edge's stream of the room is open,
    so signals published from now on reach them too."""
    sent = await http.post(
        f"/api/v1/rooms/{code}/messages",
        json={"client_msg_id": f"warm-{time.monotonic_ns()}", "text": "warming up"},
        headers=bearer(token),
    )
    assert sent.status_code == 201, sent.text
    for socket in sockets:
        await socket.wait_for_seq(sent.json()["message"]["seq"])


async def snapshot(base_url: str, code: str, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.get(f"/api/v1/rooms/{code}/participants", headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def online(body: dict[str, Any]) -> set[str]:
    return {p["username"] for p in body["participants"] if p["online"]}


def presence_frames(socket: ChatSocket) -> list[Frame]:
    return [f for f in socket.frames if f["type"] == "presence"]


async def test_typing_and_presence_cross_edge_processes(stack: Stack, client: httpx.AsyncClient) -> None:
    edge_2 = await stack.asecond_edge()
    room = await open_room(client)
    alice = await join(client, room.code, "AliceEdgeOne")
    bob = await join(client, room.code, "BobbyEdgeTwo")
    on_1 = await ChatSocket.open(stack.ws_url, room.code, alice["room_token"])
    on_2 = await ChatSocket.open(ws(edge_2), room.code, bob["room_token"])
    try:
        await warm([on_1, on_2], client, room.code, alice["room_token"])
        # Both are online, whichever edge is asked.
        for base in (stack.base_url, edge_2):
            assert online(await snapshot(base, room.code, alice["room_token"])) == {
                "AliceEdgeOne",
                "BobbyEdgeTwo",
            }

        # Typing on one edge is heard on the other, with the typist's name, never by the typist.
        await on_2.send_json({"type": "typing"})
        typing = await on_1.wait_for(lambda f: f["type"] == "typing")
        assert typing == {
            "type": "typing",
            "participant_id": bob["participant"]["id"],
            "username": "BobbyEdgeTwo",
        }
        await on_1.send_json({"type": "typing"})
        heard = await on_2.wait_for(lambda f: f["type"] == "typing")
        assert heard["username"] == "AliceEdgeOne"
        assert not [f for f in on_2.frames if f["type"] == "typing" and f["username"] == "BobbyEdgeTwo"]

        # Carol arrives on edge 2 and leaves: Alice, on edge 1, sees both, in version order.
        before = await snapshot(stack.base_url, room.code, alice["room_token"])
        carol = await join(client, room.code, "CarolEdgeTwo")
        on_carol = await ChatSocket.open(ws(edge_2), room.code, carol["room_token"])
        seen = before["presence_version"]
        came = await on_1.wait_for(lambda f: f["type"] == "presence" and f["version"] > seen)
        assert came == {
            "type": "presence",
            "online": [carol["participant"]["id"]],
            "offline": [],
            "version": before["presence_version"] + 1,
        }
        await on_carol.close()
        went = await on_1.wait_for(lambda f: f["type"] == "presence" and f["version"] > seen + 1)
        assert (went["offline"], went["version"]) == ([carol["participant"]["id"]], came["version"] + 1)
        after = await snapshot(edge_2, room.code, bob["room_token"])
        assert after["presence_version"] == went["version"]
        assert online(after) == {"AliceEdgeOne", "BobbyEdgeTwo"}
        assert {p["username"]: p["online"] for p in after["participants"]}["CarolEdgeTwo"] is False
    finally:
        await on_1.close()
        await on_2.close()


async def test_a_killed_edge_takes_its_people_offline_after_its_ttl(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    edge_2 = await stack.asecond_edge()
    room = await open_room(client)
    alice = await join(client, room.code, "AliceStays")
    dora = await join(client, room.code, "DoraOnDoomed")
    on_1 = await ChatSocket.open(stack.ws_url, room.code, alice["room_token"])
    on_2 = await ChatSocket.open(ws(edge_2), room.code, dora["room_token"])
    try:
        await warm([on_1, on_2], client, room.code, alice["room_token"])
        assert online(await snapshot(stack.base_url, room.code, alice["room_token"])) == {
            "AliceStays",
            "DoraOnDoomed",
        }
        await stack.akill(SECOND_EDGE)
        killed_at = time.monotonic()
        # No goodbye came; once the dead edge's record is past its ttl, Dora is offline, and Alice's
        # socket is told.
        went = await on_1.wait_for(
            lambda f: f["type"] == "presence" and dora["participant"]["id"] in f["offline"],
            timeout=PRESENCE_TTL + 30,
        )
        assert time.monotonic() - killed_at >= PRESENCE_TTL - 2
        body = await snapshot(stack.base_url, room.code, alice["room_token"])
        assert online(body) == {"AliceStays"}
        assert body["presence_version"] >= went["version"]
    finally:
        await on_1.close()
        await on_2.close()
        await stack.astart(SECOND_EDGE)


async def test_a_silent_socket_is_closed_and_goes_offline(stack: Stack, client: httpx.AsyncClient) -> None:
    edge_2 = await stack.asecond_edge()
    room = await open_room(client)
    quiet = await join(client, room.code, "QuietOnEdge")
    chatty = await join(client, room.code, "ChattyOnEdge")
    silent = await ChatSocket.open(ws(edge_2), room.code, quiet["room_token"])
    talker = await ChatSocket.open(ws(edge_2), room.code, chatty["room_token"])

    async def keep_pinging() -> None:
        while True:
            await talker.send_json({"type": "ping"})
            await asyncio.sleep(1)

    pinger = asyncio.create_task(keep_pinging())
    try:
        async with talker.changed:
            await asyncio.wait_for(talker.changed.wait_for(lambda: silent.closed), IDLE_TIMEOUT + 20)
        assert (silent.ws.close_code, silent.ws.close_reason) == (4408, "idle")
        assert not talker.closed
        deadline = time.monotonic() + 20
        while online(await snapshot(edge_2, room.code, chatty["room_token"])) != {"ChattyOnEdge"}:
            assert time.monotonic() < deadline, "the closed socket's participant stayed online"
            await asyncio.sleep(0.2)
    finally:
        pinger.cancel()
        await asyncio.gather(pinger, return_exceptions=True)
        await talker.close()
        await silent.close()


async def test_a_host_change_reaches_sockets_on_both_edges(stack: Stack, client: httpx.AsyncClient) -> None:
    edge_2 = await stack.asecond_edge()
    host_token = await anonymous(client)
    created = await client.post("/api/v1/rooms", json={"name": "Live settings"}, headers=bearer(host_token))
    assert created.status_code == 201, created.text
    code = created.json()["code"]
    watcher = await join(client, code, "WatchingOne")
    other = await join(client, code, "WatchingTwo")
    on_1 = await ChatSocket.open(stack.ws_url, code, watcher["room_token"])
    on_2 = await ChatSocket.open(ws(edge_2), code, other["room_token"])
    try:
        await warm([on_1, on_2], client, code, watcher["room_token"])
        changed = await client.patch(
            f"/api/v1/rooms/{code}",
            json={"name": "Renamed live", "description": "Now darker", "theme": "dark-mode"},
            headers=bearer(host_token),
        )
        assert changed.status_code == 200, changed.text
        shown = (await client.get(f"/api/v1/rooms/{code}")).json()
        for socket in (on_1, on_2):
            frame = await socket.wait_for(lambda f: f["type"] == "room_updated")
            assert frame == {"type": "room_updated", "room": shown}
        assert (shown["name"], shown["description"], shown["theme"]) == (
            "Renamed live",
            "Now darker",
            "dark-mode",
        )

        # Someone who is not the host cannot change the room, and nothing is announced.
        refused = await client.patch(
            f"/api/v1/rooms/{code}", json={"name": "Hijacked"}, headers=bearer(await anonymous(client))
        )
        assert refused.status_code == 403, refused.text
        await warm([on_1, on_2], client, code, watcher["room_token"])
        assert len([f for f in on_1.frames if f["type"] == "room_updated"]) == 1
    finally:
        await on_1.close()
        await on_2.close()

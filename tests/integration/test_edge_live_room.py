"""The live room through a real edge (uvicorn) in front of fake gRPC services: presence snapshots and
frames, typing with names, idle sockets closed, room updates announced after a PATCH, and the edge's
presence goodbye when it stops.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from test_edge_support import FakeServices, edge_settings, fake_services, running_edge, unique
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chatpop.rooms.v1 import rooms_pb2

RECV_TIMEOUT = 10.0


@dataclass
class Edge:
    fakes: FakeServices
    base_url: str

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://")

    def url(self, room: rooms_pb2.Room, token: str) -> str:
        return f"{self.ws_url}/ws/v1/rooms/{room.code}?token={token}"


@pytest_asyncio.fixture(scope="module")
async def fakes() -> AsyncIterator[FakeServices]:
    async with fake_services() as services:
        services.messaging.presence_signals = True
        yield services


@pytest_asyncio.fixture(scope="module")
async def edge(fakes: FakeServices) -> AsyncIterator[Edge]:
    settings = edge_settings(fakes, typing_interval=60.0)
    async with running_edge(settings) as base_url:
        yield Edge(fakes, base_url)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    """The next frame but the participant's `mutes` list, which follows every `ready` (test_mutes)."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
        assert isinstance(raw, str)
        frame: dict[str, Any] = json.loads(raw)
        if frame.get("type") != "mutes":
            return frame


async def next_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next frame of a type, skipping others."""
    while True:
        frame = await recv(ws)
        if frame["type"] == kind:
            return frame


async def eventually(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def participants(edge: Edge, room: rooms_pb2.Room, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=edge.base_url, timeout=10) as http:
        response = await http.get(
            f"/api/v1/rooms/{room.code}/participants", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def online_of(snapshot: dict[str, Any]) -> set[str]:
    return {p["id"] for p in snapshot["participants"] if p["online"]}


async def test_presence_follows_sockets_across_tabs_and_matches_the_snapshot(edge: Edge) -> None:
    room = edge.fakes.rooms.create(name=unique("presence"))
    alice_id, alice = edge.fakes.rooms.join(room, "AliceTabs")
    bob_id, bob = edge.fakes.rooms.join(room, "BobWatches")
    messaging = edge.fakes.messaging
    async with connect(edge.url(room, bob)) as ws_bob:
        await recv(ws_bob)
        await eventually(lambda: messaging.online(room.id) == {bob_id}, "Bob reported online")
        await eventually(lambda: len(messaging.subscribers[room.id]) == 1, "subscribed")
        first = await participants(edge, room, bob)
        assert [(p["username"], p["online"]) for p in first["participants"]] == [
            ("AliceTabs", False),
            ("BobWatches", True),
        ]
        online, version = online_of(first), first["presence_version"]

        tab_1 = await connect(edge.url(room, alice))
        await recv(tab_1)
        frame = await next_of(ws_bob, "presence")
        assert frame == {"type": "presence", "online": [alice_id], "offline": [], "version": version + 1}
        online, version = (online | set(frame["online"])) - set(frame["offline"]), frame["version"]

        # A second tab, then closing the first: Alice stays online throughout.
        async with connect(edge.url(room, alice)) as tab_2:
            await recv(tab_2)
            await tab_1.close()
            await eventually(lambda: messaging.presence_versions[room.id] == version, "nothing changed")
            assert online_of(await participants(edge, room, alice)) == {alice_id, bob_id}
        # The last tab closed: offline.
        frame = await next_of(ws_bob, "presence")
        assert frame == {"type": "presence", "online": [], "offline": [alice_id], "version": version + 1}
        online, version = (online | set(frame["online"])) - set(frame["offline"]), frame["version"]

        # The snapshot plus the frames is the fresh snapshot.
        fresh = await participants(edge, room, bob)
        assert (online_of(fresh), fresh["presence_version"]) == (online, version) == ({bob_id}, version)
    await eventually(lambda: not messaging.online(room.id), "Bob reported offline")


async def test_typing_names_the_typist_and_skips_all_of_their_sockets(edge: Edge) -> None:
    room = edge.fakes.rooms.create(name=unique("typing"))
    alice_id, alice = edge.fakes.rooms.join(room, "AliceTypes")
    _bob_id, bob = edge.fakes.rooms.join(room, "BobReads")
    async with (
        connect(edge.url(room, alice)) as tab_1,
        connect(edge.url(room, alice)) as tab_2,
        connect(edge.url(room, bob)) as ws_bob,
    ):
        for ws in (tab_1, tab_2, ws_bob):
            await recv(ws)
        await eventually(lambda: len(edge.fakes.messaging.subscribers[room.id]) == 1, "subscribed")
        await tab_1.send(json.dumps({"type": "typing"}))
        assert await next_of(ws_bob, "typing") == {
            "type": "typing",
            "participant_id": alice_id,
            "username": "AliceTypes",
        }
        # Alice's other tab did not hear her own typing: the next frame it gets is the answer to a ping.
        await tab_2.send(json.dumps({"type": "ping"}))
        while (frame := await recv(tab_2))["type"] == "presence":
            pass
        assert frame == {"type": "pong"}


async def test_a_silent_socket_is_closed_and_its_participant_goes_offline(fakes: FakeServices) -> None:
    settings = edge_settings(fakes, ws_idle_timeout=1.0)
    room = fakes.rooms.create(name=unique("idle"))
    silent_id, silent = fakes.rooms.join(room, "SilentOne")
    chatty_id, chatty = fakes.rooms.join(room, "ChattyOne")
    closed_before = REGISTRY.get_sample_value("chatpop_ws_idle_closes_total") or 0.0
    async with running_edge(settings) as base_url:
        edge = Edge(fakes, base_url)
        async with connect(edge.url(room, silent)) as quiet, connect(edge.url(room, chatty)) as talker:
            await recv(quiet)
            await recv(talker)
            await eventually(lambda: fakes.messaging.online(room.id) == {silent_id, chatty_id}, "online")

            async def keep_pinging() -> None:
                while True:
                    await talker.send(json.dumps({"type": "ping"}))
                    await asyncio.sleep(0.3)

            pinger = asyncio.create_task(keep_pinging())
            try:
                # The silent socket is closed with 4408; nothing reads it, so it never answers.
                with pytest.raises(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(quiet.recv(), RECV_TIMEOUT)
                assert (quiet.close_code, quiet.close_reason) == (4408, "idle")
                await eventually(
                    lambda: fakes.messaging.online(room.id) == {chatty_id}, "silent went offline"
                )
                # The one that pings is still open well past the idle timeout.
                await asyncio.sleep(1.5)
                await talker.send(json.dumps({"type": "typing"}))
                assert talker.close_code is None
            finally:
                pinger.cancel()
                await asyncio.gather(pinger, return_exceptions=True)
    assert (REGISTRY.get_sample_value("chatpop_ws_idle_closes_total") or 0.0) >= closed_before + 1


async def test_an_edge_that_stops_says_goodbye_to_presence(fakes: FakeServices) -> None:
    room = fakes.rooms.create(name=unique("goodbye"))
    member_id, token = fakes.rooms.join(room, "LeavingOne")
    async with running_edge(edge_settings(fakes)) as base_url:
        ws = await connect(Edge(fakes, base_url).url(room, token))
        await recv(ws)
        await eventually(lambda: fakes.messaging.online(room.id) == {member_id}, "online")
    # The edge stopped with the socket still open: its goodbye took the participant offline.
    assert fakes.messaging.online(room.id) == set()
    await ws.close()


async def test_a_room_patch_reaches_live_sockets_as_room_updated(edge: Edge) -> None:
    signer = edge.fakes.signer
    host_subject = unique("host-")
    room = edge.fakes.rooms.create(host_id=host_subject, name="Before")
    _pid, guest = edge.fakes.rooms.join(room, "GuestSees")
    host = {"Authorization": f"Bearer {signer.access(host_subject)}"}
    async with (
        connect(edge.url(room, guest)) as ws,
        httpx.AsyncClient(base_url=edge.base_url, timeout=10) as http,
    ):
        await recv(ws)
        await eventually(lambda: len(edge.fakes.messaging.subscribers[room.id]) == 1, "subscribed")
        patched = await http.patch(
            f"/api/v1/rooms/{room.code}", json={"name": "After", "theme": "dark-mode"}, headers=host
        )
        assert patched.status_code == 200, patched.text
        frame = await next_of(ws, "room_updated")
        shown = (await http.get(f"/api/v1/rooms/{room.code}")).json()
        assert frame == {"type": "room_updated", "room": shown}
        assert (shown["name"], shown["theme"]) == ("After", "dark-mode")

        # Announcing may fail; the change stands and the PATCH still succeeds.
        edge.fakes.messaging.announce_fails = True
        try:
            patched = await http.patch(
                f"/api/v1/rooms/{room.code}", json={"description": "Saved anyway"}, headers=host
            )
        finally:
            edge.fakes.messaging.announce_fails = False
        assert patched.status_code == 200, patched.text
        assert (await http.get(f"/api/v1/rooms/{room.code}")).json()["description"] == "Saved anyway"

"""The room WebSocket through a real edge (uvicorn) in front of fake gRPC services."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from test_edge_support import FakeServices, edge_settings, fake_services, running_edge, unique
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chatpop.rooms.v1 import rooms_pb2

RESUME_LIMIT = 20
RECV_TIMEOUT = 10.0


@dataclass
class Edge:
    fakes: FakeServices
    ws_url: str

    def room(self) -> rooms_pb2.Room:
        return self.fakes.rooms.create(name=unique("room"))

    def url(self, room: rooms_pb2.Room, token: str, query: str = "") -> str:
        return f"{self.ws_url}/ws/v1/rooms/{room.code}?token={token}{query}"


@pytest_asyncio.fixture(scope="module")
async def edge() -> AsyncIterator[Edge]:
    async with fake_services() as fakes:
        settings = edge_settings(fakes, resume_limit=RESUME_LIMIT, typing_interval=60.0)
        async with running_edge(settings) as base_url:
            yield Edge(fakes, base_url.replace("http://", "ws://"))


async def recv(ws: ClientConnection) -> dict[str, Any]:
    """The next frame but the participant's `mutes` list, which follows every `ready` (test_mutes)."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
        assert isinstance(raw, str)
        frame: dict[str, Any] = json.loads(raw)
        if frame.get("type") != "mutes":
            return frame


async def recv_raw(ws: ClientConnection) -> str:
    while True:
        raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
        assert isinstance(raw, str)
        if json.loads(raw).get("type") != "mutes":
            return raw


async def collect_messages(ws: ClientConnection, until_seq: int) -> list[int]:
    """Seqs of message frames in arrival order until `until_seq` arrives (other frames skipped)."""
    seqs: list[int] = []
    while not seqs or seqs[-1] != until_seq:
        frame = await recv(ws)
        if frame["type"] == "message":
            seqs.append(frame["seq"])
        assert frame["type"] != "reload", frame
    return seqs


async def close_code_of(url: str) -> tuple[int | None, str | None]:
    async with connect(url) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason


async def eventually(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def test_send_is_acked_and_every_socket_gets_the_same_frame(edge: Edge) -> None:
    room = edge.room()
    alice_id, alice = edge.fakes.rooms.join(room, "Alice")
    _bob_id, bob = edge.fakes.rooms.join(room, "Bob")
    async with connect(edge.url(room, alice)) as ws_a, connect(edge.url(room, bob)) as ws_b:
        ready_a, ready_b = await recv(ws_a), await recv(ws_b)
        assert ready_a == {"type": "ready", "room_id": room.id, "participant_id": alice_id, "last_seq": 0}
        assert ready_b["last_seq"] == 0
        # One subscription for the room, however many sockets.
        await eventually(lambda: len(edge.fakes.messaging.subscribers[room.id]) == 1, "subscribed")
        assert edge.fakes.messaging.subscribe_calls[room.id] == [0]

        await ws_a.send(json.dumps({"type": "send", "client_msg_id": "c-1", "text": "hello"}))
        frames_a = [await recv_raw(ws_a), await recv_raw(ws_a)]
        decoded = [json.loads(f) for f in frames_a]
        ack = next(f for f in decoded if f["type"] == "ack")
        message_raw = next(f for f in frames_a if json.loads(f)["type"] == "message")
        message = json.loads(message_raw)
        assert ack == {"type": "ack", "client_msg_id": "c-1", "seq": 1, "id": message["id"]}
        assert message["seq"] == 1 and message["text"] == "hello" and message["room_id"] == room.id
        assert message["client_msg_id"] == "c-1"
        assert message["sender"] == {
            "participant_id": alice_id,
            "username": "sender",
            "is_host": False,
            "verified": False,
        }
        assert message["created_at"]
        # Bob receives the very same encoded frame.
        assert await recv_raw(ws_b) == message_raw

        # A retry with the same client_msg_id is acked with the original seq and not re-broadcast.
        await ws_a.send(json.dumps({"type": "send", "client_msg_id": "c-1", "text": "hello"}))
        assert await recv(ws_a) == ack
        await ws_a.send(
            json.dumps({"type": "send", "client_msg_id": "c-2", "text": "again", "reply_to_seq": 1})
        )
        assert (await recv(ws_b))["seq"] == 2
    await eventually(lambda: not edge.fakes.messaging.subscribers[room.id], "subscription cancelled")


async def test_new_socket_is_live_from_now(edge: Edge) -> None:
    room = edge.room()
    for index in range(3):
        edge.fakes.messaging.append(room.id, f"old {index}")
    _pid, token = edge.fakes.rooms.join(room)
    async with connect(edge.url(room, token)) as ws:
        assert (await recv(ws))["last_seq"] == 3
        edge.fakes.messaging.append(room.id, "new")
        frame = await recv(ws)
        assert (frame["type"], frame["seq"], frame["text"]) == ("message", 4, "new")


async def test_resume_backfills_exactly_the_missing_messages(edge: Edge) -> None:
    room = edge.room()
    for index in range(10):
        edge.fakes.messaging.append(room.id, f"m{index}")
    _pid, token = edge.fakes.rooms.join(room)
    async with connect(edge.url(room, token)) as ws:
        assert (await recv(ws))["last_seq"] == 10
        # Live messages race with the backfill: each seq must still arrive exactly once, in order.
        await ws.send(json.dumps({"type": "resume", "after_seq": 4}))
        for index in range(5):
            edge.fakes.messaging.append(room.id, f"live {index}")
        assert await collect_messages(ws, 15) == list(range(5, 16))
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


async def test_resume_on_connect_and_after_live_frames(edge: Edge) -> None:
    room = edge.room()
    for index in range(6):
        edge.fakes.messaging.append(room.id, f"m{index}")
    _pid, token = edge.fakes.rooms.join(room)
    async with connect(edge.url(room, token, "&after_seq=2")) as ws:
        assert (await recv(ws))["last_seq"] == 6
        assert await collect_messages(ws, 6) == [3, 4, 5, 6]

    async with connect(edge.url(room, token)) as ws:
        assert (await recv(ws))["last_seq"] == 6
        edge.fakes.messaging.append(room.id, "live")
        assert await collect_messages(ws, 7) == [7]
        # 7 was already delivered live on this socket: only 5 and 6 are missing.
        await ws.send(json.dumps({"type": "resume", "after_seq": 4}))
        edge.fakes.messaging.append(room.id, "later")
        assert await collect_messages(ws, 8) == [5, 6, 8]


async def test_resume_with_too_large_a_gap_says_reload(edge: Edge) -> None:
    room = edge.room()
    for index in range(RESUME_LIMIT + 5):
        edge.fakes.messaging.append(room.id, f"m{index}")
    _pid, token = edge.fakes.rooms.join(room)
    async with connect(edge.url(room, token)) as ws:
        last = (await recv(ws))["last_seq"]
        await ws.send(json.dumps({"type": "resume", "after_seq": 0}))
        assert await recv(ws) == {"type": "reload", "last_seq": last}
        edge.fakes.messaging.append(room.id, "after reload")
        frame = await recv(ws)
        assert (frame["type"], frame["seq"]) == ("message", last + 1)


async def test_a_gap_in_the_live_stream_is_filled_in_order(edge: Edge) -> None:
    room = edge.room()
    _pid, token = edge.fakes.rooms.join(room)
    async with connect(edge.url(room, token)) as ws:
        await recv(ws)
        edge.fakes.messaging.append(room.id, "one")
        assert await collect_messages(ws, 1) == [1]
        # Two messages are committed but their live events are lost; the third one arrives live.
        edge.fakes.messaging.unpublished.add(room.id)
        edge.fakes.messaging.append(room.id, "two")
        edge.fakes.messaging.append(room.id, "three")
        edge.fakes.messaging.unpublished.discard(room.id)
        edge.fakes.messaging.append(room.id, "four")
        assert await collect_messages(ws, 4) == [2, 3, 4]


async def test_room_stream_resubscribes_after_messaging_restarts(edge: Edge) -> None:
    room = edge.room()
    _pid, token = edge.fakes.rooms.join(room)
    messaging = edge.fakes.messaging
    async with connect(edge.url(room, token)) as ws:
        await recv(ws)
        messaging.append(room.id, "before")
        assert await collect_messages(ws, 1) == [1]
        messaging.break_streams(room.id)
        # Committed while no stream is open: the resubscription backfills it.
        await eventually(lambda: not messaging.subscribers[room.id], "stream broken")
        messaging.append(room.id, "during")
        await eventually(lambda: len(messaging.subscribe_calls[room.id]) == 2, "resubscribed")
        messaging.append(room.id, "after")
        assert await collect_messages(ws, 3) == [2, 3]
        assert messaging.subscribe_calls[room.id] == [0, 1]


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(edge: Edge) -> None:
    room = edge.room()
    _pid, token = edge.fakes.rooms.join(room)
    async with connect(edge.url(room, token)) as ws:
        await recv(ws)
        await ws.send("{not json")
        frame = await recv(ws)
        assert (frame["type"], frame["code"], frame["retryable"]) == ("error", "invalid_json", False)
        await ws.send(json.dumps({"type": "dance"}))
        assert (await recv(ws))["code"] == "unknown_type"
        await ws.send(json.dumps({"type": "send", "text": "no id"}))
        frame = await recv(ws)
        assert frame["code"] == "invalid_frame" and frame["message"].startswith("client_msg_id:")
        await ws.send(b"\x00binary")
        assert (await recv(ws))["code"] == "invalid_frame"
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


async def test_rejected_send_gets_an_error_frame(edge: Edge) -> None:
    room = edge.room()
    _pid, token = edge.fakes.rooms.join(room)
    async with connect(edge.url(room, token)) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "send", "client_msg_id": "r-1", "text": "slow down"}))
        assert await recv(ws) == {
            "type": "error",
            "code": "rate_limited",
            "message": "too many messages",
            "retryable": True,
            "client_msg_id": "r-1",
            "retry_after": 7,
        }
        await ws.send(json.dumps({"type": "send", "client_msg_id": "r-2", "text": "   "}))
        frame = await recv(ws)
        assert (frame["code"], frame["retryable"], frame["client_msg_id"]) == ("invalid_text", False, "r-2")
    assert edge.fakes.messaging.log[room.id] == []


async def test_typing_reaches_the_other_sockets_throttled(edge: Edge) -> None:
    room = edge.room()
    alice_id, alice = edge.fakes.rooms.join(room, "Alice")
    _bob_id, bob = edge.fakes.rooms.join(room)
    async with connect(edge.url(room, alice)) as ws_a, connect(edge.url(room, bob)) as ws_b:
        await recv(ws_a)
        await recv(ws_b)
        # Signals published before the room's stream is open are not replayed to it.
        await eventually(lambda: len(edge.fakes.messaging.subscribers[room.id]) == 1, "subscribed")
        await ws_a.send(json.dumps({"type": "typing"}))
        await ws_a.send(json.dumps({"type": "typing"}))
        # Relayed through messaging (so other edge processes hear it too), with the typist's name.
        assert await recv(ws_b) == {"type": "typing", "participant_id": alice_id, "username": "Alice"}
        assert edge.fakes.messaging.typing_calls.count((room.id, alice_id)) == 1
        await ws_a.send(json.dumps({"type": "send", "client_msg_id": "t-1", "text": "done typing"}))
        # The second typing frame was inside the throttle window: the next frame is the message.
        assert (await recv(ws_b))["type"] == "message"
        # The typist does not get its own typing frame back.
        assert {(await recv(ws_a))["type"], (await recv(ws_a))["type"]} == {"ack", "message"}


async def test_socket_auth_failures_close_with_specific_codes(edge: Edge) -> None:
    room_a = edge.room()
    room_b = edge.room()
    _pid, token_a = edge.fakes.rooms.join(room_a)
    signer = edge.fakes.signer

    assert await close_code_of(edge.url(room_b, token_a)) == (4403, "wrong_room")
    assert (await close_code_of(edge.url(room_a, "garbage")))[0] == 4401
    expired = signer.room(room_a.id, "p", "s", ttl=-60)
    assert await close_code_of(edge.url(room_a, expired)) == (4401, "token_expired")
    access = signer.access("someone")
    assert (await close_code_of(edge.url(room_a, access)))[0] == 4401
    assert (await close_code_of(f"{edge.ws_url}/ws/v1/rooms/{room_a.code}"))[0] == 4401
    missing = rooms_pb2.Room(id="no-such-room", code="NOSUCHROOM")
    assert await close_code_of(edge.url(missing, signer.room(missing.id, "p", "s"))) == (
        4404,
        "room_not_found",
    )
    # Nothing was subscribed for the rejected sockets.
    assert room_b.id not in edge.fakes.messaging.subscribe_calls


async def test_a_socket_that_stops_reading_is_closed_and_others_keep_receiving(edge: Edge) -> None:
    settings = edge_settings(edge.fakes, ws_queue_limit=10)
    closed_before = REGISTRY.get_sample_value("chatpop_ws_slow_closes_total") or 0.0
    async with running_edge(settings) as base_url:
        room = edge.room()
        _p1, slow_token = edge.fakes.rooms.join(room)
        _p2, fast_token = edge.fakes.rooms.join(room)
        url = f"{base_url.replace('http://', 'ws://')}/ws/v1/rooms/{room.code}?token="
        # A tiny receive buffer and a client that does not read: the edge's writes back up.
        raw = socket.create_connection(("127.0.0.1", settings.http_port))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow = await connect(url + slow_token, sock=raw, max_queue=1)
        try:
            async with connect(url + fast_token) as fast:
                await recv(fast)
                sent = 0
                while (REGISTRY.get_sample_value("chatpop_ws_slow_closes_total") or 0.0) == closed_before:
                    assert sent < 5000, "the slow socket was never closed"
                    for _ in range(50):
                        edge.fakes.messaging.append(room.id, "x" * 8000)
                    sent += 50
                    # The fast socket keeps up with everything the room sends.
                    assert await collect_messages(fast, sent) == list(range(sent - 49, sent + 1))
                # What the slow socket did get starts right after its ready frame, without gaps.
                assert (await recv(slow))["type"] == "ready"
                assert [(await recv(slow))["seq"] for _ in range(20)] == list(range(1, 21))
        finally:
            slow.transport.abort()

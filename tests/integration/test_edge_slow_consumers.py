"""Slow consumers under the edge's own server protocols (EdgeServerConfig), in front of fake services.

A socket whose client stops reading is closed with 1013 once its outgoing bytes pass WS_SEND_BUDGET;
the close frame goes out ahead of the frames it could not take, so the client finds it right after
what its buffers hold, or the connection is aborted when even the close cannot go out. The other
sockets of the room keep receiving everything, and a resume brings exactly what was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from test_edge_support import FakeServices, edge_settings, fake_services, running_edge, unique
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chatpop.rooms.v1 import rooms_pb2

BUDGET = 64 * 1024
SEND_BUFFER = 64 * 1024
CLIENT_RECEIVE_BUFFER = 16 * 1024
TEXT = "x" * 4000
RECV_TIMEOUT = 10.0


@pytest.fixture(scope="module")
async def fakes() -> AsyncIterator[FakeServices]:
    async with fake_services() as services:
        yield services


@contextlib.asynccontextmanager
async def edge(fakes: FakeServices, **overrides: Any) -> AsyncIterator[str]:
    """The edge under uvicorn with the edge's protocols, as `python -m chatpop_edge` runs it."""
    settings = edge_settings(fakes, ws_send_budget=BUDGET, ws_send_buffer=SEND_BUFFER, **overrides)
    async with running_edge(settings) as base_url:
        yield base_url.replace("http://", "ws://")


def room_url(base: str, room: rooms_pb2.Room, token: str, query: str = "") -> str:
    return f"{base}/ws/v1/rooms/{room.code}?token={token}{query}"


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def recv(ws: ClientConnection) -> dict[str, Any]:
    """The next frame but the participant's `mutes` list, which follows every `ready` (test_mutes)."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
        frame: dict[str, Any] = json.loads(raw)
        if frame.get("type") != "mutes":
            return frame


async def collect_messages(ws: ClientConnection, until_seq: int) -> list[int]:
    seqs: list[int] = []
    while not seqs or seqs[-1] != until_seq:
        frame = await recv(ws)
        assert frame["type"] != "reload", frame
        if frame["type"] == "message":
            seqs.append(frame["seq"])
    return seqs


async def open_reader_that_stops(url: str) -> ClientConnection:
    """A client that reads its `ready` frame and then nothing: a small receive buffer, no queue."""
    port = int(url.split(":")[2].split("/")[0])
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RECEIVE_BUFFER)
    raw.connect(("127.0.0.1", port))
    ws = await connect(url, sock=raw, max_queue=1)
    assert (await recv(ws))["type"] == "ready"
    return ws


async def chat_until_slow_close(fakes: FakeServices, room: rooms_pb2.Room, fast: ClientConnection) -> int:
    """Messages into the room, 10 at a time, each batch read whole by `fast`, until the edge closes a
    socket as too slow; returns how many were sent."""
    closes_before = counter("chatpop_ws_slow_closes_total")
    sent = 0
    while counter("chatpop_ws_slow_closes_total") == closes_before:
        assert sent < 2000, "the socket that stopped reading was never closed"
        for _ in range(10):
            fakes.messaging.append(room.id, TEXT)
        sent += 10
        assert await collect_messages(fast, sent) == list(range(sent - 9, sent + 1))
    return sent


async def test_a_reader_that_stops_finds_1013_after_what_it_holds_and_resumes_exactly(
    fakes: FakeServices,
) -> None:
    async with edge(fakes, ws_close_timeout=30) as base:
        room = fakes.rooms.create(name=unique("room"))
        _p1, slow_token = fakes.rooms.join(room)
        _p2, fast_token = fakes.rooms.join(room)
        slow = await open_reader_that_stops(room_url(base, room, slow_token))
        async with connect(room_url(base, room, fast_token)) as fast:
            await recv(fast)
            sent = await chat_until_slow_close(fakes, room, fast)
            # The edge held no more than its budget and small buffers for the slow socket: the
            # room sent this much before it was cut off (the kernel alone used to take megabytes).
            assert sent * len(TEXT) < 600 * 1024, sent
            # The others go on receiving everything.
            for _ in range(10):
                fakes.messaging.append(room.id, TEXT)
            assert await collect_messages(fast, sent + 10) == list(range(sent + 1, sent + 11))
            sent += 10

        # Reading again, the client gets what its buffers held, in order, then the close frame.
        seqs: list[int] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frame = await recv(slow)
                assert frame["type"] == "message", frame
                seqs.append(frame["seq"])
        assert closed.value.rcvd is not None, "the connection ended without a close frame"
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "too slow: reconnect and resume")
        assert seqs == list(range(1, len(seqs) + 1))
        assert 0 < len(seqs) < sent

        # Reconnecting with a resume brings exactly what it missed.
        async with connect(room_url(base, room, slow_token, f"&after_seq={seqs[-1]}")) as again:
            assert (await recv(again))["last_seq"] == sent
            assert await collect_messages(again, sent) == list(range(seqs[-1] + 1, sent + 1))


async def test_a_reader_that_keeps_up_takes_group_commits_larger_than_the_budget(fakes: FakeServices) -> None:
    async with edge(fakes) as base:
        room = fakes.rooms.create(name=unique("room"))
        _pid, token = fakes.rooms.join(room)
        closes_before = counter("chatpop_ws_slow_closes_total")
        async with connect(room_url(base, room, token)) as ws:
            await recv(ws)
            # Each commit of 40 messages (160 KB against a 64 KiB budget) is fanned out in one pass,
            # before the socket's writer ran at all: the reader takes them all, it is not too slow.
            for last in (40, 80, 120):
                fakes.messaging.append_batch(room.id, [TEXT] * 40)
                assert await collect_messages(ws, last) == list(range(last - 39, last + 1))
        assert counter("chatpop_ws_slow_closes_total") == closes_before


async def test_a_close_that_cannot_go_out_ends_in_an_abort(fakes: FakeServices) -> None:
    async with edge(fakes, ws_close_timeout=0.5) as base:
        room = fakes.rooms.create(name=unique("room"))
        _p1, slow_token = fakes.rooms.join(room)
        _p2, fast_token = fakes.rooms.join(room)
        slow = await open_reader_that_stops(room_url(base, room, slow_token))
        aborts_before = counter("chatpop_ws_aborts_total")
        async with connect(room_url(base, room, fast_token)) as fast:
            await recv(fast)
            await chat_until_slow_close(fakes, room, fast)
            closed_at = asyncio.get_running_loop().time()
            # Nothing reads the slow socket: after WS_CLOSE_TIMEOUT the edge drops it.
            while counter("chatpop_ws_aborts_total") == aborts_before:
                assert asyncio.get_running_loop().time() - closed_at < 3, "never aborted"
                await asyncio.sleep(0.05)
        # What reaches the client now is whatever was in flight, then a reset: never the close.
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await recv(slow)
        assert closed.value.rcvd is None


async def test_a_resume_larger_than_the_budget_is_delivered_whole(fakes: FakeServices) -> None:
    async with edge(fakes, resume_limit=500) as base:
        room = fakes.rooms.create(name=unique("room"))
        for _ in range(100):
            fakes.messaging.append(room.id, TEXT)
        _pid, token = fakes.rooms.join(room)
        closes_before = counter("chatpop_ws_slow_closes_total")
        # 400 KB of backfill against a 64 KiB budget: the client asked for it, so it is let through.
        async with connect(room_url(base, room, token, "&after_seq=0")) as ws:
            assert (await recv(ws))["last_seq"] == 100
            fakes.messaging.append(room.id, "live")
            assert await collect_messages(ws, 101) == list(range(1, 102))
        assert counter("chatpop_ws_slow_closes_total") == closes_before


async def test_a_client_that_never_answers_pings_is_dropped(fakes: FakeServices) -> None:
    async with edge(fakes, ws_ping_interval=0.3, ws_ping_timeout=0.3) as base:
        room = fakes.rooms.create(name=unique("room"))
        _pid, token = fakes.rooms.join(room)
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /ws/v1/rooms/{room.code}?token={token} HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RECV_TIMEOUT)
        assert answer.startswith(b"HTTP/1.1 101 ")
        loop = asyncio.get_running_loop()
        accepted_at = loop.time()
        # Frames arrive (ready, pings) but no pong ever goes back: the edge gives up and closes (1011).
        received = await asyncio.wait_for(reader.read(), RECV_TIMEOUT)
        assert 0.5 < loop.time() - accepted_at < 2.5
        assert b"\x03\xf3keepalive ping timeout" in received
        writer.close()

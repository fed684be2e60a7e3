"""The edge's send batcher: concurrent WebSocket and REST sends leave in shared SendMessages calls, and
each sender gets exactly its own acks and errors (a real edge under uvicorn, fake gRPC services)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_edge_support import FakeServices, edge_settings, fake_services, running_edge, unique
from websockets.asyncio.client import ClientConnection, connect

from chatpop.rooms.v1 import rooms_pb2
from chatpop_common import telemetry

RECV_TIMEOUT = 10.0


async def recv(ws: ClientConnection) -> dict[str, Any]:
    while True:
        raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
        assert isinstance(raw, str)
        frame: dict[str, Any] = json.loads(raw)
        if frame.get("type") not in ("mutes", "presence", "typing"):
            return frame


async def eventually(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def answers(ws: ClientConnection, client_msg_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The ack or error frame of each of the socket's sends (message frames skipped); any answer for
    an id it did not send fails."""
    got: dict[str, dict[str, Any]] = {}
    while len(got) < len(client_msg_ids):
        frame = await recv(ws)
        if frame["type"] in ("ack", "error"):
            assert frame.get("client_msg_id") in client_msg_ids, frame
            assert frame["client_msg_id"] not in got, frame
            got[frame["client_msg_id"]] = frame
    return got


def send_frame(client_msg_id: str, text: str) -> str:
    return json.dumps({"type": "send", "client_msg_id": client_msg_id, "text": text})


class Edge:
    def __init__(self, fakes: FakeServices, base_url: str) -> None:
        self.fakes = fakes
        self.base_url = base_url
        self.ws_url = base_url.replace("http://", "ws://")

    def room(self) -> rooms_pb2.Room:
        return self.fakes.rooms.create(name=unique("room"))

    def url(self, room: rooms_pb2.Room, token: str) -> str:
        return f"{self.ws_url}/ws/v1/rooms/{room.code}?token={token}"


@pytest_asyncio.fixture(scope="module")
async def edge() -> AsyncIterator[Edge]:
    async with fake_services() as fakes:
        settings = edge_settings(fakes, send_batch_calls=2, typing_interval=60.0)
        async with running_edge(settings) as base_url:
            yield Edge(fakes, base_url)


@pytest_asyncio.fixture(scope="module")
async def small_edge() -> AsyncIterator[Edge]:
    """An edge that may have 4 sends outstanding, each in a call of its own."""
    async with fake_services() as fakes:
        settings = edge_settings(
            fakes, send_queue_limit=4, send_batch_max=1, send_batch_calls=4, send_retry_after_ms=150
        )
        async with running_edge(settings) as base_url:
            yield Edge(fakes, base_url)


async def test_concurrent_senders_each_get_exactly_their_own_acks_and_errors(edge: Edge) -> None:
    messaging = edge.fakes.messaging
    rooms = [edge.room() for _ in range(3)]
    members = [(room, *edge.fakes.rooms.join(room)) for room in rooms for _ in range(8)]
    per_socket = 6
    gate = asyncio.Event()
    messaging.batch_gate = gate
    first_call = len(messaging.batches)
    try:
        async with contextlib_sockets(edge, members) as sockets:
            sent: list[dict[str, str]] = []
            for index, ws in enumerate(sockets):
                texts: dict[str, str] = {}
                for n in range(per_socket):
                    client_msg_id = f"s{index}-{n}"
                    # Every third send of every socket is refused by messaging (rate limited).
                    texts[client_msg_id] = "slow down" if n % 3 == 2 else f"hello {index}/{n}"
                    await ws.send(send_frame(client_msg_id, texts[client_msg_id]))
                sent.append(texts)
            # The calls wait at the gate while the sends of every socket pile up behind them.
            await eventually(lambda: len(messaging.batches) > first_call, "a SendMessages call")
            gate.set()
            results = await asyncio.gather(
                *(answers(ws, set(texts)) for ws, texts in zip(sockets, sent, strict=True))
            )
    finally:
        messaging.batch_gate = None

    for (room, participant_id, _token), texts, got in zip(members, sent, results, strict=True):
        acked_seqs = []
        for client_msg_id, text in texts.items():
            frame = got[client_msg_id]
            if text == "slow down":
                assert frame == {
                    "type": "error",
                    "code": "rate_limited",
                    "message": "too many messages",
                    "retryable": True,
                    "client_msg_id": client_msg_id,
                    "retry_after": 7,
                }
                continue
            stored = messaging.by_client_id[(room.id, participant_id, client_msg_id)]
            assert frame == {
                "type": "ack",
                "client_msg_id": client_msg_id,
                "seq": stored.seq,
                "id": stored.id,
            }
            assert stored.text == text and stored.sender_participant_id == participant_id
            acked_seqs.append(stored.seq)
        # A socket's messages were committed in the order it sent them.
        assert acked_seqs == sorted(acked_seqs)

    calls = messaging.batches[first_call:]
    assert sum(len(call) for call in calls) == len(members) * per_socket
    # Every batch went on the edge's SendStreams, none as a call of its own.
    assert messaging.streamed == len(messaging.batches)
    # Sends of different sockets shared calls, and refused sends shared them with stored ones.
    assert any(len({send.participant_id for send in call}) > 1 for call in calls)
    assert any({send.send.text == "slow down" for send in call} == {True, False} for call in calls), (
        "no call mixed refused and stored sends"
    )
    for call in calls:
        for send in call:
            room_ids = {room.id for room, pid, _t in members if pid == send.participant_id}
            assert room_ids == {send.send.room_id}
            assert send.token_version == 1


async def test_a_messaging_without_send_stream_gets_a_send_messages_call_per_batch() -> None:
    async with fake_services() as fakes:
        fakes.messaging.send_streams = False
        async with running_edge(edge_settings(fakes)) as base_url:
            edge = Edge(fakes, base_url)
            room = edge.room()
            members = [(room, *fakes.rooms.join(room)) for _ in range(2)]
            async with contextlib_sockets(edge, members) as sockets:
                for index, ws in enumerate(sockets):
                    await ws.send(send_frame(f"u{index}", f"hello {index}"))
                for index, ws in enumerate(sockets):
                    got = await answers(ws, {f"u{index}"})
                    assert got[f"u{index}"]["type"] == "ack"
                await sockets[0].send(send_frame("u-again", "again"))
                assert (await answers(sockets[0], {"u-again"}))["u-again"]["type"] == "ack"
    assert fakes.messaging.streamed == 0
    assert sorted(send.send.client_msg_id for call in fakes.messaging.batches for send in call) == [
        "u-again",
        "u0",
        "u1",
    ]


class contextlib_sockets:
    """Opens a socket per member and reads each one's `ready`."""

    def __init__(self, edge: Edge, members: list[tuple[rooms_pb2.Room, str, str]]) -> None:
        self._urls = [edge.url(room, token) for room, _pid, token in members]
        self._sockets: list[ClientConnection] = []

    async def __aenter__(self) -> list[ClientConnection]:
        for url in self._urls:
            ws = await connect(url)
            self._sockets.append(ws)
            assert (await recv(ws))["type"] == "ready"
        return self._sockets

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(ws.close() for ws in self._sockets), return_exceptions=True)


async def test_past_the_limit_a_send_is_refused_at_once_as_overloaded(small_edge: Edge) -> None:
    messaging = small_edge.fakes.messaging
    room = small_edge.room()
    members = [(room, *small_edge.fakes.rooms.join(room)) for _ in range(5)]
    gate = asyncio.Event()
    messaging.batch_gate = gate
    first_call = len(messaging.batches)
    try:
        async with contextlib_sockets(small_edge, members) as sockets:
            for index, ws in enumerate(sockets[:4]):
                await ws.send(send_frame(f"held-{index}", "held"))
            # Four sends are outstanding (each in its call, held by messaging): the limit.
            await eventually(lambda: len(messaging.batches) - first_call == 4, "four calls held")
            await sockets[4].send(send_frame("late", "one too many"))
            # Answered while messaging still holds the others: refused before any work was queued.
            assert await recv(sockets[4]) == {
                "type": "error",
                "code": "overloaded",
                "message": "ChatPop is busy right now; try this message again in a moment.",
                "retryable": True,
                "client_msg_id": "late",
                "retry_after": 1,
                "retry_after_ms": 150,
            }
            assert len(messaging.batches) - first_call == 4
            gate.set()
            for index, ws in enumerate(sockets[:4]):
                frame = (await answers(ws, {f"held-{index}"}))[f"held-{index}"]
                assert frame["type"] == "ack", frame
            # Room again: the retry goes through.
            await sockets[4].send(send_frame("late", "one too many"))
            assert (await answers(sockets[4], {"late"}))["late"]["type"] == "ack"
    finally:
        messaging.batch_gate = None


async def test_sends_a_socket_reads_behind_its_unanswered_ones_are_refused_when_they_arrive(
    small_edge: Edge,
) -> None:
    """A socket's sends leave in order, each group once the one before is answered; those waiting for
    their turn count against the limit, so one past it is refused when read, not when its turn comes."""
    messaging = small_edge.fakes.messaging
    room = small_edge.room()
    (member,) = [(room, *small_edge.fakes.rooms.join(room))]
    gate = asyncio.Event()
    messaging.batch_gate = gate
    first_call = len(messaging.batches)
    try:
        async with contextlib_sockets(small_edge, [member]) as (ws,):
            await ws.send(send_frame("first", "in a call"))
            await eventually(lambda: len(messaging.batches) - first_call == 1, "the first call held")
            for index in range(3):
                await ws.send(send_frame(f"behind-{index}", "waits for its turn"))
            await ws.send(send_frame("past", "one too many"))
            # Answered while messaging still holds the first send and the socket holds three more.
            refused = await recv(ws)
            assert refused["type"] == "error" and refused["client_msg_id"] == "past", refused
            assert refused["code"] == "overloaded" and refused["retry_after_ms"] == 150
            assert len(messaging.batches) - first_call == 1
            gate.set()
            got = await answers(ws, {"first", "behind-0", "behind-1", "behind-2"})
            assert all(frame["type"] == "ack" for frame in got.values()), got
            seqs = [got[key]["seq"] for key in ("first", "behind-0", "behind-1", "behind-2")]
            assert seqs == sorted(seqs)
            # Everything answered: the room is back, and the refused send goes through on retry.
            await ws.send(send_frame("past", "one too many"))
            assert (await answers(ws, {"past"}))["past"]["type"] == "ack"
    finally:
        messaging.batch_gate = None


async def test_each_send_carries_its_own_trace_context(edge: Edge, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "_tracing", True)
    messaging = edge.fakes.messaging
    room = edge.room()
    members = [(room, *edge.fakes.rooms.join(room)) for _ in range(3)]
    gate = asyncio.Event()
    messaging.batch_gate = gate
    first_call = len(messaging.batches)
    try:
        async with contextlib_sockets(edge, members) as sockets:
            for index, ws in enumerate(sockets):
                await ws.send(send_frame(f"t{index}-a", "one"))
                await ws.send(send_frame(f"t{index}-b", "two"))
            await eventually(lambda: len(messaging.batches) > first_call, "a SendMessages call")
            gate.set()
            for index, ws in enumerate(sockets):
                await answers(ws, {f"t{index}-a", f"t{index}-b"})
    finally:
        messaging.batch_gate = None
        exporter.shutdown()

    sends = [send for call in messaging.batches[first_call:] for send in call]
    assert len(sends) == 6
    trace_ids = set()
    for send in sends:
        version, trace_id, span_id, _flags = send.traceparent.split("-")
        assert (version, len(trace_id), len(span_id)) == ("00", 32, 16), send.traceparent
        trace_ids.add((trace_id, span_id))
    # Every send is its own trace, even those sharing a call.
    assert len({trace_id for trace_id, _span in trace_ids}) == 6
    spans = {
        (format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")): span
        for span in exporter.get_finished_spans()
    }
    # The context each send carried is the edge's span for that send, ended once it was answered.
    for key in trace_ids:
        assert key in spans, key
        assert spans[key].name.endswith("MessagingService/SendMessage")
        assert spans[key].parent is None


async def test_rest_sends_go_through_the_batcher_with_their_errors(edge: Edge) -> None:
    messaging = edge.fakes.messaging
    room = edge.room()
    participant_id, token = edge.fakes.rooms.join(room)
    first_call = len(messaging.batches)
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=edge.base_url, headers=headers) as http:
        url = f"/api/v1/rooms/{room.code}/messages"
        created, refused = await asyncio.gather(
            http.post(url, json={"client_msg_id": "r-ok", "text": "over REST"}),
            http.post(url, json={"client_msg_id": "r-slow", "text": "slow down"}),
        )
        assert created.status_code == 201, created.text
        assert created.json()["message"]["client_msg_id"] == "r-ok"
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        assert refused.headers["retry-after"] == "7"
        # A retry answers the stored message (200, not created again).
        again = await http.post(url, json={"client_msg_id": "r-ok", "text": "over REST"})
        assert again.status_code == 200 and again.json()["message"]["seq"] == created.json()["message"]["seq"]
    sends = [send for call in messaging.batches[first_call:] for send in call]
    assert {send.send.client_msg_id for send in sends} == {"r-ok", "r-slow"}
    assert {send.participant_id for send in sends} == {participant_id}

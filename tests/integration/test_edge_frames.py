"""Bad WebSocket frames through a real edge (uvicorn) in front of fake gRPC services.

Whatever a client sends, its socket keeps working: each bad frame gets an error frame, and the same
socket still acks the next good send and still delivers the room's live messages.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from test_edge_support import edge_settings, fake_services, running_edge
from test_edge_ws import Edge, close_code_of, recv
from websockets.asyncio.client import ClientConnection, connect

from chatpop.messaging.v1 import messaging_pb2
from chatpop_edge.models import MAX_SEQ
from chatpop_edge.realtime import session

BIG = 2**63


@pytest_asyncio.fixture(scope="module")
async def edge() -> AsyncIterator[Edge]:
    async with fake_services() as fakes, running_edge(edge_settings(fakes, typing_interval=60.0)) as base_url:
        yield Edge(fakes, base_url.replace("http://", "ws://"))


async def next_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next frame of this type (typing and presence frames of other tests are skipped)."""
    while True:
        frame = await recv(ws)
        if frame["type"] == kind:
            return frame
        assert frame["type"] in ("typing", "presence", "message"), frame


async def assert_still_works(edge: Edge, ws: ClientConnection, room_id: str, tag: str) -> None:
    """The socket acks a good send, and a message another process commits reaches it live."""
    await ws.send(json.dumps({"type": "send", "client_msg_id": f"ok-{tag}", "text": f"still here {tag}"}))
    ack = await next_of(ws, "ack")
    assert ack["client_msg_id"] == f"ok-{tag}"
    live = edge.fakes.messaging.append(room_id, f"live {tag}")
    while True:
        frame = await next_of(ws, "message")
        if frame["seq"] == live.seq:
            assert frame["text"] == f"live {tag}"
            return


BAD_SENDS = [
    {"reply_to_seq": BIG},
    {"reply_to_seq": MAX_SEQ + 1},
    {"reply_to_seq": 10**400},
    {"reply_to_seq": -(2**63) - 1},
    {"reply_to_seq": 1.5},
    {"reply_to_seq": 2.0},
    {"reply_to_seq": True},
    {"reply_to_seq": "7"},
    {"reply_to_seq": {"nested": [{"junk": [None, 1e300]}]}},
    {"client_msg_id": None},
    {"client_msg_id": 12},
    {"client_msg_id": ["a"]},
    {"text": None},
    {"text": False},
    {"text": {"a": {"b": {"c": []}}}},
]
BAD_RESUMES: list[Any] = [BIG, MAX_SEQ + 1, 10**400, -1, 0.5, 3.0, True, None, "3", [3], {"seq": 3}]


@pytest.mark.parametrize("fields", BAD_SENDS, ids=lambda fields: json.dumps(fields)[:40])
async def test_a_bad_send_gets_an_error_and_the_socket_goes_on(edge: Edge, fields: dict[str, Any]) -> None:
    room = edge.room()
    _pid, token = edge.fakes.rooms.join(room)
    async with connect(edge.url(room, token)) as ws:
        await next_of(ws, "ready")
        frame = {"type": "send", "client_msg_id": "bad-1", "text": "hello", **fields}
        await ws.send(json.dumps(frame))
        error = await next_of(ws, "error")
        assert (error["code"], error["retryable"]) == ("invalid_frame", False)
        assert error["message"].split(":")[0] == next(iter(fields))
        # The client learns which of its sends failed, unless the id itself is what is wrong.
        assert error.get("client_msg_id") == (None if "client_msg_id" in fields else "bad-1")
        await assert_still_works(edge, ws, room.id, "after-send")
    # Nothing of the bad frame reached messaging.
    assert "bad-1" not in {m.client_msg_id for m in edge.fakes.messaging.log[room.id]}


@pytest.mark.parametrize("after_seq", BAD_RESUMES, ids=lambda value: json.dumps(value)[:40])
async def test_a_bad_resume_gets_an_error_and_live_delivery_goes_on(edge: Edge, after_seq: Any) -> None:
    room = edge.room()
    _pid, token = edge.fakes.rooms.join(room)
    async with connect(edge.url(room, token)) as ws:
        await next_of(ws, "ready")
        await ws.send(json.dumps({"type": "resume", "after_seq": after_seq}))
        error = await next_of(ws, "error")
        assert error["code"] == "invalid_frame" and error["message"].startswith("after_seq:")
        await assert_still_works(edge, ws, room.id, "after-resume")


async def test_a_burst_of_junk_leaves_the_socket_working(edge: Edge) -> None:
    room = edge.room()
    _pid, token = edge.fakes.rooms.join(room)
    junk: list[str | bytes] = [
        "{not json",
        # Within the edge's frame size limit (larger frames close the socket with 1009).
        "[" * 20_000 + "]" * 20_000,
        "9" * 40_000,
        "null",
        "[]",
        '"send"',
        "1e400",
        json.dumps({"type": None}),
        json.dumps({"type": 7}),
        json.dumps({"type": {"send": True}}),
        json.dumps({"type": "send"}),
        json.dumps({"type": "resume"}),
        b"\x00\xff binary",
    ]
    async with connect(edge.url(room, token)) as ws:
        await next_of(ws, "ready")
        for frame in junk:
            await ws.send(frame)
        codes = [(await next_of(ws, "error"))["code"] for _ in junk]
        assert set(codes) <= {"invalid_json", "invalid_frame", "unknown_type"}
        # Junk fields beside a good frame are ignored.
        await ws.send(json.dumps({"type": "ping", "junk": {"deep": [[[[1e300]]]]}, "n": 10**400}))
        assert await next_of(ws, "pong") == {"type": "pong"}
        await assert_still_works(edge, ws, room.id, "after-junk")


async def test_the_largest_seqs_are_taken(edge: Edge) -> None:
    room = edge.room()
    _pid, token = edge.fakes.rooms.join(room)
    async with connect(edge.url(room, token)) as ws:
        await next_of(ws, "ready")
        await ws.send(
            json.dumps({"type": "send", "client_msg_id": "max", "text": "far", "reply_to_seq": MAX_SEQ})
        )
        assert (await next_of(ws, "ack"))["client_msg_id"] == "max"
        # Beyond the room's newest message: the client is told to reload, then it is live again.
        await ws.send(json.dumps({"type": "resume", "after_seq": MAX_SEQ}))
        assert (await next_of(ws, "reload"))["last_seq"] == 1
        await assert_still_works(edge, ws, room.id, "after-max")


class _RefusingProtos:
    """messaging_pb2 as the socket session sees it, except that a send saying "explode" cannot be
    built: a value the services' types cannot hold, as an out-of-range int64 once was."""

    def __getattr__(self, name: str) -> Any:
        return getattr(messaging_pb2, name)

    @staticmethod
    def SendMessageRequest(**fields: Any) -> messaging_pb2.SendMessageRequest:
        if fields.get("text") == "explode":
            raise ValueError("Value out of range")
        return messaging_pb2.SendMessageRequest(**fields)


async def test_an_unexpected_failure_of_one_send_is_answered_and_the_next_send_acked(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = edge.room()
    _pid, token = edge.fakes.rooms.join(room)
    monkeypatch.setattr(session, "messaging_pb2", _RefusingProtos())
    async with connect(edge.url(room, token)) as ws:
        await next_of(ws, "ready")
        await ws.send(json.dumps({"type": "send", "client_msg_id": "boom", "text": "explode"}))
        error = await next_of(ws, "error")
        assert error == {
            "type": "error",
            "code": "internal",
            "message": "Something went wrong on our side.",
            "retryable": False,
            "client_msg_id": "boom",
        }
        await assert_still_works(edge, ws, room.id, "after-failure")
        # Each later send is answered too, in order.
        for index in range(3):
            await ws.send(json.dumps({"type": "send", "client_msg_id": f"n-{index}", "text": "explode"}))
            await ws.send(json.dumps({"type": "send", "client_msg_id": f"m-{index}", "text": "fine"}))
            assert (await next_of(ws, "error"))["client_msg_id"] == f"n-{index}"
            assert (await next_of(ws, "ack"))["client_msg_id"] == f"m-{index}"


@pytest.mark.parametrize(
    "after_seq", [str(BIG), str(MAX_SEQ + 1), "9" * 5000, "²", "-1", "1.0", "", "0x1"], ids=lambda s: s[:20]
)
async def test_a_bad_after_seq_in_the_url_is_refused_with_4400(edge: Edge, after_seq: str) -> None:
    room = edge.room()
    _pid, token = edge.fakes.rooms.join(room)
    assert await close_code_of(edge.url(room, token, f"&after_seq={after_seq}")) == (
        4400,
        "invalid_after_seq",
    )


async def test_the_largest_after_seq_in_the_url_is_taken(edge: Edge) -> None:
    room = edge.room()
    edge.fakes.messaging.append(room.id, "first")
    _pid, token = edge.fakes.rooms.join(room)
    async with connect(edge.url(room, token, f"&after_seq={MAX_SEQ}")) as ws:
        await next_of(ws, "ready")
        assert (await next_of(ws, "reload"))["last_seq"] == 1
        await assert_still_works(edge, ws, room.id, "after-url-max")


@pytest.mark.parametrize("code", ["a%0Ab", "A" * 33, "%F0%9F%98%80", "a%00b", "a.b"])
async def test_a_room_code_no_room_can_have_is_not_found(edge: Edge, code: str) -> None:
    room = edge.room()
    _pid, token = edge.fakes.rooms.join(room)
    url = f"{edge.ws_url}/ws/v1/rooms/{code}?token={token}"
    assert await close_code_of(url) == (4404, "room_not_found")


async def test_an_overlong_token_is_refused_before_it_is_checked(edge: Edge) -> None:
    room = edge.room()
    _pid, token = edge.fakes.rooms.join(room)
    assert await close_code_of(edge.url(room, token + "x" * 5000)) == (4401, "invalid_token")

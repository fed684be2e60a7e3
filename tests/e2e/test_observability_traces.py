"""One request, one trace, across real processes: spans exported over OTLP by every service.

The observed stack is configured only by standard OTEL_* variables pointing at an OTLP/gRPC
receiver run by the test. A REST call and a WebSocket send must each produce one connected trace
(every span's parent is in the trace, one root) that crosses the services they touch.

Sends are batched: the edge carries each send's trace context in a batch on its SendStream, messaging
handles each send in a SERVER span `.../SendMessage` within the send's trace, and the work sends share
(a room's group commit, the publishing round trip) runs in spans that link every send they served
(or are children of the send's span when they served that send alone), with the Postgres and Redis
spans beneath them. So from a send's trace the commit and publish it rode in are one link away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.e2e.chat import ChatSocket, bearer, join, new_id, open_room
from tests.e2e.otlp import OtlpReceiver, Span

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

TRACE_TIMEOUT = 30.0


@pytest.fixture
async def http(observed_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=observed_stack.base_url, timeout=10) as client:
        yield client


async def wait_for_trace(
    receiver: OtlpReceiver,
    find_root: Callable[[list[Span]], Span | None],
    complete: Callable[[list[Span]], bool],
) -> list[Span]:
    """Spans arrive in batches from each process: wait until the trace is there and complete, its root
    included (the edge's server span ends last, so it may come in a later batch than its children)."""
    deadline = time.monotonic() + TRACE_TIMEOUT
    spans: list[Span] = []
    while time.monotonic() < deadline:
        root = find_root(receiver.spans())
        if root is not None:
            spans = receiver.trace(root.trace_id)
            if has_root(spans) and complete(spans):
                return spans
        await asyncio.sleep(0.2)
    raise AssertionError(f"no complete trace within {TRACE_TIMEOUT}s; last seen: {describe(spans)}")


def has_root(spans: list[Span]) -> bool:
    return any(not s.parent_span_id for s in spans)


def describe(spans: list[Span]) -> str:
    return "; ".join(f"{s.service}:{s.kind}:{s.name}" for s in spans) or "nothing"


def services(spans: list[Span]) -> set[str]:
    return {s.service for s in spans}


def db_systems(spans: list[Span], service: str) -> set[str]:
    return {
        str(s.attributes.get("db.system"))
        for s in spans
        if s.service == service and "db.system" in s.attributes
    }


def assert_connected(spans: list[Span]) -> Span:
    """One root, and every other span's parent is in the same trace; returns the root."""
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    orphans = [s for s in spans if s.parent_span_id and s.parent_span_id not in ids]
    assert len(roots) == 1, f"roots: {describe(roots)}"
    assert not orphans, f"spans whose parent is missing: {describe(orphans)}"
    return roots[0]


def descendants(span: Span, everything: list[Span]) -> list[Span]:
    """The spans beneath `span` (children, their children, ...), in its trace."""
    children: dict[str, list[Span]] = {}
    for s in everything:
        if s.trace_id == span.trace_id and s.parent_span_id:
            children.setdefault(s.parent_span_id, []).append(s)
    found: list[Span] = []
    waiting = list(children.get(span.span_id, ()))
    while waiting:
        s = waiting.pop()
        found.append(s)
        waiting.extend(children.get(s.span_id, ()))
    return found


def serving(send: Span, name: str, db_system: str, everything: list[Span]) -> Span | None:
    """A messaging span `name` that did work for `send` — linking its span, or beneath it in its
    trace — with a span of `db_system` beneath it; None if there is none (yet)."""
    beneath = {s.span_id for s in descendants(send, everything)}
    for s in everything:
        if s.service != "chatpop-messaging" or s.name != name:
            continue
        linked = any(link.trace_id == send.trace_id and link.span_id == send.span_id for link in s.links)
        parented = s.trace_id == send.trace_id and s.span_id in beneath
        if (linked or parented) and any(
            d.attributes.get("db.system") == db_system for d in descendants(s, everything)
        ):
            return s
    return None


def messaging_send(spans: list[Span]) -> Span | None:
    """Messaging's SERVER span for the send, in the send's trace."""
    found = [
        s
        for s in spans
        if s.service == "chatpop-messaging"
        and s.kind == "SERVER"
        and s.name == "/chatpop.messaging.v1.MessagingService/SendMessage"
    ]
    return found[0] if len(found) == 1 else None


async def wait_for_send(
    receiver: OtlpReceiver, find_root: Callable[[list[Span]], Span | None], with_services: set[str]
) -> tuple[list[Span], Span, Span, Span]:
    """The send's trace once complete (its services there, messaging's SendMessage span in it, the
    group commit with Postgres and the publishing with Redis beneath, both serving it): the trace,
    messaging's send span, the commit span and the publish span."""
    deadline = time.monotonic() + TRACE_TIMEOUT
    spans: list[Span] = []
    while time.monotonic() < deadline:
        everything = receiver.spans()
        root = find_root(everything)
        if root is not None:
            spans = [s for s in everything if s.trace_id == root.trace_id]
            send = messaging_send(spans)
            if send is not None and with_services <= services(spans) and has_root(spans):
                commit = serving(send, "messaging.group_commit", "postgresql", everything)
                publish = serving(send, "messaging.publish", "redis", everything)
                if commit is not None and publish is not None:
                    return spans, send, commit, publish
        await asyncio.sleep(0.2)
    raise AssertionError(f"no complete send trace within {TRACE_TIMEOUT}s; last seen: {describe(spans)}")


def assert_batched_truth(spans: list[Span], send: Span, commit: Span, publish: Span) -> None:
    """What a batched send's trace must say: messaging's send span is a child of the edge's, the
    participant lookup made for the send (a participant who just joined is not cached in messaging)
    is beneath it, the stream (or SendMessages call) that carried the send with others is not in the trace,
    and the shared commit and publishing link the send's span (children of it when it rode alone)."""
    by_id = {s.span_id: s for s in spans}
    assert by_id[send.parent_span_id].service == "chatpop-edge", describe(spans)
    beneath = descendants(send, spans)
    assert any(
        s.service == "chatpop-rooms" and s.kind == "SERVER" and s.name.endswith("RoomsService/GetParticipant")
        for s in beneath
    ), describe(beneath)
    carriers = ("MessagingService/SendMessages", "MessagingService/SendStream")
    assert not [s for s in spans if s.name.endswith(carriers)], describe(spans)
    for shared in (commit, publish):
        assert any(link.span_id == send.span_id for link in shared.links) or (
            shared.trace_id == send.trace_id and shared.parent_span_id == send.span_id
        ), shared


def edge_span(name_part: str, after: set[str]) -> Callable[[list[Span]], Span | None]:
    def find(spans: list[Span]) -> Span | None:
        for span in spans:
            if span.service == "chatpop-edge" and name_part in span.name and span.trace_id not in after:
                return span
        return None

    return find


async def test_a_rest_send_is_one_trace_from_the_edge_to_postgres_and_redis(
    observed_stack: Stack, http: httpx.AsyncClient, otlp_receiver: OtlpReceiver
) -> None:
    room = await open_room(http, name="traced room")
    joined = await join(http, room.code, f"tr{new_id()[:8]}")
    before = {s.trace_id for s in otlp_receiver.spans()}

    sent = await http.post(
        f"/api/v1/rooms/{room.code}/messages",
        json={"client_msg_id": new_id(), "text": "follow me"},
        headers=bearer(joined["room_token"]),
    )
    assert sent.status_code in (200, 201), sent.text

    spans, send, commit, publish = await wait_for_send(
        otlp_receiver,
        edge_span("/api/v1/rooms/{code}/messages", before),
        {"chatpop-edge", "chatpop-messaging", "chatpop-rooms"},
    )
    root = assert_connected(spans)
    assert root.service == "chatpop-edge"
    assert root.kind == "SERVER"
    assert "POST" in root.name
    sends = [s for s in spans if s.service == "chatpop-messaging" and s.name.endswith("SendMessage")]
    assert sends == [send]
    assert send.attributes.get("chatpop.seq") == sent.json()["message"]["seq"]
    assert_batched_truth(spans, send, commit, publish)


async def test_a_join_is_one_trace_through_rooms_and_identity(
    observed_stack: Stack, http: httpx.AsyncClient, otlp_receiver: OtlpReceiver
) -> None:
    room = await open_room(http, name="traced join")
    before = {s.trace_id for s in otlp_receiver.spans()}
    await join(http, room.code, f"tj{new_id()[:8]}")

    def complete(spans: list[Span]) -> bool:
        return {"chatpop-edge", "chatpop-rooms", "chatpop-identity"} <= services(spans) and "postgresql" in (
            db_systems(spans, "chatpop-rooms")
        )

    spans = await wait_for_trace(otlp_receiver, edge_span("/api/v1/rooms/{code}/join", before), complete)
    root = assert_connected(spans)
    assert (root.service, root.kind) == ("chatpop-edge", "SERVER")
    issued = [s for s in spans if s.service == "chatpop-identity" and s.name.endswith("IssueRoomToken")]
    assert issued, describe(spans)
    parent = next(s for s in spans if s.span_id == issued[0].parent_span_id)
    assert parent.service == "chatpop-rooms", "identity is called by rooms, within the same trace"


async def test_a_websocket_send_is_one_trace_from_the_edge_to_postgres_and_redis(
    observed_stack: Stack, http: httpx.AsyncClient, otlp_receiver: OtlpReceiver
) -> None:
    room = await open_room(http, name="traced socket")
    joined = await join(http, room.code, f"tw{new_id()[:8]}")
    socket = await ChatSocket.open(observed_stack.ws_url, room.code, joined["room_token"])
    try:
        before = {s.trace_id for s in otlp_receiver.spans()}
        client_msg_id = await socket.send("over the socket")
        ack = await socket.ack_or_error(client_msg_id)
        assert ack["type"] == "ack", ack
    finally:
        await socket.close()

    def find(spans: list[Span]) -> Span | None:
        for span in spans:
            if (
                span.service == "chatpop-edge"
                and span.name.endswith("MessagingService/SendMessage")
                and not span.parent_span_id
                and span.trace_id not in before
            ):
                return span
        return None

    spans, send, commit, publish = await wait_for_send(
        otlp_receiver, find, {"chatpop-edge", "chatpop-messaging", "chatpop-rooms"}
    )
    root = assert_connected(spans)
    assert root.service == "chatpop-edge"
    # Each send is its own trace: the socket's other frames (ready, typing, Subscribe) are not in it.
    assert [s for s in spans if s.service == "chatpop-messaging" and s.kind == "SERVER"] == [send]
    assert send.attributes.get("chatpop.seq") == ack["seq"]
    assert_batched_truth(spans, send, commit, publish)

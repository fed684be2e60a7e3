"""Traces of batched sends: each send of a SendMessages call is handled in a SERVER span of its own,
in the trace of the edge's send, and the work its room's group shares (the commit, the publishing)
runs in spans linking every send they served, or under the send's span when it rode alone.

Messaging runs in-process as in test_messaging_batches.py; spans are kept in memory.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_messaging_batches import batched, fake_rooms, send_batch, server
from test_messaging_service import FakeRooms, Messaging, join, new_room, rooms

from chatpop.messaging.v1 import messaging_pb2

__all__ = ["fake_rooms", "rooms", "server"]  # fixtures shared with test_messaging_batches.py

SEND_SPAN = "/chatpop.messaging.v1.MessagingService/SendMessage"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def traced(send: messaging_pb2.BatchedSend) -> tuple[messaging_pb2.BatchedSend, tuple[int, int]]:
    """The send with a trace context of its own; and that context's (trace id, span id)."""
    trace_id, span_id = uuid.uuid4().int, uuid.uuid4().int >> 64
    send.traceparent = f"00-{trace_id:032x}-{span_id:016x}-01"
    return send, (trace_id, span_id)


def key(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def linked(span: ReadableSpan) -> set[tuple[int, int]]:
    return {(link.context.trace_id, link.context.span_id) for link in span.links}


async def test_each_send_is_a_server_span_in_its_trace_and_the_shared_work_links_them(
    server: Messaging, fake_rooms: FakeRooms, exporter: InMemorySpanExporter
) -> None:
    busy, quiet = new_room(), new_room()
    members = [join(fake_rooms, busy, f"Busy{i}") for i in range(3)]
    alone = join(fake_rooms, quiet, "Alone")
    sends, edge_spans = zip(
        *(
            traced(send)
            for send in [
                *(batched(member, f"hello {i}") for i, member in enumerate(members)),
                batched(members[0], "   "),
                batched(alone, "on my own"),
            ]
        ),
        strict=True,
    )
    results = await send_batch(server, list(sends))
    assert [r.WhichOneof("result") for r in results] == ["sent", "sent", "sent", "error", "sent"]

    finished = exporter.get_finished_spans()
    send_spans = []
    for edge_span, result in zip(edge_spans, results, strict=True):
        # Messaging's span of the send: a SERVER child of the edge's span, with its seq or error code.
        (span,) = [
            s
            for s in finished
            if s.name == SEND_SPAN
            and s.parent is not None
            and (s.parent.trace_id, s.parent.span_id) == edge_span
        ]
        assert span.kind is trace.SpanKind.SERVER
        if result.HasField("sent"):
            assert span.attributes is not None and span.attributes["chatpop.seq"] == result.sent.message.seq
        else:
            assert span.attributes is not None and span.attributes["chatpop.error_code"] == "message_empty"
        send_spans.append(key(span))
    busy_sends, refused, quiet_send = set(send_spans[:3]), send_spans[3], send_spans[4]

    commits = [s for s in finished if s.name == "messaging.group_commit"]
    # The busy room's three sends rode in one commit: a trace of its own, linked to each of them.
    (busy_commit,) = [s for s in commits if linked(s) & busy_sends]
    assert linked(busy_commit) == busy_sends
    assert busy_commit.parent is None
    # The quiet room's one send: its commit is a child of the send's span (and links it).
    (quiet_commit,) = [s for s in commits if quiet_send in linked(s)]
    assert quiet_commit.parent is not None
    assert (quiet_commit.parent.trace_id, quiet_commit.parent.span_id) == quiet_send
    # The refused send reached no commit, and every sent one was published by a span linking it.
    assert not any(refused in linked(s) for s in commits)
    published = set().union(*(linked(s) for s in finished if s.name == "messaging.publish"))
    assert busy_sends | {quiet_send} <= published
    assert refused not in published

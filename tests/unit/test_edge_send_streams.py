"""The edge's batches on SendStream calls: answers matched by batch id, streams used in turn and
replaced when they break, drain or grow old, a batch's own timeout, and SendMessages calls when
messaging does not know SendStream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from chatpop.messaging.v1 import messaging_pb2
from chatpop_edge.realtime.send_streams import SendStreams

_END = object()


def _status(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


def _send(client_msg_id: str) -> messaging_pb2.BatchedSend:
    return messaging_pb2.BatchedSend(
        send=messaging_pb2.SendMessageRequest(room_id="r", client_msg_id=client_msg_id, text="hi"),
        participant_id="p",
    )


def _answer(request: messaging_pb2.SendStreamRequest) -> messaging_pb2.SendStreamResponse:
    response = messaging_pb2.SendStreamResponse(batch_id=request.batch_id)
    for send in request.sends:
        response.results.add().sent.message.client_msg_id = send.send.client_msg_id
    return response


class FakeStream:
    """A SendStream call: records what the edge wrote; the test decides what comes back."""

    def __init__(self, metadata: Sequence[tuple[str, str]], *, auto: bool) -> None:
        self.metadata = metadata
        self.auto = auto  # answer each batch as it is written
        self.written: list[messaging_pb2.SendStreamRequest] = []
        self.half_closed = False
        self.cancelled = False
        self.ended = False
        # Set: writes wait for it (messaging not reading: flow control holds them).
        self.write_gate: asyncio.Event | None = None
        self._responses: asyncio.Queue[object] = asyncio.Queue()

    async def write(self, request: messaging_pb2.SendStreamRequest) -> None:
        if self.ended or self.half_closed:
            raise asyncio.InvalidStateError("RPC already finished.")
        if self.write_gate is not None:
            try:
                await self.write_gate.wait()
            except asyncio.CancelledError:
                # As gRPC's aio does: a write cancelled midway cancels the call.
                self.cancel()
                raise
        self.written.append(request)
        if self.auto:
            self.respond(_answer(request))

    async def done_writing(self) -> None:
        self.half_closed = True
        # Messaging ends the stream once every batch it read is answered.
        self._responses.put_nowait(_END)

    def respond(self, response: messaging_pb2.SendStreamResponse) -> None:
        self._responses.put_nowait(response)

    def fail(self, code: grpc.StatusCode) -> None:
        self._responses.put_nowait(_status(code))

    def cancel(self) -> bool:
        self.cancelled = True
        self._responses.put_nowait(_status(grpc.StatusCode.CANCELLED))
        return True

    def __aiter__(self) -> AsyncIterator[messaging_pb2.SendStreamResponse]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[messaging_pb2.SendStreamResponse]:
        while True:
            item = await self._responses.get()
            if item is _END:
                self.ended = True
                return
            if isinstance(item, grpc.aio.AioRpcError):
                self.ended = True
                raise item
            assert isinstance(item, messaging_pb2.SendStreamResponse)
            yield item


class FakeMessaging:
    def __init__(self, *, auto: bool = True, streaming: bool = True) -> None:
        self.auto = auto
        self.streaming = streaming
        self.streams: list[FakeStream] = []
        self.calls: list[list[str]] = []

    def SendStream(self, metadata: Sequence[tuple[str, str]]) -> FakeStream:
        stream = FakeStream(metadata, auto=self.auto)
        if not self.streaming:
            stream.fail(grpc.StatusCode.UNIMPLEMENTED)
        self.streams.append(stream)
        return stream

    async def SendMessages(
        self, request: messaging_pb2.SendMessagesRequest, metadata: object, timeout: float
    ) -> messaging_pb2.SendMessagesResponse:
        self.calls.append([send.send.client_msg_id for send in request.sends])
        response = messaging_pb2.SendMessagesResponse()
        for send in request.sends:
            response.results.add().sent.message.client_msg_id = send.send.client_msg_id
        return response


def _ids(response: messaging_pb2.SendMessagesResponse) -> list[str]:
    return [result.sent.message.client_msg_id for result in response.results]


async def _until(condition: object, what: str) -> None:
    for _ in range(500):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


CREDENTIAL = (("authorization", "Bearer edge"),)


async def _one_unanswered(
    client_msg_id: str,
) -> tuple[FakeMessaging, SendStreams, asyncio.Task[messaging_pb2.SendMessagesResponse]]:
    """A batch written on the process's one stream, its answer not given yet."""
    messaging = FakeMessaging(auto=False)
    streams = SendStreams(messaging, streams=1)
    waiting = asyncio.create_task(streams.send([_send(client_msg_id)], CREDENTIAL, 30))
    await _until(lambda: messaging.streams and messaging.streams[0].written, "the batch written")
    return messaging, streams, waiting


async def test_answers_reach_their_own_batches_whatever_their_order() -> None:
    messaging = FakeMessaging(auto=False)
    streams = SendStreams(messaging, streams=1)
    first = asyncio.create_task(streams.send([_send("a1"), _send("a2")], CREDENTIAL, 30))
    second = asyncio.create_task(streams.send([_send("b1")], CREDENTIAL, 30))
    await _until(lambda: messaging.streams and len(messaging.streams[0].written) == 2, "both written")
    (stream,) = messaging.streams
    assert stream.metadata == CREDENTIAL
    one, two = stream.written
    assert one.batch_id != two.batch_id and one.timeout_ms == 30_000
    stream.respond(_answer(two))
    assert _ids(await second) == ["b1"]
    assert not first.done()
    stream.respond(_answer(one))
    assert _ids(await first) == ["a1", "a2"]
    assert messaging.calls == []
    await streams.close()
    assert stream.half_closed


async def test_batches_take_the_streams_in_turn() -> None:
    messaging = FakeMessaging()
    streams = SendStreams(messaging, streams=2)
    for index in range(6):
        assert _ids(await streams.send([_send(f"m{index}")], CREDENTIAL, 30)) == [f"m{index}"]
    assert len(messaging.streams) == 2
    assert [len(stream.written) for stream in messaging.streams] == [3, 3]
    await streams.close()


async def test_a_broken_stream_fails_its_batches_with_its_status_and_the_next_opens_another() -> None:
    messaging, streams, waiting = await _one_unanswered("lost")
    messaging.streams[0].fail(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await waiting
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    messaging.auto = True
    assert _ids(await streams.send([_send("next")], CREDENTIAL, 30)) == ["next"]
    assert (
        len(messaging.streams) == 2 and messaging.streams[1].written[0].sends[0].send.client_msg_id == "next"
    )
    await streams.close()


async def test_a_stream_that_ended_quietly_fails_the_batches_it_did_not_answer() -> None:
    messaging, streams, waiting = await _one_unanswered("unanswered")
    messaging.streams[0]._responses.put_nowait(_END)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await waiting
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    await streams.close()


async def test_without_send_stream_in_messaging_batches_go_as_calls_until_it_is_asked_again() -> None:
    messaging = FakeMessaging(streaming=False)
    streams = SendStreams(messaging, streams=2, max_age=0.2)
    assert _ids(await streams.send([_send("a")], CREDENTIAL, 30)) == ["a"]
    assert _ids(await streams.send([_send("b")], CREDENTIAL, 30)) == ["b"]
    assert messaging.calls == [["a"], ["b"]]
    assert len(messaging.streams) == 1 and not streams.streaming
    # Messaging was upgraded meanwhile: after the age, streams again.
    messaging.streaming = True
    await asyncio.sleep(0.25)
    assert _ids(await streams.send([_send("c")], CREDENTIAL, 30)) == ["c"]
    assert messaging.calls == [["a"], ["b"]] and len(messaging.streams) == 2
    await streams.close()


async def test_no_streams_means_a_send_messages_call_per_batch() -> None:
    messaging = FakeMessaging()
    streams = SendStreams(messaging, streams=0)
    assert _ids(await streams.send([_send("a")], CREDENTIAL, 30)) == ["a"]
    assert messaging.calls == [["a"]] and messaging.streams == []


async def test_a_draining_stream_gets_no_new_batches_and_is_half_closed_once_answered() -> None:
    messaging, streams, waiting = await _one_unanswered("before")
    old = messaging.streams[0]
    old.respond(messaging_pb2.SendStreamResponse(draining=True))
    await asyncio.sleep(0.05)
    messaging.auto = True
    # Later batches go on a new stream; the old one still answers what it carries.
    assert _ids(await streams.send([_send("after")], CREDENTIAL, 30)) == ["after"]
    assert len(messaging.streams) == 2 and len(old.written) == 1
    assert not old.half_closed
    old.respond(_answer(old.written[0]))
    assert _ids(await waiting) == ["before"]
    await _until(lambda: old.half_closed, "the draining stream half-closed")
    await streams.close()


async def test_an_old_stream_is_retired_for_a_new_one() -> None:
    messaging = FakeMessaging()
    streams = SendStreams(messaging, streams=1, max_age=0.05)
    await streams.send([_send("a")], CREDENTIAL, 30)
    await asyncio.sleep(0.1)
    await streams.send([_send("b")], CREDENTIAL, 30)
    assert len(messaging.streams) == 2
    await _until(lambda: messaging.streams[0].half_closed, "the old stream half-closed")
    assert [len(stream.written) for stream in messaging.streams] == [1, 1]
    await streams.close()


async def test_a_batch_not_answered_in_time_fails_as_deadline_exceeded_and_a_late_answer_is_dropped() -> None:
    messaging = FakeMessaging(auto=False)
    streams = SendStreams(messaging, streams=1)
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await streams.send([_send("slow")], CREDENTIAL, 0.05)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    (stream,) = messaging.streams
    stream.respond(_answer(stream.written[0]))
    stream.auto = True
    # The stream is still good for the next batch.
    assert _ids(await streams.send([_send("next")], CREDENTIAL, 30)) == ["next"]
    assert len(messaging.streams) == 1
    await streams.close()


async def test_a_batch_whose_write_is_held_past_its_timeout_fails_alone() -> None:
    messaging = FakeMessaging()
    streams = SendStreams(messaging, streams=1)
    assert _ids(await streams.send([_send("first")], CREDENTIAL, 30)) == ["first"]
    (stream,) = messaging.streams
    stream.write_gate = asyncio.Event()
    waiting = asyncio.ensure_future(streams.send([_send("patient")], CREDENTIAL, 30))
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await streams.send([_send("hurried")], CREDENTIAL, 0.05)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stream.write_gate.set()
    # The held writes went through: the stream was not cancelled, the other batch is answered.
    assert _ids(await waiting) == ["patient"]
    assert not stream.cancelled
    assert [request.sends[0].send.client_msg_id for request in stream.written] == [
        "first",
        "hurried",
        "patient",
    ]
    assert _ids(await streams.send([_send("after")], CREDENTIAL, 30)) == ["after"]
    assert len(messaging.streams) == 1
    await streams.close()


async def test_closing_cancels_streams_whose_batches_stay_unanswered() -> None:
    messaging, streams, waiting = await _one_unanswered("stuck")
    await streams.close()
    assert messaging.streams[0].cancelled
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await waiting
    assert failed.value.code() == grpc.StatusCode.CANCELLED

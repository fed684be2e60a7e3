"""Messaging's side of SendStream: each batch answered by its id once done (whatever the order), a
batch whose answer fails whole refused send by send while the stream goes on, the stream ended once
the edge half-closed and everything is answered, `draining` told to every stream at shutdown, and
unanswered batches cancelled when the stream ends early."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from chatpop.messaging.v1 import messaging_pb2
from chatpop_messaging.send_streams import SendStreams


def _batch(batch_id: int, *client_msg_ids: str) -> messaging_pb2.SendStreamRequest:
    return messaging_pb2.SendStreamRequest(
        batch_id=batch_id,
        sends=[
            messaging_pb2.BatchedSend(send=messaging_pb2.SendMessageRequest(client_msg_id=cid))
            for cid in client_msg_ids
        ],
    )


class Requests:
    """What the edge writes; `close()` is its half-close."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[messaging_pb2.SendStreamRequest | None] = asyncio.Queue()

    def write(self, request: messaging_pb2.SendStreamRequest) -> None:
        self._queue.put_nowait(request)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[messaging_pb2.SendStreamRequest]:
        while (request := await self._queue.get()) is not None:
            yield request


class Answers:
    """Answers each batch when the test releases it; `fail` makes a batch's answer raise."""

    def __init__(self) -> None:
        self.release: dict[int, asyncio.Event] = {}
        self.fail: set[int] = set()
        self.cancelled: list[int] = []

    async def __call__(self, request: messaging_pb2.SendStreamRequest) -> Sequence[messaging_pb2.SendResult]:
        gate = self.release.setdefault(request.batch_id, asyncio.Event())
        try:
            await gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(request.batch_id)
            raise
        if request.batch_id in self.fail:
            raise RuntimeError("the batch failed whole")
        results = []
        for send in request.sends:
            result = messaging_pb2.SendResult()
            result.sent.message.client_msg_id = send.send.client_msg_id
            results.append(result)
        return results

    def answer(self, batch_id: int) -> None:
        self.release.setdefault(batch_id, asyncio.Event()).set()


def _refusal(exc: Exception) -> messaging_pb2.SendError:
    return messaging_pb2.SendError(status=13, code="internal", message=str(exc))


async def _next(stream: AsyncIterator[messaging_pb2.SendStreamResponse]) -> messaging_pb2.SendStreamResponse:
    return await asyncio.wait_for(anext(stream), timeout=10)


async def test_batches_are_answered_by_id_as_they_finish_and_the_stream_ends_after_the_half_close() -> None:
    requests, answers = Requests(), Answers()
    stream = SendStreams().serve(requests, answers, _refusal)
    requests.write(_batch(1, "a1", "a2"))
    requests.write(_batch(2, "b1"))
    answers.answer(2)
    second = await _next(stream)
    assert (second.batch_id, [r.sent.message.client_msg_id for r in second.results]) == (2, ["b1"])
    requests.close()
    answers.answer(1)
    first = await _next(stream)
    assert (first.batch_id, [r.sent.message.client_msg_id for r in first.results]) == (1, ["a1", "a2"])
    # Half-closed and everything answered: the stream ends.
    assert [response async for response in stream] == []


async def test_a_batch_whose_answer_fails_whole_is_refused_send_by_send_and_the_stream_goes_on() -> None:
    requests, answers = Requests(), Answers()
    stream = SendStreams().serve(requests, answers, _refusal)
    answers.fail.add(1)
    answers.answer(1)
    requests.write(_batch(1, "x", "y"))
    refused = await _next(stream)
    assert refused.batch_id == 1
    assert [(r.error.code, r.error.message) for r in refused.results] == [
        ("internal", "the batch failed whole")
    ] * 2
    answers.answer(2)
    requests.write(_batch(2, "z"))
    assert (await _next(stream)).results[0].sent.message.client_msg_id == "z"
    requests.close()
    assert [response async for response in stream] == []


async def test_draining_is_told_to_open_streams_and_to_those_opened_after() -> None:
    streams = SendStreams()
    requests, answers = Requests(), Answers()
    stream = streams.serve(requests, answers, _refusal)
    requests.write(_batch(1, "before"))
    await asyncio.sleep(0)
    pending = asyncio.ensure_future(_next(stream))
    await asyncio.sleep(0.01)
    assert streams.open == 1
    streams.drain()
    notice = await pending
    assert notice.draining and notice.batch_id == 0 and not notice.results
    # The batch sent before is still answered; then the edge half-closes.
    answers.answer(1)
    assert (await _next(stream)).batch_id == 1
    requests.close()
    assert [response async for response in stream] == []
    assert streams.open == 0
    late = streams.serve(Requests(), Answers(), _refusal)
    assert (await _next(late)).draining
    await late.aclose()


async def test_a_stream_that_ends_early_cancels_its_unanswered_batches() -> None:
    streams = SendStreams()
    requests, answers = Requests(), Answers()
    stream = streams.serve(requests, answers, _refusal)
    requests.write(_batch(1, "one"))
    requests.write(_batch(2, "two"))
    answers.answer(1)
    assert (await _next(stream)).batch_id == 1
    # The edge went away (the call was cancelled): the server closes the response stream.
    await stream.aclose()
    await asyncio.sleep(0.01)
    assert answers.cancelled == [2]
    assert streams.open == 0

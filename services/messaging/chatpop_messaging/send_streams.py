"""SendStream: an edge process's batches of sends on a long-lived stream instead of a call each.

A SendMessages call per batch costs both processes a call's setup and teardown; at low rates, where
nearly every batch holds one send, that was a quarter of the CPU the two spent on a message. On a
stream each batch is one message each way. Each request is one batch, answered as SendMessages would
answer it, as soon as it is done: batches of different rooms may finish out of order, so the answer
carries the request's batch_id.

When messaging begins to shut down, every open stream (and any opened from then on) is told
`draining`: the edge sends its next batches on another stream, which the channel opens on another
process, and half-closes this one; the batches already sent are answered, then the stream ends. A
stream that ends early (the edge went away, the shutdown grace ran out) cancels its unanswered
batches, as a cancelled SendMessages call would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from chatpop.messaging.v1 import messaging_pb2

Answer = Callable[[messaging_pb2.SendStreamRequest], Awaitable[Sequence[messaging_pb2.SendResult]]]
# What each send of a batch is answered with when answering the batch failed as a whole.
Refusal = Callable[[Exception], messaging_pb2.SendError]

_DRAINING = messaging_pb2.SendStreamResponse(draining=True)


class SendStreams:
    """The process's open SendStreams: serves each, and tells them all when shutdown begins."""

    def __init__(self) -> None:
        self._open: set[asyncio.Queue[messaging_pb2.SendStreamResponse | None]] = set()
        self._draining = False

    @property
    def open(self) -> int:
        return len(self._open)

    def drain(self) -> None:
        """Shutdown begins: every stream is told to move its next batches elsewhere."""
        if self._draining:
            return
        self._draining = True
        for answers in self._open:
            answers.put_nowait(_DRAINING)

    async def serve(
        self,
        requests: AsyncIterator[messaging_pb2.SendStreamRequest],
        answer: Answer,
        refusal: Refusal,
    ) -> AsyncIterator[messaging_pb2.SendStreamResponse]:
        """The responses of one stream: each request's answer, once done, until the edge has
        half-closed the stream and every batch it sent is answered. A batch whose answer fails as a
        whole (what would fail a SendMessages call: its size, a bug) gets `refusal` for each send,
        and the stream goes on."""
        answers: asyncio.Queue[messaging_pb2.SendStreamResponse | None] = asyncio.Queue()
        batches: set[asyncio.Task[None]] = set()

        async def answer_one(request: messaging_pb2.SendStreamRequest) -> None:
            response = messaging_pb2.SendStreamResponse(batch_id=request.batch_id)
            try:
                response.results.extend(await answer(request))
            except Exception as exc:
                error = refusal(exc)
                for _ in request.sends:
                    response.results.add().error.CopyFrom(error)
            answers.put_nowait(response)

        async def read() -> None:
            try:
                async for request in requests:
                    task = asyncio.create_task(answer_one(request))
                    batches.add(task)
                    task.add_done_callback(batches.discard)
                while batches:
                    await asyncio.wait(set(batches))
            finally:
                answers.put_nowait(None)

        self._open.add(answers)
        if self._draining:
            answers.put_nowait(_DRAINING)
        reading = asyncio.create_task(read())
        try:
            while (response := await answers.get()) is not None:
                yield response
        finally:
            self._open.discard(answers)
            reading.cancel()
            for task in list(batches):
                task.cancel()

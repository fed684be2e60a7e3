"""The process's batches of sends to messaging on long-lived SendStream calls.

A SendMessages call per batch costs both processes a call's setup and teardown, which at low rates
(one send per batch) was a quarter of the CPU the edge and messaging spent on a message. Here each
batch is one message on a stream and its answer one message back, matched by batch_id (answers may
come out of order). The process keeps up to SEND_STREAMS streams open and sends batches on them in
turn; the channel balances each new stream over messaging's processes, like calls. A stream is
retired (no new batches; half-closed once its batches are answered) after SEND_STREAM_MAX_AGE
seconds, so processes that joined since get their share, and at once when messaging says it is
draining (shutting down).

Each batch fails as a call would: the stream's error status if it breaks (every batch on it whose
answer had not come), DEADLINE_EXCEEDED if its answer takes longer than the timeout. A batch's write,
once begun, finishes even when the batch times out meanwhile: gRPC cancels a call whose write is cut
short, which would fail every other batch on the stream. A messaging
that does not know SendStream (UNIMPLEMENTED: an older version during an upgrade) gets SendMessages
calls instead, and is asked again after SEND_STREAM_MAX_AGE.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence

import grpc

from chatpop.messaging.v1 import messaging_pb2

log = logging.getLogger(__name__)


def _status(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def _fresh(error: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
    """The same status for one more batch (an exception raised in many places would collect all
    their tracebacks)."""
    return grpc.aio.AioRpcError(
        error.code(),
        error.initial_metadata(),
        error.trailing_metadata(),
        details=error.details(),
        debug_error_string=error.debug_error_string(),
    )


class _Stream:
    """One SendStream call and the batches waiting for their answers on it."""

    def __init__(self, call: grpc.aio.StreamStreamCall, owner: SendStreams, opened: float) -> None:
        self._call = call
        self._owner = owner
        self.opened = opened
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[messaging_pb2.SendMessagesResponse]] = {}
        # One write at a time (the call allows no more), and the half-close after the last.
        self._writing = asyncio.Lock()
        self.retired = False
        self.ended = False
        self._half_closed = False
        self._failure = _status(grpc.StatusCode.UNAVAILABLE, "the send stream ended before the answer")
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def send(
        self, sends: Sequence[messaging_pb2.BatchedSend], answer_within: float
    ) -> messaging_pb2.SendMessagesResponse:
        if self.ended:
            raise _fresh(self._failure)
        batch_id = next(self._ids)
        answer: asyncio.Future[messaging_pb2.SendMessagesResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting[batch_id] = answer
        request = messaging_pb2.SendStreamRequest(
            batch_id=batch_id, sends=sends, timeout_ms=max(1, round(answer_within * 1000))
        )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + answer_within):
                await self._writing.acquire()
                # A write cut short would cancel the whole call (gRPC's aio does) and fail every
                # other batch on it: once begun it finishes, even after this batch stopped waiting.
                write = loop.create_task(self._write(request))
                write.add_done_callback(_written)
                await asyncio.shield(write)
                return await answer
        except TimeoutError:
            raise _status(grpc.StatusCode.DEADLINE_EXCEEDED, "the batch was not answered in time") from None
        finally:
            self._waiting.pop(batch_id, None)
            self._close_if_done()

    async def _write(self, request: messaging_pb2.SendStreamRequest) -> None:
        """Write one batch; the caller holds `_writing`, released here once the write is over."""
        try:
            await self._call.write(request)
        except asyncio.InvalidStateError:
            # The stream had ended meanwhile: its status is the batch's.
            await asyncio.wait({self._reader})
            raise _fresh(self._failure) from None
        finally:
            self._writing.release()

    def retire(self) -> None:
        """No new batches; half-closed once the batches on it are answered."""
        if not self.retired:
            self.retired = True
            self._owner._forget(self)
            self._close_if_done()

    def cancel(self) -> None:
        self._call.cancel()

    def _close_if_done(self) -> None:
        if self.retired and not self._waiting and not self._half_closed and not self.ended:
            self._half_closed = True
            asyncio.get_running_loop().create_task(self._half_close())

    async def _half_close(self) -> None:
        async with self._writing:
            # It may have ended meanwhile.
            with contextlib.suppress(asyncio.InvalidStateError, grpc.aio.AioRpcError):
                await self._call.done_writing()

    async def _read(self) -> None:
        failure = self._failure
        try:
            async for response in self._call:
                if response.draining:
                    self.retire()
                    continue
                answer = self._waiting.get(response.batch_id)
                if answer is not None and not answer.done():
                    answer.set_result(messaging_pb2.SendMessagesResponse(results=response.results))
        except grpc.aio.AioRpcError as exc:
            failure = exc
        except asyncio.CancelledError:
            failure = _status(grpc.StatusCode.CANCELLED, "the send stream was closed")
            raise
        finally:
            self.ended = True
            self._failure = failure
            self._owner._forget(self)
            for answer in self._waiting.values():
                if not answer.done():
                    answer.set_exception(_fresh(failure))
                    # Read by send(); a batch whose sender stopped waiting must not warn.
                    answer.add_done_callback(_retrieved)


def _retrieved(future: asyncio.Future[messaging_pb2.SendMessagesResponse]) -> None:
    if not future.cancelled():
        future.exception()


def _written(task: asyncio.Task[None]) -> None:
    """A write whose batch stopped waiting (timed out) fails unseen: not worth a warning."""
    if not task.cancelled():
        task.exception()


class SendStreams:
    """Sends batches on up to `streams` SendStream calls of `stub`, in turn; SendMessages calls
    instead when `streams` is 0 or messaging does not know SendStream."""

    def __init__(self, stub: object, *, streams: int = 2, max_age: float = 60.0) -> None:
        self._stub = stub
        self._streams = max(0, streams)
        self._max_age = max_age
        self._open: list[_Stream] = []
        self._all: set[_Stream] = set()
        self._turn = 0
        # Loop time until which batches go as calls: messaging answered UNIMPLEMENTED (asked again
        # after SEND_STREAM_MAX_AGE, so the streams come back once it is upgraded).
        self._calls_until = 0.0

    @property
    def streaming(self) -> bool:
        return self._streams > 0 and asyncio.get_running_loop().time() >= self._calls_until

    async def send(
        self,
        sends: Sequence[messaging_pb2.BatchedSend],
        metadata: Sequence[tuple[str, str]],
        answer_within: float,
    ) -> messaging_pb2.SendMessagesResponse:
        """The batch's answer, as a SendMessages call with that timeout would give it (or its
        AioRpcError)."""
        if self.streaming:
            try:
                return await self._stream(metadata).send(sends, answer_within)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                # Not tried at all: it goes as a call, and so do the next ones for a while.
                if self.streaming:
                    log.warning("messaging does not know SendStream: sends go as SendMessages calls")
                    self._calls_until = asyncio.get_running_loop().time() + self._max_age
        response: messaging_pb2.SendMessagesResponse = await self._stub.SendMessages(  # type: ignore[attr-defined]
            messaging_pb2.SendMessagesRequest(sends=sends), metadata=metadata, timeout=answer_within
        )
        return response

    def _stream(self, metadata: Sequence[tuple[str, str]]) -> _Stream:
        now = asyncio.get_running_loop().time()
        for stream in [s for s in self._open if now - s.opened >= self._max_age]:
            stream.retire()
        if len(self._open) < self._streams:
            call = self._stub.SendStream(metadata=metadata)  # type: ignore[attr-defined]
            stream = _Stream(call, self, now)
            self._open.append(stream)
            self._all.add(stream)
            return stream
        self._turn = (self._turn + 1) % len(self._open)
        return self._open[self._turn]

    def _forget(self, stream: _Stream) -> None:
        """The stream takes no more batches (retired or ended)."""
        if stream in self._open:
            self._open.remove(stream)
        if stream.ended:
            self._all.discard(stream)

    async def close(self) -> None:
        """Retire every stream; cancel those whose batches are still unanswered after a moment."""
        for stream in list(self._open):
            stream.retire()
        for _ in range(50):
            if not any(not stream.ended for stream in self._all):
                return
            await asyncio.sleep(0.02)
        for stream in list(self._all):
            stream.cancel()

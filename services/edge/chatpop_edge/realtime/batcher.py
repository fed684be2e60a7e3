"""The process's sends to messaging, coalesced: one batch per short tick.

Every WebSocket (and REST) send of this edge process goes through one SendBatcher. A send that finds
no call in flight leaves at once (with whatever else arrives in the same turn of the event loop); one
that arrives while a call is in flight waits at most SEND_BATCH_DELAY seconds (or until SEND_BATCH_MAX
sends are waiting, or a call slot frees up) and leaves with the others in one batch, on one of the
process's SendStream calls (send_streams.py; a `SendMessages` call each where messaging has none),
made with the edge's service credential; each send names the participant whose room token the edge
verified and carries its own W3C trace context, so messaging answers (and traces) each as
SendMessage would have. The results come back in request order and resolve each
send's own future: an ack, or that send's error, never another's.

Bounded: at most SEND_BATCH_CALLS batches are in flight; sends waiting or in flight beyond
SEND_QUEUE_LIMIT are refused at once (`overloaded`, retryable, with retry_after_ms) instead of
queueing work that would time out. Sends a socket read while its earlier ones are still being
answered count too (`reserve`): they are refused when they arrive, not once their turn comes.
Sends a caller submits together stay consecutive in one call, so a socket's messages commit in the
order it sent them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.context import Context

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.auth import Principal
from chatpop_common.errors import error_details
from chatpop_edge.errors import _GRPC_TO_HTTP, MappedError, map_rpc_error
from chatpop_edge.metrics import SEND_BATCH_SIZE, SENDS_REFUSED
from chatpop_edge.realtime.send_streams import SendStreams

log = logging.getLogger(__name__)

# What a full SendMessages request may hold (messaging's contract).
MAX_SENDS_PER_CALL = 1000
OVERLOADED = "overloaded"
OVERLOADED_MESSAGE = "ChatPop is busy right now; try this message again in a moment."

_REFUSED_OVERLOADED = SENDS_REFUSED.labels(OVERLOADED)

MetadataSource = Callable[[], Awaitable[Sequence[tuple[str, str]]]]


class SendFailure(Exception):
    """Why one send was not stored: what SendMessage would have failed with. A fresh instance per
    send (an exception object raised in many places would collect all their tracebacks)."""

    def __init__(
        self,
        status: grpc.StatusCode,
        code: str,
        message: str,
        retryable: bool = False,
        retry_after_ms: int = 0,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms

    def copy(self) -> SendFailure:
        return SendFailure(self.status, self.code, self.message, self.retryable, self.retry_after_ms)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @property
    def retry_after(self) -> int | None:
        """Whole seconds for the `retry_after` of error frames and bodies (None when not given)."""
        return max(1, math.ceil(self.retry_after_ms / 1000)) if self.retry_after_ms else None

    def mapped(self) -> MappedError:
        """The error as the edge shows it (HTTP status, code, message), as map_rpc_error would."""
        if self.status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return MappedError(503, self.code, self.message, self.retry_after or 1, True)
        http_status, default_code, retryable = _GRPC_TO_HTTP.get(self.status, (500, "internal", False))
        if http_status == 500:
            return MappedError(500, "internal", "Something went wrong on our side.")
        retry_after = self.retry_after
        if http_status == 429 and retry_after is None:
            retry_after = 1
        return MappedError(
            http_status, self.code or default_code, self.message, retry_after, self.retryable or retryable
        )

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError) -> SendFailure:
        """A failed call: every send in it fails the way one SendMessage call would have."""
        mapped = map_rpc_error(error)
        _code, retry_after = error_details(error)
        status = error.code()
        if mapped.status == 503:
            status = grpc.StatusCode.UNAVAILABLE
        return cls(
            status,
            mapped.code,
            mapped.message,
            mapped.retryable,
            (retry_after or mapped.retry_after or 0) * 1000,
        )

    @classmethod
    def from_proto(cls, error: messaging_pb2.SendError) -> SendFailure:
        try:
            status = grpc.StatusCode[_STATUS_NAMES[error.status]]
        except KeyError:
            status = grpc.StatusCode.INTERNAL
        return cls(status, error.code, error.message, error.retryable, max(0, error.retry_after_ms))


_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}

INTERNAL = SendFailure(grpc.StatusCode.INTERNAL, "internal", "Something went wrong on our side.")
UNAVAILABLE = SendFailure(
    grpc.StatusCode.UNAVAILABLE,
    "service_unavailable",
    "ChatPop is briefly unavailable. Please try again.",
    True,
    1000,
)


class Overloaded(Exception):
    """This process already has as many sends waiting as it may: refused before any work."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(OVERLOADED_MESSAGE)
        self.failure = SendFailure(
            grpc.StatusCode.RESOURCE_EXHAUSTED, OVERLOADED, OVERLOADED_MESSAGE, True, retry_after_ms
        )


def batched_send(
    request: messaging_pb2.SendMessageRequest, principal: Principal, context: Context | None = None
) -> messaging_pb2.BatchedSend:
    """One send for SendMessages: the request, the verified sender, the trace context it belongs to
    (the given one, or the caller's current one)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return messaging_pb2.BatchedSend(
        send=request,
        participant_id=principal.participant_id,
        token_version=principal.version,
        traceparent=carrier.get("traceparent", ""),
        tracestate=carrier.get("tracestate", ""),
    )


_Pending = tuple[messaging_pb2.BatchedSend, "asyncio.Future[messaging_pb2.SendMessageResponse]"]


class SendBatcher:
    """Collects the process's sends and makes one SendMessages call per tick. Create in the loop."""

    def __init__(
        self,
        stub: object,
        metadata: MetadataSource,
        *,
        delay: float = 0.001,
        max_batch: int = 256,
        max_calls: int = 4,
        queue_limit: int = 2000,
        timeout: float = 5.0,
        retry_after_ms: int = 200,
        streams: int = 0,
        stream_max_age: float = 60.0,
    ) -> None:
        self._stub = stub
        # The batches go on SendStream calls (send_streams.py), or as SendMessages calls with none.
        self._transport = SendStreams(stub, streams=streams, max_age=stream_max_age)
        self._metadata = metadata
        self._delay = delay
        self._max_batch = max(1, min(max_batch, MAX_SENDS_PER_CALL))
        self._max_calls = max(1, max_calls)
        self._queue_limit = queue_limit
        self._timeout = timeout
        self._retry_after_ms = retry_after_ms
        # What every send refused by `reserve` is answered with (read only: one for all of them).
        self._refused = Overloaded(retry_after_ms).failure
        self._loop = asyncio.get_running_loop()
        self._waiting: list[_Pending] = []
        # Sends waiting or in a call, and sends sockets hold for a later submit (reserved): what the
        # queue limit counts.
        self.outstanding = 0
        self.reserved = 0
        self._calls: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Handle | None = None
        self._closed = False

    def reserve(self) -> SendFailure | None:
        """Room for one send a socket holds until its earlier sends are answered, counted against the
        queue limit from now on; the refusal to answer it with at once when there is none. A socket
        gives its reservations back (`unreserve`) right before it submits those sends, or when it
        ends with them unsent."""
        if self._closed or self.outstanding + self.reserved >= self._queue_limit:
            _REFUSED_OVERLOADED.inc()
            return self._refused
        self.reserved += 1
        return None

    def unreserve(self, count: int) -> None:
        self.reserved -= count

    def submit(
        self, sends: Sequence[messaging_pb2.BatchedSend]
    ) -> list[asyncio.Future[messaging_pb2.SendMessageResponse]]:
        """Queue sends (kept consecutive, in this order, within one call); a future per send resolves
        to its SendMessageResponse or fails with its SendFailure. Raises Overloaded, queueing none,
        when they would pass the limit."""
        if self._closed:
            raise Overloaded(self._retry_after_ms)
        if self.outstanding + self.reserved + len(sends) > self._queue_limit:
            _REFUSED_OVERLOADED.inc(len(sends))
            raise Overloaded(self._retry_after_ms)
        if len(self._waiting) + len(sends) > self._max_batch and self._waiting:
            # They would not fit the call being collected: that one leaves first, if it may.
            self._flush_ready()
        futures: list[asyncio.Future[messaging_pb2.SendMessageResponse]] = []
        for send in sends:
            future: asyncio.Future[messaging_pb2.SendMessageResponse] = self._loop.create_future()
            # A sender that went away (its socket closed) never reads its failure: no warning for it.
            future.add_done_callback(_retrieved)
            self._waiting.append((send, future))
            futures.append(future)
        self.outstanding += len(sends)
        if len(self._waiting) >= self._max_batch:
            self._flush_ready()
        if self._waiting and self._timer is None:
            if self._calls:
                # A call is in flight: what arrives meanwhile is collected for a tick.
                self._timer = self._loop.call_later(self._delay, self._tick)
            else:
                # Nothing in flight: no reason to wait a tick. What arrives in this turn of the loop
                # (other sockets' sends read together) still leaves with it.
                self._timer = self._loop.call_soon(self._tick)
        return futures

    async def send(
        self, request: messaging_pb2.SendMessageRequest, principal: Principal
    ) -> messaging_pb2.SendMessageResponse:
        """One send, as SendMessage: its response, or its SendFailure raised (Overloaded's too)."""
        try:
            (future,) = self.submit([batched_send(request, principal)])
        except Overloaded as exc:
            raise exc.failure from None
        return await future

    def _tick(self) -> None:
        self._timer = None
        self._flush_ready()
        if self._waiting and self._timer is None and len(self._calls) < self._max_calls:
            self._timer = self._loop.call_later(self._delay, self._tick)

    def _flush_ready(self) -> None:
        """Start calls for what is waiting while call slots are free (whole submissions per call)."""
        while self._waiting and len(self._calls) < self._max_calls:
            cut = min(len(self._waiting), self._max_batch)
            batch, self._waiting = self._waiting[:cut], self._waiting[cut:]
            task = self._loop.create_task(self._call(batch))
            self._calls.add(task)
            task.add_done_callback(self._call_done)
        if not self._waiting and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        # A slot is free: what waited for one (longer than a tick, since the slots were busy) goes now.
        if self._waiting and not self._closed:
            self._flush_ready()

    async def _call(self, batch: list[_Pending]) -> None:
        # The call carries the sends of many requests, each with its own trace context: it belongs to
        # none of their traces (not to that of whichever send started the tick). Messaging's span of
        # each send is in the send's trace and links the call's.
        token = otel_context.attach(Context())
        try:
            await self._call_batch(batch)
        finally:
            otel_context.detach(token)

    async def _call_batch(self, batch: list[_Pending]) -> None:
        SEND_BATCH_SIZE.observe(len(batch))
        try:
            try:
                metadata = await self._metadata()
                response = await self._transport.send(
                    [send for send, _future in batch], metadata, self._timeout
                )
            except grpc.aio.AioRpcError as exc:
                failure = SendFailure.from_rpc_error(exc)
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    # The edge's own credential was refused: not the senders' fault, and worth a look.
                    log.error("SendMessages refused the edge's credential", extra={"grpc": exc.code().name})
                    failure = INTERNAL
                for _send, future in batch:
                    _fail(future, failure)
                return
            except asyncio.CancelledError:
                for _send, future in batch:
                    _fail(future, UNAVAILABLE)
                raise
            except Exception:
                log.exception("SendMessages failed", extra={"sends": len(batch)})
                for _send, future in batch:
                    _fail(future, INTERNAL)
                return
            results = response.results
            if len(results) != len(batch):
                log.error("SendMessages answered %d results for %d sends", len(results), len(batch))
                for _send, future in batch:
                    _fail(future, INTERNAL)
                return
            for (_send, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if result.HasField("sent"):
                    future.set_result(result.sent)
                elif result.HasField("error"):
                    future.set_exception(SendFailure.from_proto(result.error))
                else:
                    future.set_exception(INTERNAL.copy())
        finally:
            self.outstanding -= len(batch)

    async def close(self) -> None:
        """Waiting sends are refused as unavailable; calls in flight finish."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, []
        self.outstanding -= len(waiting)
        for _send, future in waiting:
            _fail(future, UNAVAILABLE)
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)
        await self._transport.close()


def _fail(future: asyncio.Future[messaging_pb2.SendMessageResponse], failure: SendFailure) -> None:
    if not future.done():
        future.set_exception(failure.copy())


def _retrieved(future: asyncio.Future[messaging_pb2.SendMessageResponse]) -> None:
    if not future.cancelled():
        future.exception()

"""Server interceptors that cover unary and streaming handlers alike.

Each interceptor rewraps the handler's behaviour function, whatever its arity:
- metrics: Prometheus RED with the conventional go-grpc-prometheus names;
- principal: verifies the bearer token in metadata and exposes it through a context variable;
- errors: turns ServiceError into a status with a machine code; retries a call that met a passing
  datastore failure and answers UNAVAILABLE if it persists; anything else becomes INTERNAL without
  internals leaking to the caller.
Tracing comes from OpenTelemetry's own aio server interceptor, installed before these.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from chatpop_common.auth import TokenVerifier, bearer_from_metadata, reset_principal, set_principal
from chatpop_common.backoff import Backoff
from chatpop_common.errors import ServiceError, Unavailable
from chatpop_common.transient import is_transient

log = logging.getLogger(__name__)

STARTED = Counter(
    "grpc_server_started_total",
    "Total number of RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
HANDLED = Counter(
    "grpc_server_handled_total",
    "Total number of RPCs completed on the server, regardless of success or failure.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MSG_RECEIVED = Counter(
    "grpc_server_msg_received_total",
    "Total number of RPC stream messages received on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
MSG_SENT = Counter(
    "grpc_server_msg_sent_total",
    "Total number of gRPC stream messages sent by the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)

TRANSIENT_RETRIES = Counter(
    "chatpop_transient_retries_total",
    "Calls run again because a datastore was briefly unavailable (restart, failover, serialization).",
    ["grpc_service", "grpc_method"],
)

UNAVAILABLE_MESSAGE = "ChatPop is briefly unavailable. Please try again in a moment."
# Seconds kept from the caller's deadline so that UNAVAILABLE reaches it before the deadline does.
_ANSWER_MARGIN = 0.25

Behaviour = Callable[..., Any]
Wrapper = Callable[[Behaviour, bool, bool, str], Behaviour]


def _rpc_type(handler: grpc.RpcMethodHandler) -> tuple[bool, bool]:
    return bool(handler.request_streaming), bool(handler.response_streaming)


def _grpc_type(request_streaming: bool, response_streaming: bool) -> str:
    if request_streaming and response_streaming:
        return "bidi_stream"
    if request_streaming:
        return "client_stream"
    if response_streaming:
        return "server_stream"
    return "unary"


def _rewrap(handler: grpc.RpcMethodHandler, wrap: Wrapper, method: str) -> grpc.RpcMethodHandler:
    req_stream, resp_stream = _rpc_type(handler)
    if not req_stream and not resp_stream:
        return grpc.unary_unary_rpc_method_handler(
            wrap(handler.unary_unary, False, False, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if not req_stream and resp_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream, False, True, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if req_stream and not resp_stream:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary, True, False, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        wrap(handler.stream_stream, True, True, method),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Base class: rewrap every handler with `self.wrap`.

    The wrapped handler is built once per method and reused: building closures on every call would
    cost more than the interceptor's own work.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, behaviour: Behaviour, req_stream: bool, resp_stream: bool, method: str) -> Behaviour:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _rewrap(handler, self.wrap, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


async def _responses(behaviour: Behaviour, request: Any, context: Any) -> AsyncIterator[Any]:
    """Iterate a streaming handler, whether it yields responses or writes them with context.write."""
    result = behaviour(request, context)
    if hasattr(result, "__aiter__"):
        async for response in result:
            yield response
    else:
        await result


def _split_method(full: str) -> tuple[str, str]:
    _, service, method = full.split("/", 2) if full.count("/") >= 2 else ("", "unknown", full)
    return service, method


async def _count_requests(requests: AsyncIterator[Any], labels: tuple[str, str, str]) -> AsyncIterator[Any]:
    async for request in requests:
        MSG_RECEIVED.labels(*labels).inc()
        yield request


class MetricsInterceptor(_WrappingInterceptor):
    def wrap(self, behaviour: Behaviour, req_stream: bool, resp_stream: bool, method: str) -> Behaviour:
        service, name = _split_method(method)
        labels = (_grpc_type(req_stream, resp_stream), service, name)

        started_total = STARTED.labels(*labels)
        handling = HANDLING.labels(*labels)
        received = MSG_RECEIVED.labels(*labels)
        sent = MSG_SENT.labels(*labels)
        handled_ok = HANDLED.labels(*labels, grpc.StatusCode.OK.name)

        def finish(context: grpc.aio.ServicerContext, started: float, error: BaseException | None) -> None:
            code = context.code()
            if code is None:
                code = grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
            if isinstance(code, int):
                code = grpc.StatusCode(code)
            if code is grpc.StatusCode.OK:
                handled_ok.inc()
            else:
                HANDLED.labels(*labels, code.name).inc()
            handling.observe(time.perf_counter() - started)

        def begin(request: Any) -> tuple[Any, float]:
            started_total.inc()
            if req_stream:
                request = _count_requests(request, labels)
            else:
                received.inc()
            return request, time.perf_counter()

        if resp_stream:

            async def stream_behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                request, started = begin(request)
                error: BaseException | None = None
                try:
                    async for response in _responses(behaviour, request, context):
                        sent.inc()
                        yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    finish(context, started, error)

            return stream_behaviour

        async def unary_behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request, started = begin(request)
            error: BaseException | None = None
            try:
                response = await behaviour(request, context)
                sent.inc()
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                finish(context, started, error)

        return unary_behaviour


class ErrorInterceptor(_WrappingInterceptor):
    """ServiceError → status + machine code; transient datastore failures → retried, then UNAVAILABLE;
    anything else → INTERNAL with a logged traceback.

    A unary call that fails because Postgres or Redis is briefly away (a restart, a failover, a
    serialization failure) runs again after a short backoff while its deadline and `retry_budget`
    allow: the handlers are written to be retried (sends carry an idempotency key). A call that still
    fails is answered UNAVAILABLE with Retry-After, which every client treats as "try again".
    """

    def __init__(self, retry_budget: float = 3.0) -> None:
        super().__init__()
        self._retry_budget = retry_budget

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
        if isinstance(exc, ServiceError):
            context.set_trailing_metadata(exc.trailing_metadata())
            await context.abort(exc.status, exc.message)
        if is_transient(exc):
            log.warning("datastore unavailable in %s: %s: %s", method, type(exc).__name__, exc)
            unavailable = Unavailable(UNAVAILABLE_MESSAGE, code="service_unavailable", retry_after=1)
            context.set_trailing_metadata(unavailable.trailing_metadata())
            await context.abort(unavailable.status, unavailable.message)
        log.exception("unhandled error in %s", method, exc_info=exc)
        context.set_trailing_metadata((("chatpop-error-code", "internal"),))
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    def _retry_deadline(self, context: grpc.aio.ServicerContext) -> float:
        """When the last retry must have started: within the budget, and early enough to answer."""
        budget = self._retry_budget
        remaining = context.time_remaining()
        if remaining is not None:
            budget = min(budget, remaining - _ANSWER_MARGIN)
        return asyncio.get_running_loop().time() + budget

    def wrap(self, behaviour: Behaviour, req_stream: bool, resp_stream: bool, method: str) -> Behaviour:
        abort = self._abort
        if resp_stream:

            async def stream_behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    async for response in _responses(behaviour, request, context):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await abort(context, exc, method)

            return stream_behaviour

        service, name = _split_method(method)
        retries = TRANSIENT_RETRIES.labels(service, name)
        # A client stream cannot be read twice: such calls are answered at once.
        retryable = not req_stream

        async def unary_behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            deadline: float | None = None
            backoff = Backoff(first=0.05, limit=0.8)
            while True:
                try:
                    return await behaviour(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    if retryable and not isinstance(exc, ServiceError) and is_transient(exc):
                        loop = asyncio.get_running_loop()
                        if deadline is None:
                            deadline = self._retry_deadline(context)
                        delay = backoff.next()
                        if loop.time() + delay < deadline:
                            retries.inc()
                            await asyncio.sleep(delay)
                            continue
                    await abort(context, exc, method)

        return unary_behaviour


class PrincipalInterceptor(_WrappingInterceptor):
    """Verifies `authorization: Bearer …` metadata when present; a bad token fails the call."""

    def __init__(self, verifier: TokenVerifier) -> None:
        super().__init__()
        self._verifier = verifier

    def wrap(self, behaviour: Behaviour, req_stream: bool, resp_stream: bool, method: str) -> Behaviour:
        verifier = self._verifier

        async def authenticate(context: grpc.aio.ServicerContext) -> Any:
            token = bearer_from_metadata(context.invocation_metadata())
            return await verifier.verify(token) if token else None

        if resp_stream:

            async def stream_behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                # Each RPC runs in its own task and context, so the value needs no reset here
                # (an async generator may be finalised from another context, where reset fails).
                set_principal(await authenticate(context))
                async for response in _responses(behaviour, request, context):
                    yield response

            return stream_behaviour

        async def unary_behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            reset = set_principal(await authenticate(context))
            try:
                return await behaviour(request, context)
            finally:
                reset_principal(reset)

        return unary_behaviour

"""One client WebSocket in a room: its outbound queue and writer, its reader, its sends and resumes.

Delivery bookkeeping per socket:
- `last_seq` is the highest seq the client has (delivered here, or claimed by its resume);
- `live_from`: every seq in (live_from, last_seq] was delivered on this socket. A new socket is
  live from the room's position at connect time (the `ready` frame says which);
- while a resume or gap fill runs, live frames are held and delivered after the fetched ones,
  skipping anything the client already has: no duplicates, no gaps.

A socket that sends nothing at all (not even a ping) for `ws_idle_timeout` seconds is closed with
4408, so connections whose client vanished without a close do not pile up (or keep it online).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import jwt
from opentelemetry import trace
from opentelemetry.context import Context
from starlette.websockets import WebSocket, WebSocketDisconnect

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.auth import Principal
from chatpop_common.backoff import Backoff
from chatpop_common.telemetry import tracing_enabled
from chatpop_edge.backends import Backends, auth_metadata
from chatpop_edge.connections import EdgeWebSocketProtocol, Flag, outbound_of
from chatpop_edge.errors import map_rpc_error
from chatpop_edge.metrics import (
    DELIVERIES,
    RESUMES,
    SLOW_SOCKET_CLOSES,
    WS_IDLE_CLOSES,
)
from chatpop_edge.realtime import frames
from chatpop_edge.realtime.batcher import OVERLOADED, Overloaded, SendBatcher, SendFailure, batched_send
from chatpop_edge.realtime.hub import created_at_seconds
from chatpop_edge.settings import EdgeSettings

if TYPE_CHECKING:
    from chatpop_edge.realtime.hub import RoomHub

log = logging.getLogger(__name__)

# WebSocket close codes (4xxx are ours; the rest are RFC 6455).
CLOSE_INVALID_TOKEN = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_REQUEST = 4400
CLOSE_IDLE = 4408
CLOSE_TRY_AGAIN = 1013
TOO_SLOW = "too slow: reconnect and resume"

_MAX_PENDING_SENDS = 32
_NOBODY: frozenset[str] = frozenset()
# The error frame's code and message for a failure nobody expected (REST answers it with a 500).
_INTERNAL = ("internal", "Something went wrong on our side.")
# Seconds a close may take before the connection is dropped (a peer that stopped reading).
_CLOSE_TIMEOUT = 2.0
_FILL_ATTEMPTS = 5
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_tracer = trace.get_tracer(__name__)
# The span each send gets here (its own trace, carried to messaging inside the batch).
_SEND_SPAN = "/chatpop.messaging.v1.MessagingService/SendMessage"


def _token_expiry(token: str) -> float:
    """The token's `exp` (it was verified just before); used to pick the freshest token of a room."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return 0.0
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else 0.0


def close_code_for(error: grpc.aio.AioRpcError) -> int:
    status = error.code()
    if status == grpc.StatusCode.UNAUTHENTICATED:
        return CLOSE_INVALID_TOKEN
    if status == grpc.StatusCode.PERMISSION_DENIED:
        return CLOSE_FORBIDDEN
    if status == grpc.StatusCode.NOT_FOUND:
        return CLOSE_NOT_FOUND
    return CLOSE_TRY_AGAIN


class _FlushSoon:
    """Sockets with frames queued outside a room channel's pass (acks, errors, pongs): flushed once
    at the next turn of the loop, all of them in one callback, so frames queued together go out in
    one write and no task is started per frame."""

    __slots__ = ("_scheduled", "_sessions")

    def __init__(self) -> None:
        self._sessions: dict[SocketSession, None] = {}
        self._scheduled = False

    def add(self, session: SocketSession) -> None:
        self._sessions[session] = None
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        sessions, self._sessions = self._sessions, {}
        for session in sessions:
            try:
                session.flush()
            except Exception:
                log.exception("flushing a socket's frames failed", extra={"room_id": session.room_id})


_FLUSH_SOON = _FlushSoon()


class SocketSession:
    # An open socket holds one for its whole life: slots, not a __dict__ (~1.2 KiB less each).
    __slots__ = (
        "_backends",
        "_backfill_bytes",
        "_catch_up_task",
        "_catching_up",
        "_close_request",
        "_connection",
        "_finished",
        "_held",
        "_idle_timeout",
        "_idle_timer",
        "_last_read",
        "_last_typing",
        "_live_timeout",
        "_live_waiter",
        "_muted",
        "_mutes",
        "_mutes_frame",
        "_outbox",
        "_overflowed",
        "_pending_resume",
        "_queue_limit",
        "_queued_bytes",
        "_resume_limit",
        "_send_budget",
        "_send_room",
        "_send_wake",
        "_sender",
        "_sends",
        "_typing_call",
        "_typing_interval",
        "_writer",
        "_ws",
        "last_seq",
        "live",
        "live_from",
        "principal",
        "room_id",
        "token",
        "token_expires_at",
    )

    def __init__(
        self,
        websocket: WebSocket,
        *,
        room_id: str,
        principal: Principal,
        token: str,
        backends: Backends,
        settings: EdgeSettings,
    ) -> None:
        self.room_id = room_id
        self.principal = principal
        self.token = token
        self.token_expires_at = _token_expiry(token)
        self._ws = websocket
        self._backends = backends
        self._queue_limit = settings.ws_queue_limit
        self._resume_limit = settings.resume_limit
        self._typing_interval = settings.typing_interval
        self._idle_timeout = settings.ws_idle_timeout
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._live_timeout = settings.rpc_timeout
        # Outgoing bytes waiting: queued here, plus (under the edge's own protocol) the transport's.
        self._connection = outbound_of(websocket.scope)
        self._send_budget = settings.ws_send_budget
        # Below this much queued here the budget cannot be passed, whatever the transport holds.
        self._send_room = settings.ws_send_budget - (
            self._connection.write_high_water if self._connection is not None else 0
        )
        self._queued_bytes = 0
        self._backfill_bytes = 0
        # The task writing what `flush` could not write at once; it ends once everything is sent, so
        # an idle socket holds none.
        self._writer: asyncio.Task[bool] | None = None

        # Flags and lists, not asyncio.Event and deque: each of those costs ~760 bytes up front, and
        # an idle socket would hold them all its life.
        self._outbox: list[tuple[str, float]] = []
        self._close_request: tuple[int, str] | None = None
        self._overflowed = False
        self._finished = Flag()
        self.live = Flag()
        self._live_waiter: asyncio.Future[None] | None = None

        self.last_seq = 0
        self.live_from = 0
        self._catching_up = False
        self._held: list[tuple[int, str, float]] = []
        self._catch_up_task: asyncio.Task[None] | None = None
        self._pending_resume: int | None = None

        # The participant's mutes: whose typing this socket does not get. The list goes to the client
        # as a `mutes` frame right after `ready` (set_mutes before the socket is live), then on change.
        self._mutes: tuple[str, ...] | None = None
        self._muted: frozenset[str] = _NOBODY
        self._mutes_frame: str | None = None

        # Made on the first send: most sockets only read.
        self._sends: deque[frames.SendFrame] | None = None
        self._send_wake: Flag | None = None
        self._sender: asyncio.Task[None] | None = None
        self._last_typing = float("-inf")
        self._typing_call: asyncio.Task[None] | None = None

    # --- called by the room channel (synchronous: never awaits per recipient) ----------------------

    def go_live(self, last_seq: int) -> None:
        self.last_seq = last_seq
        self.live_from = last_seq
        self._enqueue(frames.ready_frame(self.room_id, self.principal.participant_id, last_seq))
        if self._mutes_frame is not None:
            self._enqueue(self._mutes_frame)
            self._mutes_frame = None
        self.live.set()
        self._wake_run()

    def set_mutes(self, participant_ids: Sequence[str]) -> None:
        """The participant's mutes now: a `mutes` frame right after `ready`, or at once when live
        (none when the list is the one the socket has already)."""
        mutes = tuple(participant_ids)
        if mutes == self._mutes:
            return
        # An empty frozenset() is a fresh 216-byte object each time; most sockets mute nobody.
        self._muted = frozenset(mutes) if mutes else _NOBODY
        self._mutes = mutes
        frame = frames.mutes_frame(mutes)
        if self.live.is_set():
            self._enqueue(frame)
        else:
            self._mutes_frame = frame

    def has_muted(self, participant_id: str) -> bool:
        return participant_id in self._muted

    def offer(self, seq: int, frame: str, created_at: float) -> None:
        """A live message frame of the room."""
        if self._close_request is not None:
            return
        if self._catching_up:
            self._held.append((seq, frame, created_at))
            if len(self._held) > self._queue_limit:
                self._too_slow()
            return
        if seq <= self.last_seq:
            return
        if seq == self.last_seq + 1:
            self.last_seq = seq
            # Sent by flush() at the end of the channel's pass, not by a turn of the writer task.
            self._enqueue(frame, created_at, wake=False)
            return
        # The stream skipped ahead of this socket: fetch what is missing first, deliver this after.
        self._held.append((seq, frame, created_at))
        self._start_catch_up(self.last_seq, client_resume=False)

    def deliver_now(self, seq: int, wire: bytes) -> bool:
        """The room's next message, alone (not a group commit's batch), written to the socket at once
        in the channel's pass when nothing stands before it: live and caught up, nothing queued or
        being written, the transport below its high-water mark. What offer() and flush() would have
        done then, in one write, without a second pass. False, doing nothing: offer() it."""
        connection = self._connection
        if (
            seq != self.last_seq + 1
            or self._outbox
            or self._writer is not None
            or self._catching_up
            or self._close_request is not None
            or self._overflowed
            or connection is None
            or not connection.writable.is_set()
            or not connection.write_frame(wire)
        ):
            return False
        self.last_seq = seq
        return True

    def offer_reload(self, last_seq: int) -> None:
        """The room stream could not fill a gap: the client must reload, then it is live again."""
        if self._catch_up_task is not None:
            self._catch_up_task.cancel()
            self._catch_up_task = None
        self._catching_up = False
        self._pending_resume = None
        self._held.clear()
        self._enqueue(frames.reload_frame(last_seq))
        self.last_seq = max(self.last_seq, last_seq)
        self.live_from = self.last_seq

    def push(self, frame: str) -> None:
        """A frame outside the message sequence (ack, error, pong, typing)."""
        self._enqueue(frame)

    def reject(self, error: grpc.aio.AioRpcError) -> None:
        """The services refused this socket's token or room: say why and close."""
        mapped = map_rpc_error(error)
        self._enqueue(frames.error_frame(mapped.code, mapped.message, retryable=mapped.retryable))
        self.request_close(close_code_for(error), mapped.code)

    def request_close(self, code: int, reason: str) -> None:
        if self._close_request is not None:
            return
        self._close_request = (code, reason[:120])
        self._wake_writer()
        # A writer blocked on a peer that stopped reading cannot send the close frame: end anyway.
        asyncio.get_running_loop().call_later(_CLOSE_TIMEOUT * 2, self._finish)

    # --- outbound ----------------------------------------------------------------------------------

    def flush(self) -> None:
        """After a room channel's pass over its sockets: what `offer` queued goes out now in one
        write when no writer task is at work and the transport is below its high-water mark (no
        task step per socket per message); otherwise a writer task sends it."""
        if not self._outbox:
            return
        connection = self._connection
        if (
            self._writer is None
            and connection is not None
            and connection.writable.is_set()
            and self._close_request is None
            and not self._overflowed
        ):
            try:
                self._write_ready(connection)
            except ConnectionError:
                # The socket is closing: the writer finds out and ends.
                self._wake_writer()
                return
            if not self._outbox:
                return
        self._wake_writer()

    def _wake_writer(self) -> None:
        """A writer task sends what is queued (and the close frame once one is asked for); one is
        started when none is at work."""
        if self._writer is None and not self._finished.is_set():
            writer = asyncio.get_running_loop().create_task(self._write_loop())
            writer.add_done_callback(self._writer_done)
            self._writer = writer

    def _writer_done(self, writer: asyncio.Task[bool]) -> None:
        if self._writer is writer:
            self._writer = None
        # A writer that sent everything ends quietly; one that closed the socket or failed ends it.
        if writer.cancelled() or writer.exception() is not None or writer.result():
            self._finish()

    def _enqueue(self, frame: str, created_at: float = 0.0, *, wake: bool = True) -> None:
        if self._close_request is not None:
            return
        if len(self._outbox) >= self._queue_limit:
            self._too_slow()
            return
        size = len(frame)
        if self._catching_up:
            # A backfill the client asked for (at most RESUME_LIMIT messages) goes out whole.
            self._backfill_bytes += size
        elif self._queued_bytes - self._backfill_bytes + size > self._send_room and self._over_budget(size):
            self._too_slow()
            return
        self._queued_bytes += size
        self._outbox.append((frame, created_at))
        if wake and self._writer is None:
            _FLUSH_SOON.add(self)

    def _over_budget(self, size: int) -> bool:
        connection = self._connection
        if connection is not None and connection.writable.is_set():
            # The transport is below its high-water mark: the peer has taken what it was given, and
            # the writer hands it all that is queued at its next turn. Frames arriving together (a
            # group commit fanned out in one pass) may pass the budget before the writer ran at
            # all; that is no sign of a slow reader, only of a busy room.
            return False
        # Characters of the queued frames stand for their bytes (exact for ASCII text).
        waiting = self._queued_bytes - self._backfill_bytes + size
        if connection is not None:
            waiting += connection.write_buffer_size()
        return waiting > self._send_budget

    def _too_slow(self) -> None:
        SLOW_SOCKET_CLOSES.inc()
        # What is still queued is dropped: the client resumes from its last seq after reconnecting.
        self._overflowed = True
        self._outbox.clear()
        self._queued_bytes = self._backfill_bytes = 0
        self._held.clear()
        if self._connection is None:
            self.request_close(CLOSE_TRY_AGAIN, TOO_SLOW)
            return
        # The writer waits on a peer that does not read: the close frame goes out now, ahead of all
        # that was dropped and right behind what the transport and the kernel hold already; the
        # connection is aborted if the close cannot complete within WS_CLOSE_TIMEOUT.
        if self._close_request is None:
            self._close_request = (CLOSE_TRY_AGAIN, TOO_SLOW)
        self._connection.close_now(CLOSE_TRY_AGAIN, TOO_SLOW)
        self._finish()

    async def _write_loop(self) -> bool:
        """Sends what is queued until nothing is; then ends (False), or once a close was asked for,
        sends the close frame and ends the socket (True, as when the socket failed)."""
        ws = self._ws
        connection = self._connection
        try:
            while self._outbox and not self._overflowed:
                if connection is not None:
                    await self._write_pending(connection)
                else:
                    await self._write_each(ws)
            if self._close_request is None:
                # Nothing is left (and nothing can arrive before this returns): frames queued from
                # now on start a writer of their own.
                self._writer = None
                return False
        except (WebSocketDisconnect, RuntimeError, OSError):
            return True
        code, reason = self._close_request
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code, reason), timeout=_CLOSE_TIMEOUT)
        return True

    async def _write_pending(self, connection: EdgeWebSocketProtocol) -> None:
        """What is pending goes out in ONE transport write: as many frames as fit below the transport's
        high-water mark (at least one), so it never holds more than that plus one frame, as with a
        write per frame; the rest waits for the next round (after the transport drained)."""
        await connection.writable.wait()
        if self._overflowed or not self._outbox:
            return
        self._write_ready(connection)

    def _write_ready(self, connection: EdgeWebSocketProtocol) -> None:
        """_write_pending's write, the transport being writable."""
        room = connection.write_high_water - connection.write_buffer_size()
        outbox = self._outbox
        texts: list[str] = []
        # Live message frames: the same str goes to every member of the room.
        shared: list[bool] = []
        created: list[float] = []
        size = 0
        for frame, created_at in outbox:
            if texts and size + len(frame) > room:
                break
            texts.append(frame)
            shared.append(bool(created_at))
            size += len(frame)
            if created_at:
                created.append(created_at)
        del outbox[: len(texts)]
        connection.send_texts(texts, shared)
        self._queued_bytes -= size
        if self._backfill_bytes:
            self._backfill_bytes = max(0, self._backfill_bytes - size)
        DELIVERIES.written(len(texts))
        if created:
            DELIVERIES.delivered_at(time.time(), created)

    async def _write_each(self, ws: WebSocket) -> None:
        """Under a plain uvicorn (no edge protocol): one send per frame, through the ASGI interface."""
        batch, self._outbox = self._outbox, []
        for frame, created_at in batch:
            if self._overflowed:
                break
            await ws.send_text(frame)
            size = len(frame)
            self._queued_bytes -= size
            if self._backfill_bytes:
                self._backfill_bytes = max(0, self._backfill_bytes - size)
            DELIVERIES.written(1)
            if created_at:
                DELIVERIES.delivered_after(max(0.0, time.time() - created_at))

    # --- inbound -----------------------------------------------------------------------------------

    def _on_event(self, event: Mapping[str, Any]) -> None:
        """Under the edge's own protocol each event it reads comes here at once (no reader task, no
        pause of reading per message): a message is handled, a disconnect ends the socket."""
        if self._finished.is_set():
            return
        if event["type"] == "websocket.disconnect":
            self._finish()
        elif event["type"] == "websocket.receive":
            self._last_read = asyncio.get_running_loop().time()
            self._read(event.get("text"))

    def _watch_idle(self, delay: float) -> None:
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        """One timer per socket, moved on only when it fires (not on every frame read)."""
        self._idle_timer = None
        if self._finished.is_set() or self._close_request is not None:
            return
        remaining = self._last_read + self._idle_timeout - asyncio.get_running_loop().time()
        if remaining > 0:
            self._watch_idle(remaining)
            return
        WS_IDLE_CLOSES.inc()
        # The writer sends the close frame; the socket ends when it is done.
        self.request_close(CLOSE_IDLE, "idle")

    async def _read_loop(self) -> None:
        """Under a plain uvicorn (no edge protocol): a task reads through the ASGI interface."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._idle_timeout) as idle:
                while True:
                    message = await self._ws.receive()
                    idle.reschedule(loop.time() + self._idle_timeout)
                    if message["type"] == "websocket.disconnect":
                        return
                    self._read(message.get("text"))
        except TimeoutError:
            WS_IDLE_CLOSES.inc()
            self.request_close(CLOSE_IDLE, "idle")
            # The writer sends the close frame; the socket ends when it is done.
            await self._finished.wait()

    def _read(self, text: str | None) -> None:
        if text is None:
            self.push(frames.error_frame("invalid_frame", "Frames are JSON text, not binary."))
            return
        try:
            self._handle(text)
        except Exception:
            # No frame may end this socket's reading: it is answered, and the next one read.
            log.exception("client frame failed", extra={"room_id": self.room_id})
            self.push(frames.error_frame(*_INTERNAL))

    def _handle(self, text: str) -> None:
        try:
            frame = frames.parse_client_frame(text)
        except frames.FrameError as exc:
            self.push(frames.error_frame(exc.code, exc.message, client_msg_id=exc.client_msg_id))
            return
        if isinstance(frame, frames.PingFrame):
            self.push(frames.PONG)
        elif isinstance(frame, frames.SendFrame):
            if self._sends is None or self._send_wake is None:
                self._sends, self._send_wake = deque(), Flag()
                self._sender = asyncio.get_running_loop().create_task(self._send_loop())
            if len(self._sends) < _MAX_PENDING_SENDS:
                batcher = self._backends.sends
                if batcher is not None and (refused := batcher.reserve()) is not None:
                    # The process has as much waiting as it may: refused now, not when its turn comes.
                    self._push_failure(frame, refused)
                    return
                self._sends.append(frame)
                self._send_wake.set()
            else:
                self.push(
                    frames.error_frame(
                        "too_many_pending",
                        "Too many sends waiting for their ack; wait for acks, then retry.",
                        retryable=True,
                        client_msg_id=frame.client_msg_id,
                    )
                )
        elif isinstance(frame, frames.ResumeFrame):
            self.resume(frame.after_seq)
        else:
            self._typing()

    def _typing(self) -> None:
        now = time.monotonic()
        if now - self._last_typing < self._typing_interval:
            return
        if self._typing_call is not None and not self._typing_call.done():
            return
        self._last_typing = now
        # Through messaging, so every edge process's sockets of the room hear it.
        self._typing_call = asyncio.get_running_loop().create_task(self._send_typing())

    async def _send_typing(self) -> None:
        try:
            await self._backends.messaging.SendTyping(
                messaging_pb2.SendTypingRequest(room_id=self.room_id),
                metadata=auth_metadata(self.token),
                timeout=self._backends.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            # Typing is a courtesy: a lost one is not worth an error frame (sends report real trouble).
            log.debug("typing not relayed", extra={"room_id": self.room_id, "grpc_code": exc.code().name})

    async def _send_loop(self) -> None:
        """A socket's sends leave in order: what it sent since its last sends were answered goes to
        the batcher together (consecutive, so messaging commits them in this order), then the next."""
        sends, wake = self._sends, self._send_wake
        assert sends is not None and wake is not None
        while True:
            if not sends:
                wake.clear()
                await wake.wait()
                continue
            group = list(sends)
            sends.clear()
            batcher = self._backends.sends
            if batcher is not None:
                batcher.unreserve(len(group))
            try:
                if batcher is None:
                    for frame in group:
                        await self._send_one(frame)
                else:
                    await self._send_batched(batcher, group)
            except Exception:
                # One send must never end this loop, or every later send would go unanswered.
                log.exception("sends failed", extra={"room_id": self.room_id, "sends": len(group)})
                for frame in group:
                    self.push(frames.error_frame(*_INTERNAL, client_msg_id=frame.client_msg_id))

    def _request(self, frame: frames.SendFrame) -> messaging_pb2.SendMessageRequest:
        return messaging_pb2.SendMessageRequest(
            room_id=self.room_id,
            client_msg_id=frame.client_msg_id,
            text=frame.text,
            reply_to_seq=frame.reply_to_seq or 0,
            media_id=frame.media_id or "",
        )

    async def _send_batched(self, batcher: SendBatcher, group: list[frames.SendFrame]) -> None:
        if self.token_expires_at and time.time() >= self.token_expires_at:
            # Messaging would have refused the token itself; the batch only carries who verified it.
            for frame in group:
                self.push(
                    frames.error_frame(
                        "token_expired", "The token has expired.", client_msg_id=frame.client_msg_id
                    )
                )
            self.request_close(CLOSE_INVALID_TOKEN, "token_expired")
            return
        # A send whose request cannot be built is answered alone; the others of the group go on.
        requests: list[tuple[frames.SendFrame, messaging_pb2.SendMessageRequest]] = []
        for frame in group:
            try:
                requests.append((frame, self._request(frame)))
            except Exception:
                log.exception(
                    "send failed", extra={"room_id": self.room_id, "client_msg_id": frame.client_msg_id}
                )
                self.push(frames.error_frame(*_INTERNAL, client_msg_id=frame.client_msg_id))
        if not requests:
            return
        group = [frame for frame, _request in requests]
        spans: list[trace.Span] = []
        if tracing_enabled():
            spans = [
                # A root: each send is its own trace, not part of the socket's (ready, typing, ...).
                _tracer.start_span(
                    _SEND_SPAN,
                    context=Context(),
                    kind=trace.SpanKind.CLIENT,
                    attributes={"rpc.system": "grpc"},
                )
                for _frame in requests
            ]
            sends = [
                batched_send(request, self.principal, trace.set_span_in_context(span))
                for (_frame, request), span in zip(requests, spans, strict=True)
            ]
        else:
            sends = [batched_send(request, self.principal) for _frame, request in requests]
        try:
            futures = batcher.submit(sends)
        except Overloaded as exc:
            # Refused at once, before any work: the client retries after retry_after_ms.
            for frame in group:
                self._push_failure(frame, exc.failure)
            for refused in spans:
                refused.set_status(trace.StatusCode.ERROR, "overloaded")
                refused.end()
            return
        for index, (frame, future) in enumerate(zip(group, futures, strict=True)):
            span = spans[index] if spans else None
            try:
                sent = await future
            except SendFailure as failure:
                if span is not None:
                    span.set_status(trace.StatusCode.ERROR, failure.code)
                    span.end()
                self._push_failure(frame, failure)
                continue
            except Exception:
                if span is not None:
                    span.end()
                raise
            if span is not None:
                span.end()
            # The ack is a promise: messaging has committed the message.
            self.push(frames.ack_frame(frame.client_msg_id, sent.message.seq, sent.message.id))

    def _push_failure(self, frame: frames.SendFrame, failure: SendFailure) -> None:
        mapped = failure.mapped()
        self.push(
            frames.error_frame(
                mapped.code,
                mapped.message,
                retryable=mapped.retryable,
                client_msg_id=frame.client_msg_id,
                retry_after=mapped.retry_after,
                # `overloaded` waits are short: the exact wait too (other codes keep whole seconds).
                retry_after_ms=failure.retry_after_ms if failure.code == OVERLOADED else None,
            )
        )
        if failure.status == grpc.StatusCode.UNAUTHENTICATED:
            self.request_close(CLOSE_INVALID_TOKEN, mapped.code)

    async def _send_one(self, frame: frames.SendFrame) -> None:
        """A send as its own SendMessage call (no batcher: a process without the app's lifespan)."""
        try:
            sent = await self._backends.messaging.SendMessage(
                self._request(frame), metadata=auth_metadata(self.token), timeout=self._backends.timeout
            )
        except grpc.aio.AioRpcError as exc:
            mapped = map_rpc_error(exc)
            self.push(
                frames.error_frame(
                    mapped.code,
                    mapped.message,
                    retryable=mapped.retryable,
                    client_msg_id=frame.client_msg_id,
                    retry_after=mapped.retry_after,
                )
            )
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                self.request_close(CLOSE_INVALID_TOKEN, mapped.code)
            return
        self.push(frames.ack_frame(frame.client_msg_id, sent.message.seq, sent.message.id))

    # --- resume and gap fill -----------------------------------------------------------------------

    def resume(self, after_seq: int) -> None:
        if self._catching_up:
            self._pending_resume = after_seq
            return
        if self.live_from <= after_seq <= self.last_seq:
            # Everything after after_seq was delivered live on this socket already.
            RESUMES.labels("exact").inc()
            return
        self._start_catch_up(after_seq, client_resume=True)

    def _start_catch_up(self, after_seq: int, *, client_resume: bool) -> None:
        self._catching_up = True
        self._catch_up_task = asyncio.get_running_loop().create_task(self._catch_up(after_seq, client_resume))

    async def _catch_up(self, after_seq: int, client_resume: bool) -> None:
        try:
            outcome = await self._fill(after_seq)
        except grpc.aio.AioRpcError as exc:
            mapped = map_rpc_error(exc)
            self._catching_up = False
            self._held.clear()
            self._catch_up_task = None
            self.push(frames.error_frame(mapped.code, mapped.message, retryable=mapped.retryable))
            # Nothing may be skipped silently: the client reconnects and resumes again.
            self.request_close(close_code_for(exc), mapped.code)
            return
        except Exception:
            # Live frames are held while this runs: a fill that breaks must not hold them for good.
            log.exception("gap fill failed", extra={"room_id": self.room_id, "after_seq": after_seq})
            self._catching_up = False
            self._held.clear()
            self._catch_up_task = None
            self.push(frames.error_frame("internal", "Something went wrong on our side.", retryable=True))
            self.request_close(CLOSE_TRY_AGAIN, "internal")
            return
        if client_resume:
            RESUMES.labels(outcome).inc()
        self._catching_up = False
        self._catch_up_task = None
        pending, self._pending_resume = self._pending_resume, None
        if pending is not None:
            self.resume(pending)

    async def _fetch_after(self, after_seq: int) -> messaging_pb2.ListMessagesAfterResponse:
        page: messaging_pb2.ListMessagesAfterResponse = await self._backends.messaging.ListMessagesAfter(
            messaging_pb2.ListMessagesAfterRequest(
                room_id=self.room_id, after_seq=after_seq, limit=self._resume_limit
            ),
            metadata=auth_metadata(self.token),
            timeout=self._backends.timeout,
        )
        return page

    async def _fill(self, after_seq: int) -> str:
        """Deliver what the client lacks after `after_seq`, then the held live frames; no await after."""
        # The client has everything up to `floor` except the hole (after_seq, hole_top].
        hole_top = self.live_from if after_seq < self.live_from else after_seq
        floor = max(self.last_seq, after_seq)
        cursor = after_seq
        backoff = Backoff(first=0.05, limit=1.0)
        for attempt in range(_FILL_ATTEMPTS):
            if attempt:
                await asyncio.sleep(backoff.next())
            try:
                page = await self._fetch_after(cursor)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _RETRYABLE and attempt + 1 < _FILL_ATTEMPTS:
                    continue
                raise
            if page.reload or after_seq > page.last_seq:
                self._finish_with_reload(page.last_seq)
                return "reload"
            if cursor + 1 < page.floor_seq:
                # Retention deleted what lies below the floor: the client is told, then gets the rest.
                self._enqueue(frames.trimmed_frame(page.floor_seq))
                cursor = page.floor_seq - 1
                hole_top = max(hole_top, cursor)
                floor = max(floor, cursor)
            for message in page.messages:
                if message.seq <= cursor:
                    continue
                if message.seq != cursor + 1:
                    break
                cursor = message.seq
                if message.seq <= hole_top or message.seq > floor:
                    self._enqueue(frames.message_frame(message), created_at_seconds(message))
                    floor = max(floor, message.seq)
            if cursor < hole_top:
                # The log answered with less than this socket already saw live; ask again.
                continue
            self.last_seq = max(self.last_seq, floor)
            if self._drain_held():
                self.live_from = min(self.live_from, after_seq)
                return "exact"
            # Held live frames start beyond what we have: fetch the gap between.
            hole_top = cursor = floor = self.last_seq
        self._finish_with_reload(max([self.last_seq, *(seq for seq, _f, _c in self._held)]))
        return "reload"

    def _drain_held(self) -> bool:
        """Deliver held live frames that continue `last_seq`; False if a gap remains before the rest."""
        held = sorted(self._held, key=lambda item: item[0])
        for index, (seq, frame, created_at) in enumerate(held):
            if seq <= self.last_seq:
                continue
            if seq != self.last_seq + 1:
                self._held = held[index:]
                return False
            self.last_seq = seq
            self._enqueue(frame, created_at)
        self._held = []
        return True

    def _finish_with_reload(self, last_seq: int) -> None:
        self._enqueue(frames.reload_frame(last_seq))
        self.last_seq = max(self.last_seq, last_seq)
        for seq, frame, created_at in sorted(self._held, key=lambda item: item[0]):
            if seq > self.last_seq:
                self.last_seq = seq
                self._enqueue(frame, created_at)
        self._held.clear()
        self.live_from = self.last_seq

    # --- lifetime ----------------------------------------------------------------------------------

    def _finish(self, _task: object = None) -> None:
        """The socket is done (its reader or writer ended, or a close could not complete)."""
        self._finished.set()
        self._wake_run()

    def _wake_run(self) -> None:
        waiter = self._live_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self, hub: RoomHub, resume_after: int | None) -> None:
        loop = asyncio.get_running_loop()
        # No task waits on the reader (nor on a writer at work): their end ends the socket through a
        # callback.
        tasks: list[asyncio.Task[Any]] = []
        try:
            if resume_after is not None:
                # Live frames wait behind the missed ones this socket asked for: seq order holds.
                self._catching_up = True
            hub.attach(self)
            if not self.live.is_set() and not self._finished.is_set():
                self._live_waiter = loop.create_future()
                try:
                    async with asyncio.timeout(self._live_timeout):
                        await self._live_waiter
                except TimeoutError:
                    self.push(
                        frames.error_frame(
                            "service_unavailable", "Messages are unavailable, try again.", retryable=True
                        )
                    )
                    self.request_close(CLOSE_TRY_AGAIN, "service_unavailable")
                    await self._finished.wait()
                    return
                finally:
                    self._live_waiter = None
            if not self.live.is_set() or self._finished.is_set():
                return
            if resume_after is not None:
                held, self._held = self._held, []
                self._catching_up = False
                self.resume(resume_after)
                for seq, frame, created_at in held:
                    self.offer(seq, frame, created_at)
                self.flush()
            connection = self._connection
            if connection is not None:
                self._last_read = loop.time()
                self._watch_idle(self._idle_timeout)
                connection.deliver_to(self._on_event)
            else:
                reader = loop.create_task(self._read_loop())
                reader.add_done_callback(self._finish)
                tasks.append(reader)
            await self._finished.wait()
        finally:
            hub.detach(self)
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            if self._writer is not None:
                tasks.append(self._writer)
            if self._sends and self._backends.sends is not None:
                # Read but never submitted: their room goes back to the process.
                self._backends.sends.unreserve(len(self._sends))
                self._sends.clear()
            if self._catch_up_task is not None:
                tasks.append(self._catch_up_task)
            if self._typing_call is not None:
                tasks.append(self._typing_call)
            if self._sender is not None:
                tasks.append(self._sender)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

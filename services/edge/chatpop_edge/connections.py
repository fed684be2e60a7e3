"""What a connection may cost the edge: before it is authenticated, and when it stops reading.

uvicorn bounds none of this by itself: a connection that sends nothing, or half a request, or an
endless request line, is held until the client leaves. The edge runs uvicorn with the two protocol
classes below (`EdgeServerConfig` wires them), which add:

- a deadline for the request head (request line + headers): HTTP_HEADER_TIMEOUT seconds from
  connect, or from the first byte after a keep-alive pause (the pause itself is
  HTTP_KEEP_ALIVE_TIMEOUT); 408 when part of a head came, a plain close when nothing did;
- a cap on the head's size, HTTP_MAX_HEADER_BYTES, counted in `data_received` before httptools
  buffers anything (httptools itself has no limit): 431 and close;
- a cap on *pending* connections, those without a complete first request head or whose WebSocket
  handshake the app has not answered: PENDING_CONNECTIONS_PER_IP per TCP peer (per /64 for IPv6)
  and PENDING_CONNECTIONS_TOTAL in all. A new connection past either is answered 503 and closed at
  once. The per-peer cap counts the socket's peer, since X-Forwarded-For is not known before the head
  is read; connections from TRUSTED_PROXIES count only toward the total (one proxy carries many
  clients, and reads each request's head itself before it forwards it, under its own timeouts).
  Keep-alive connections between requests are not pending: they sent a complete request already;
- for WebSockets: a handshake deadline (WS_HANDSHAKE_TIMEOUT, upgrade request to the app's accept or
  refusal, 503 after), an answer to upgrade requests websockets cannot parse (it drops them silently),
  protocol pings (WS_PING_INTERVAL / WS_PING_TIMEOUT), a small kernel send buffer (WS_SEND_BUFFER) so
  a client that stops reading is noticed after kilobytes rather than megabytes, and an abort when a
  close cannot complete within WS_CLOSE_TIMEOUT: uvicorn's own `transport.close()` waits for the
  write buffer to drain, which never happens for a peer that stopped reading.

Slow consumers: a socket session (realtime.session) asks `outbound_of(scope)` for its connection and
uses `write_buffer_size()` for its byte budget and `close_now()` to put a close frame ahead of the
frames it drops. Nothing here runs per message except one flag test in `data_received`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from asyncio import TimerHandle
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State

from chatpop_edge.client_ip import ClientAddressResolver, IPNetwork, parse_ip
from chatpop_edge.metrics import CONNECTIONS_CUT, CONNECTIONS_PENDING, WS_ABORTS
from chatpop_edge.settings import EdgeSettings

# Where a WebSocket's scope carries its connection for the session (an ASGI server extension).
OUTBOUND_EXTENSION = "chatpop.outbound"
# SO_LINGER on, 0 seconds: closing the socket resets the connection and drops unsent data.
_LINGER_RESET = struct.pack("ii", 1, 0)


class Flag:
    """asyncio.Event's set/clear/is_set/wait at a fraction of its memory: an Event allocates a deque of
    waiters (~760 bytes) up front, and an idle WebSocket holds several. Waiters get a list on demand."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


def _text_frame(text: str) -> bytes:
    """A text message as a server sends it without extensions (unmasked: the same bytes whichever
    connection it goes to), serialized by websockets."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])


class SharedFrames:
    """Serialized text frames of messages many sockets send (a room channel hands each member the
    same str): serialized once for all of them. Bounded: forgotten all at once past a count or size
    (the frames of one pass over a room are sent before the next message's)."""

    def __init__(self, limit: int = 512, bytes_limit: int = 8 * 1024 * 1024) -> None:
        self._frames: dict[str, bytes] = {}
        self._bytes = 0
        self._limit = limit
        self._bytes_limit = bytes_limit

    def wire(self, text: str) -> bytes:
        frame = self._frames.get(text)
        if frame is None:
            frame = _text_frame(text)
            if len(self._frames) >= self._limit or self._bytes + len(frame) > self._bytes_limit:
                self._frames.clear()
                self._bytes = 0
            self._frames[text] = frame
            self._bytes += len(frame)
        return frame


SHARED_FRAMES = SharedFrames()


class ReceiveQueue:
    """The part of asyncio.Queue uvicorn's WebSocket protocol uses (put_nowait, get, empty, qsize),
    without its three deques and Event (~3 KiB per connection): events in a list, one getter. Once
    a consumer is given (`hand_to`), every event goes straight to it instead."""

    __slots__ = ("_getter", "_items", "consumer")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getter: asyncio.Future[None] | None = None
        self.consumer: Callable[[Any], None] | None = None

    def hand_to(self, consumer: Callable[[Any], None]) -> None:
        """From now on `consumer` is called with each event as it is put, after those queued now
        (and any put while they are handed over), in order."""
        while self._items:
            consumer(self._items.pop(0))
        self.consumer = consumer

    def put_nowait(self, item: Any) -> None:
        consumer = self.consumer
        if consumer is not None:
            consumer(item)
            return
        self._items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            self._getter = getter
            try:
                await getter
            finally:
                self._getter = None
        return self._items.pop(0)


class Pending:
    """One connection's place among the pending ones; released once, by whoever ends the state."""

    __slots__ = ("_key", "_owner")

    def __init__(self, owner: PendingConnections, key: str | None) -> None:
        self._owner: PendingConnections | None = owner
        self._key = key

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._release(self._key)


class PendingConnections:
    """Counts pending connections per TCP peer and in all, and refuses those past the limits."""

    def __init__(self, per_peer: int, total: int, trusted: Sequence[IPNetwork] = ()) -> None:
        self._per_peer = per_peer
        self._total_limit = total
        self._resolver = ClientAddressResolver(trusted)
        self._by_peer: dict[str, int] = {}
        self.total = 0

    def peer_key(self, host: str | None) -> str | None:
        """What the per-peer cap counts: the address, its /64 for IPv6; None when it does not apply."""
        address = parse_ip(host or "")
        if address is None or self._resolver.is_trusted(address):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        return str(address)

    def count(self, host: str | None) -> int:
        key = self.peer_key(host)
        return self._by_peer.get(key, 0) if key is not None else 0

    def admit(self, host: str | None) -> Pending | str:
        """A place for a new connection, or why there is none ("total_limit", "peer_limit")."""
        if self.total >= self._total_limit:
            return "total_limit"
        key = self.peer_key(host)
        if key is not None:
            held = self._by_peer.get(key, 0)
            if held >= self._per_peer:
                return "peer_limit"
            self._by_peer[key] = held + 1
        self.total += 1
        CONNECTIONS_PENDING.inc()
        return Pending(self, key)

    def _release(self, key: str | None) -> None:
        self.total -= 1
        CONNECTIONS_PENDING.dec()
        if key is not None:
            held = self._by_peer[key] - 1
            if held:
                self._by_peer[key] = held
            else:
                del self._by_peer[key]


class EdgeServerConfig(uvicorn.Config):
    """uvicorn's Config with the edge's protocols, timeouts and limits taken from EdgeSettings."""

    def __init__(self, app: Any, settings: EdgeSettings, **options: Any) -> None:
        self.settings = settings
        self.pending = PendingConnections(
            settings.pending_connections_per_ip, settings.pending_connections_total, settings.trusted_proxies
        )
        # The transport's share of the send budget: what it may hold before the writer waits.
        self.ws_write_high_water = settings.ws_send_budget // 4
        super().__init__(
            app,
            http=EdgeHttpProtocol,
            ws=EdgeWebSocketProtocol,
            timeout_keep_alive=settings.http_keep_alive_timeout,
            ws_ping_interval=settings.ws_ping_interval,
            ws_ping_timeout=settings.ws_ping_timeout,
            # Frames are encoded once per message; per-socket compression would redo work per recipient.
            ws_per_message_deflate=False,
            ws_max_size=settings.max_body_bytes,
            **options,
        )


def _edge_config(config: Config) -> EdgeServerConfig:
    if not isinstance(config, EdgeServerConfig):
        raise TypeError("the edge's protocols need an EdgeServerConfig")
    return config


def _response(server_state: ServerState, status: int, text: str) -> bytes:
    body = text.encode()
    lines = [STATUS_LINE[status]]
    lines.extend(name + b": " + value + b"\r\n" for name, value in server_state.default_headers)
    lines.append(b"content-type: text/plain; charset=utf-8\r\n")
    lines.append(b"content-length: %d\r\nconnection: close\r\n" % len(body))
    if status == 503:
        lines.append(b"retry-after: 1\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


class EdgeHttpProtocol(HttpToolsProtocol):
    """httptools' protocol with a deadline and a size cap for request heads, and pending limits."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        edge = _edge_config(config)
        self._pending_connections = edge.pending
        self._head_timeout = edge.settings.http_header_timeout
        self._head_limit = edge.settings.http_max_header_bytes
        self._pending: Pending | None = None
        # Bytes a request head may still take; None while no head is being read (after headers,
        # during the response). Checked on every data_received, so it is the only hot-path cost.
        self._head_room: int | None = None
        self._head_timer: TimerHandle | None = None
        self._heads_completed = 0
        # Between a request's first byte and the end of its body. A response may complete before
        # the body has arrived (413 answered early): what still comes is body, not the next head.
        self._in_message = False

    # --- connection ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        admitted = self._pending_connections.admit(self.client[0] if self.client else None)
        if isinstance(admitted, str):
            CONNECTIONS_CUT.labels(admitted).inc()
            self._reply_and_close(503, "Too many connections are waiting; try again.")
            return
        self._pending = admitted
        self._head_room = self._head_limit
        # A new connection has the head deadline from its first moment: silence is not free either.
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        self._release()
        super().connection_lost(exc)

    def _release(self) -> None:
        if self._pending is not None:
            self._pending.release()
            self._pending = None

    def _end_head(self) -> None:
        self._head_room = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _reply_and_close(self, status: int, text: str) -> None:
        self._end_head()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_response(self.server_state, status, text))
        # else: a pipelined head failed while the previous response is being written; an answer now
        # would land inside it.
        self.transport.close()

    # --- request heads ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        room = self._head_room
        if room is None:
            super().data_received(data)
            return
        if self._head_timer is None:
            # The first byte after a keep-alive pause: from here the head has the same deadline.
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)
        if len(data) <= room:
            self._head_room = room - len(data)
            super().data_received(data)
            return
        # Over the cap unless the head ends within what is left of it (the rest being body, or the
        # next request): feed what fits, and the remainder only if the head completed.
        completed = self._heads_completed
        self._head_room = 0
        if room:
            super().data_received(data[:room])
        if self._heads_completed == completed:
            CONNECTIONS_CUT.labels("headers_too_large").inc()
            self._reply_and_close(431, "Request line and headers are too large.")
        elif not self.transport.is_closing() and self.transport.get_protocol() is self:
            self.data_received(data[room:])

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_room is None or self.transport.is_closing():
            return
        if self._head_room == self._head_limit:
            # Nothing came at all (an idle or preconnected socket): there is no request to answer.
            CONNECTIONS_CUT.labels("idle").inc()
            self._end_head()
            self.transport.close()
            return
        CONNECTIONS_CUT.labels("header_timeout").inc()
        self._reply_and_close(408, "The request did not arrive in time.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = True
        if self._head_room is None:
            # A pipelined request began while the previous one was being answered: its head is
            # counted from the next chunk on, and timed from now.
            self._head_room = self._head_limit
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._end_head()
        self._heads_completed += 1
        super().on_headers_complete()
        # An upgrade keeps its place until the app answers the handshake (handed over below).
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._release()

    def handle_websocket_upgrade(self) -> None:
        pending, self._pending = self._pending, None
        super().handle_websocket_upgrade()
        protocol = self.transport.get_protocol()
        if isinstance(protocol, EdgeWebSocketProtocol):
            protocol.adopt(pending)
        elif pending is not None:
            pending.release()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_message = False
        if self.cycle is not None and self.cycle.response_complete:
            # The response went out before the body was all in: the connection is idle from now.
            self._await_next_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._in_message:
            self._await_next_head()

    def _await_next_head(self) -> None:
        if self.timeout_keep_alive_task is not None and self._head_room is None:
            # Idle between requests (uvicorn's keep-alive timer runs); the next head is counted and
            # timed from its first byte. (A head begun early keeps its count and deadline.)
            self._head_room = self._head_limit


class EdgeWebSocketProtocol(WebSocketsSansIOProtocol):
    """websockets' sans-I/O protocol with a handshake deadline, a small send buffer, and aborts."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Lighter stand-ins for the asyncio.Queue and Event uvicorn made (same use, far less memory).
        self.queue = ReceiveQueue()  # type: ignore[assignment]
        self.writable = Flag(True)  # type: ignore[assignment]
        edge = _edge_config(config)
        self._server_state = server_state
        self._handshake_timeout = edge.settings.ws_handshake_timeout
        self._send_buffer = edge.settings.ws_send_buffer
        self.write_high_water = edge.ws_write_high_water
        self.close_timeout = edge.settings.ws_close_timeout
        self._pending: Pending | None = None
        self._handshake_timer: TimerHandle | None = None
        self._abort_timer: TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._handshake_timer = self.loop.call_later(self._handshake_timeout, self._handshake_timed_out)
        self.transport.set_write_buffer_limits(high=self.write_high_water, low=self.write_high_water // 4)
        sock = self.transport.get_extra_info("socket")
        if self._send_buffer and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)

    def adopt(self, pending: Pending | None) -> None:
        """The pending place of the HTTP connection this upgrade came on, kept until the app answers."""
        if pending is None:
            return
        if self.handshake_complete or self.transport.is_closing():
            pending.release()
        else:
            self._pending = pending

    def _handshake_done(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        if self._pending is not None:
            self._pending.release()
            self._pending = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._handshake_done()
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        super().connection_lost(exc)

    # --- handshake ----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            # websockets could not read the upgrade request (a line over 8 KiB, too many headers):
            # it may have an answer ready (414, 431), which uvicorn never sends; the client would wait.
            CONNECTIONS_CUT.labels("bad_handshake").inc()
            answer = b"".join(self.conn.data_to_send())
            self._refuse(answer or _response(self._server_state, 400, "Invalid WebSocket upgrade request."))

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.handshake_complete:
            # websockets refused the request itself; the connection is closing.
            return
        extensions = self.scope.setdefault("extensions", {})
        extensions[OUTBOUND_EXTENSION] = {"connection": self}

    # --- reading ------------------------------------------------------------------------------------

    def deliver_to(self, consumer: Callable[[Any], None]) -> None:
        """Every event read from now on goes to `consumer` as it is read (after those waiting), and
        reading no longer pauses after each message until the app took it."""
        self.queue.hand_to(consumer)  # type: ignore[attr-defined]
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def send_receive_event_to_app(self) -> None:
        if self.queue.consumer is None:  # type: ignore[attr-defined]
            super().send_receive_event_to_app()
            return
        # uvicorn pauses reading after each message until the app takes it; a consumer took it
        # already (pausing and resuming would cost two changes of the poller's interest per message).
        paused, self.read_paused = self.read_paused, True
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused

    def start_keepalive(self) -> None:
        # Called once the app accepted: the handshake is over, the socket is the session's now.
        self._handshake_done()
        # The upgrade request and our answer are sent; nothing reads them again (the scope has the
        # request's headers), and an idle socket would keep ~2 KiB of header objects for nothing.
        # websockets' parser keeps the request object itself alive for the connection's life (a local
        # of its generator): what it holds is dropped.
        request = self.request
        if request is not None:
            request.headers = Headers()
            request.path = "/"
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        if self.handshake_complete or self.transport.is_closing():
            return
        CONNECTIONS_CUT.labels("handshake_timeout").inc()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
        self._refuse(_response(self._server_state, 503, "The WebSocket handshake was not answered in time."))

    def _refuse(self, response: bytes) -> None:
        self.handshake_complete = True
        self.close_sent = True
        self._handshake_done()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()
        self._abort_later()

    # --- closing ------------------------------------------------------------------------------------

    def send_texts(self, texts: Sequence[str], shared: Sequence[bool] = ()) -> None:
        """Frame several text messages and hand them to the transport in ONE write (the caller waits
        for `writable` first, as uvicorn's own send does). ConnectionError once the socket is closing.
        `shared[i]`: texts[i] is a str many sockets send (a room's message), whose serialized frame
        SHARED_FRAMES keeps for the others."""
        if self.disconnected or self.close_sent:
            raise ConnectionError("the WebSocket is closing")
        conn = self.conn
        if conn.state is not State.OPEN:
            raise ConnectionError("the WebSocket is closing")
        if conn.extensions or conn.expect_continuation_frame:
            # Not the plain frames _text_frame makes: websockets frames each one for this connection.
            try:
                for text in texts:
                    conn.send_text(text.encode())
            except InvalidState as exc:
                raise ConnectionError("the WebSocket is closing") from exc
            self.transport.write(b"".join(conn.data_to_send()))
            return
        # An open connection without extensions: a text frame's bytes are the same on every one,
        # and websockets keeps no state about frames it sends whole (it would only queue the bytes).
        wire = SHARED_FRAMES.wire
        chunks = [
            wire(text) if index < len(shared) and shared[index] else _text_frame(text)
            for index, text in enumerate(texts)
        ]
        self.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def write_frame(self, wire: bytes) -> bool:
        """One text frame serialized already (SHARED_FRAMES.wire) handed to the transport as is; the
        caller waited for `writable`. False, writing nothing, when this connection cannot take it
        so: closing, or framing for itself (an extension, a fragmented message)."""
        conn = self.conn
        if (
            self.disconnected
            or self.close_sent
            or conn.state is not State.OPEN
            or conn.extensions
            or conn.expect_continuation_frame
        ):
            return False
        self.transport.write(wire)
        return True

    def write_buffer_size(self) -> int:
        """Bytes written to the transport that the kernel has not taken yet."""
        return int(self.transport.get_write_buffer_size())

    def close_now(self, code: int, reason: str) -> None:
        """Write the close frame now, ahead of whatever the app still has to send (which it drops),
        and abort the connection if the closing handshake is not over within WS_CLOSE_TIMEOUT.

        Only what the transport and the kernel already hold goes out before the close frame."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            self._abort_later()
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            # Read on, so the peer's answering close frame ends the connection cleanly.
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self._abort)

    def _abort_later(self) -> None:
        if self._abort_timer is None and not self.disconnected:
            self._abort_timer = self.loop.call_later(self.close_timeout, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        self.close_timer = None
        if not self.disconnected:
            WS_ABORTS.inc()
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                # A reset, not a FIN queued behind data the peer will not read: the kernel frees the
                # socket's buffers now instead of probing a closed window for minutes.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            self.transport.abort()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        # uvicorn closes (or has a close timer); a close waits for the write buffer to drain, which a
        # peer that stopped reading never lets happen.
        self._abort_later()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._abort_later()

    def shutdown(self) -> None:
        super().shutdown()
        self._abort_later()


def outbound_of(scope: Any) -> EdgeWebSocketProtocol | None:
    """The edge protocol serving a WebSocket scope; None under a plain uvicorn (tests, tools)."""
    extension = (scope.get("extensions") or {}).get(OUTBOUND_EXTENSION)
    connection = extension.get("connection") if isinstance(extension, dict) else None
    return connection if isinstance(connection, EdgeWebSocketProtocol) else None

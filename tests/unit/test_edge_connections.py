"""The edge's connection protocols: pending limits, request-head size and deadline, WebSocket handshakes.

The protocols are driven as uvicorn drives them (connection_made, data_received, ...) over a fake
transport that records what was written; the app behind them is a tiny ASGI callable.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from uvicorn.server import ServerState
from websockets.protocol import State
from websockets.server import ServerProtocol

from chatpop_edge.connections import EdgeHttpProtocol, EdgeServerConfig, PendingConnections, SharedFrames
from chatpop_edge.settings import EdgeSettings

IP_HASH_KEY = "unit-test-ip-hash-key"
GET = b"GET /thing HTTP/1.1\r\nHost: edge\r\nUser-Agent: test\r\n\r\n"
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


# --- counting pending connections ---------------------------------------------------------------------


def test_each_peer_gets_its_share_and_all_together_the_total() -> None:
    pending = PendingConnections(per_peer=2, total=3)
    first, second = pending.admit("198.51.100.1"), pending.admit("198.51.100.1")
    assert pending.admit("198.51.100.1") == "peer_limit"
    other = pending.admit("198.51.100.2")
    assert pending.admit("198.51.100.3") == "total_limit"
    assert pending.total == 3 and pending.count("198.51.100.1") == 2

    assert not isinstance(first, str) and not isinstance(other, str)
    first.release()
    first.release()  # a second release changes nothing
    assert pending.total == 2 and pending.count("198.51.100.1") == 1
    assert not isinstance(pending.admit("198.51.100.1"), str)
    other.release()
    assert not isinstance(second, str)
    second.release()
    assert pending.count("198.51.100.2") == 0


def test_trusted_proxies_count_only_toward_the_total() -> None:
    pending = PendingConnections(per_peer=1, total=3, trusted=[ipaddress.ip_network("10.0.0.0/8")])
    assert not isinstance(pending.admit("10.1.2.3"), str)
    assert not isinstance(pending.admit("10.1.2.3"), str)
    assert pending.count("10.1.2.3") == 0
    assert not isinstance(pending.admit("198.51.100.1"), str)
    assert pending.admit("10.1.2.3") == "total_limit"


def test_ipv6_peers_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    pending = PendingConnections(per_peer=2, total=100)
    assert (
        pending.peer_key("2001:db8:1:2::1") == pending.peer_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    )
    assert pending.peer_key("::ffff:198.51.100.7") == "198.51.100.7"
    pending.admit("2001:db8:1:2::1")
    pending.admit("2001:db8:1:2::2")
    assert pending.admit("2001:db8:1:2::3") == "peer_limit"
    assert not isinstance(pending.admit("2001:db8:1:3::1"), str)
    # A socket without an IP (a Unix socket) counts toward the total only.
    assert pending.peer_key(None) is None


# --- the HTTP protocol over a fake transport ------------------------------------------------------------


class FakeTransport:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (self.peer, 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def close(self) -> None:
        # As a real transport: whichever protocol it has by then hears connection_lost, once.
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(lambda: self.protocol.connection_lost(None))

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_protocol(self) -> Any:
        return self.protocol

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    @property
    def status(self) -> int | None:
        if not self.written.startswith(b"HTTP/1.1 "):
            return None
        return int(self.written[9:12])


async def body_length_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers 200 with the length of the request body."""
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    text = str(len(body)).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(text))]}
    )
    await send({"type": "http.response.body", "body": text})


class Edge:
    """A server's worth of shared state: connections are opened against it with `connect`."""

    def __init__(self, app: Callable[..., Any] = body_length_app, **overrides: Any) -> None:
        settings = EdgeSettings(
            ip_hash_key=IP_HASH_KEY, media_url_key="m" * 32, service_token_secret="s" * 32, **overrides
        )
        self.config = EdgeServerConfig(app, settings, lifespan="off", log_level="warning")
        self.config.load()
        self.state = ServerState()

    def connect(self, peer: str = "198.51.100.1") -> tuple[EdgeHttpProtocol, FakeTransport]:
        protocol = EdgeHttpProtocol(config=self.config, server_state=self.state, app_state={})
        transport = FakeTransport(peer)
        transport.protocol = protocol
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return protocol, transport


async def settle(seconds: float = 0.02) -> None:
    await asyncio.sleep(seconds)


async def test_a_head_sent_in_pieces_within_the_limits_is_served() -> None:
    edge = Edge(http_max_header_bytes=1024)
    protocol, transport = edge.connect()
    assert edge.config.pending.total == 1
    for index in range(0, len(GET), 7):
        protocol.data_received(GET[index : index + 7])
    await settle()
    assert transport.status == 200
    # A complete head is no longer pending.
    assert edge.config.pending.total == 0


async def test_a_head_over_the_limit_gets_431_without_reaching_the_app() -> None:
    edge = Edge(http_max_header_bytes=1024)
    protocol, transport = edge.connect()
    protocol.data_received(b"GET /" + b"a" * 600)
    assert transport.status is None
    protocol.data_received(b"a" * 600)
    assert transport.status == 431 and transport.closed
    await settle()
    assert edge.config.pending.total == 0

    # Many small headers add up the same way.
    protocol, transport = edge.connect()
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    for index in range(100):
        if transport.closed:
            break
        protocol.data_received(b"X-Filler-%d: %s\r\n" % (index, b"v" * 20))
    assert transport.status == 431


async def test_a_body_in_the_same_chunk_as_the_head_does_not_count_as_head() -> None:
    edge = Edge(http_max_header_bytes=1024)
    protocol, transport = edge.connect()
    body = b"b" * 4000
    head = b"POST /thing HTTP/1.1\r\nHost: edge\r\nContent-Length: %d\r\n\r\n" % len(body)
    protocol.data_received(head + body)
    await settle()
    assert transport.status == 200
    assert transport.written.endswith(b"\r\n\r\n4000")


async def test_keep_alive_requests_each_get_a_fresh_head_budget() -> None:
    edge = Edge(http_max_header_bytes=1024)
    protocol, transport = edge.connect()
    for _ in range(5):
        transport.written.clear()
        protocol.data_received(GET)
        await settle()
        assert transport.status == 200 and not transport.closed


async def test_a_head_that_does_not_finish_in_time_gets_408_and_silence_a_plain_close() -> None:
    edge = Edge(http_header_timeout=0.05)
    slow, slow_transport = edge.connect()
    _idle, idle_transport = edge.connect()
    slow.data_received(b"GET /thing HTTP/1.1\r\nHost: ed")
    await settle(0.1)
    assert slow_transport.status == 408 and slow_transport.closed
    assert idle_transport.closed and idle_transport.written == b""
    assert edge.config.pending.total == 0


async def test_keep_alive_pause_is_not_a_slow_head_but_the_next_head_is_timed() -> None:
    edge = Edge(http_header_timeout=0.05, http_keep_alive_timeout=5)
    protocol, transport = edge.connect()
    protocol.data_received(GET)
    await settle()
    assert transport.status == 200
    # Idle between requests: uvicorn's keep-alive timeout governs, not the head deadline.
    await settle(0.1)
    assert not transport.closed
    transport.written.clear()
    protocol.data_received(b"GET /thing HTTP/1.1\r\n")
    await settle(0.1)
    assert transport.status == 408 and transport.closed


async def test_past_the_limits_new_connections_are_answered_503_at_once() -> None:
    edge = Edge(pending_connections_per_ip=2, pending_connections_total=3)
    held = [edge.connect("198.51.100.1") for _ in range(2)]
    _, refused_transport = edge.connect("198.51.100.1")
    assert refused_transport.status == 503 and refused_transport.closed
    assert b"retry-after: 1" in refused_transport.written
    held.append(edge.connect("198.51.100.2"))
    _, total_transport = edge.connect("198.51.100.3")
    assert total_transport.status == 503
    await settle()
    assert edge.config.pending.total == 3

    # A finished head frees its place at once.
    protocol, _ = held[0]
    protocol.data_received(GET)
    assert edge.config.pending.total == 2
    _, admitted = edge.connect("198.51.100.3")
    assert not admitted.closed


# --- WebSocket handshakes -------------------------------------------------------------------------------


@pytest.fixture
def never_answers() -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(3600)

    return app


async def test_an_unanswered_handshake_gets_503_and_frees_its_place(
    never_answers: Callable[..., Any],
) -> None:
    edge = Edge(app=never_answers, ws_handshake_timeout=0.05)
    protocol, transport = edge.connect()
    protocol.data_received(UPGRADE)
    websocket = transport.protocol
    assert websocket is not protocol
    # Still pending: the app has not answered the upgrade.
    assert edge.config.pending.total == 1
    await settle(0.1)
    assert transport.status == 503 and transport.closed
    assert edge.config.pending.total == 0
    await settle()
    assert not edge.state.connections
    for task in list(edge.state.tasks):
        task.cancel()


async def test_an_accepted_handshake_is_no_longer_pending() -> None:
    accepted = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        accepted.set()
        await asyncio.sleep(3600)

    edge = Edge(app=app)
    protocol, transport = edge.connect()
    protocol.data_received(UPGRADE)
    await asyncio.wait_for(accepted.wait(), 1)
    assert transport.status == 101
    assert edge.config.pending.total == 0
    transport.close()
    for task in list(edge.state.tasks):
        task.cancel()


async def test_an_upgrade_websockets_cannot_read_is_answered_at_once(
    never_answers: Callable[..., Any],
) -> None:
    # A request line past websockets' 8 KiB line limit, yet within the edge's head limit.
    edge = Edge(app=never_answers)
    protocol, transport = edge.connect()
    protocol.data_received(UPGRADE.replace(b"GET /ws ", b"GET /ws?" + b"t" * 9000 + b" "))
    assert transport.status == 414 and transport.closed
    assert edge.config.pending.total == 0
    await settle()
    assert not edge.state.connections
    for task in list(edge.state.tasks):
        task.cancel()


async def test_a_pipelined_head_is_counted_and_timed_while_the_previous_request_is_answered() -> None:
    release = asyncio.Event()

    async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    edge = Edge(app=slow_app, http_header_timeout=0.05, http_max_header_bytes=1024)
    # Two whole requests in one chunk: both heads fit, the second waits its turn.
    protocol, transport = edge.connect()
    protocol.data_received(GET + GET)
    release.set()
    await settle()
    assert transport.written.count(b"HTTP/1.1 204 ") == 2 and not transport.closed

    # A second head that never ends, sent while the first request is being answered: cut at its
    # deadline without a word written into the first response.
    release.clear()
    protocol, transport = edge.connect()
    protocol.data_received(GET + b"GET /next HTTP/1.1\r\nX-Endless: ")
    await settle(0.1)
    assert transport.closed and transport.written == b""

    # The same head growing past the cap is cut as well.
    protocol, transport = edge.connect()
    protocol.data_received(GET + b"GET /next HTTP/1.1\r\n")
    protocol.data_received(b"X-Filler: " + b"f" * 2000)
    assert transport.closed and transport.written == b""
    release.set()
    await settle()


# --- frames serialized once for every socket -----------------------------------------------------------


@pytest.mark.parametrize("text", ["", "pong", "é" * 70, "x" * 125, "x" * 126, "y" * 65_535, "z" * 65_536])
def test_a_shared_frame_is_byte_for_byte_what_websockets_sends_on_the_connection(text: str) -> None:
    server = ServerProtocol()
    server.state = State.OPEN
    server.send_text(text.encode())
    expected = b"".join(server.data_to_send())
    frames = SharedFrames()
    assert frames.wire(text) == expected
    # Every further socket gets the very bytes the first one did.
    assert frames.wire(text) is frames.wire(text)


def test_shared_frames_are_forgotten_in_bulk_past_their_count_or_size() -> None:
    frames = SharedFrames(limit=3, bytes_limit=1_000)
    first = frames.wire("a")
    frames.wire("b")
    frames.wire("c")
    assert frames.wire("a") is first
    frames.wire("d")  # a fourth: the others are forgotten
    assert frames.wire("a") is not first and frames.wire("a") == first
    big = frames.wire("x" * 900)
    frames.wire("y" * 200)  # past the size: forgotten again
    assert frames.wire("x" * 900) is not big

"""Connections that cost the edge without ever being useful, against a real edge process.

Hundreds of idle, half-sent, trickling and oversized connections neither keep a real person from
connecting, joining and chatting at once, nor outlive their timeouts; past the pending limits new
connections are refused at once. A WebSocket client that stops reading while the room chats heavily
is cut off after a small budget, finds the 1013 close right after what its buffers held, the others
receive everything, and a resume brings exactly what it missed.

The edge under test is one more edge process beside the stack's (`GUARDED_ENV`: short timeouts, small
budgets, no trusted proxy so that each loopback address 127.0.0.x is a client of its own).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chatpop_common.devstack import free_ports
from chatpop_common.localrun import extra_edge_spec
from tests.e2e.chat import ChatSocket, Frame, anonymous, create_room, join
from tests.e2e.conftest import STARTUP_TIMEOUT, Stack

GUARDED = "edge-guarded"
HEADER_TIMEOUT = 3.0
KEEP_ALIVE_TIMEOUT = 1.0
PER_IP = 50
TOTAL = 400
SEND_BUDGET = 64 * 1024
GUARDED_ENV = {
    "TRUSTED_PROXIES": "",
    "HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "HTTP_KEEP_ALIVE_TIMEOUT": str(int(KEEP_ALIVE_TIMEOUT)),
    "HTTP_MAX_HEADER_BYTES": "16384",
    "PENDING_CONNECTIONS_PER_IP": str(PER_IP),
    "PENDING_CONNECTIONS_TOTAL": str(TOTAL),
    "WS_SEND_BUDGET": str(SEND_BUDGET),
    "WS_SEND_BUFFER": "65536",
    # Long enough for the test to come back and read the close frame of a cut-off socket.
    "WS_CLOSE_TIMEOUT": "30",
}
# Bad connections come from addresses of their own, so they do not count against the test's client.
BAD_PEERS = [f"127.0.0.{host}" for host in range(11, 17)]
TEXT = "y" * 3500


@dataclass
class Guarded:
    base_url: str
    metrics_url: str

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://")

    async def metric(self, name: str, labels: str = "") -> float:
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(self.metrics_url)).text
        match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0


@pytest.fixture(scope="module")
def guarded(stack: Stack) -> Iterator[Guarded]:
    http_port, metrics_port = free_ports(2)
    spec = extra_edge_spec(list(stack.specs.values()), GUARDED, http_port, metrics_port, env=GUARDED_ENV)
    stack.supervisor.start(spec)
    try:
        stack.supervisor.wait_ready(GUARDED, STARTUP_TIMEOUT)
        yield Guarded(f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        stack.supervisor.stop(GUARDED)


# --- connections that never finish a request -------------------------------------------------------


UPGRADE_HEAD = (
    b"Host: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
OPENINGS = {
    "idle": b"",
    "half_header": b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Never-Ends: ",
    "trickle": b"GET /healthz HTTP/1.1\r\n",
    "half_upgrade": b"GET /ws/v1/rooms/abcd HTTP/1.1\r\n" + UPGRADE_HEAD,
    "long_line_upgrade": b"GET /ws/v1/rooms/abcd?token="
    + b"t" * 10_000
    + b" HTTP/1.1\r\n"
    + UPGRADE_HEAD
    + b"\r\n",
    "oversized_head": b"GET /" + b"a" * 20_000,
}
# What each kind is answered, and whether it is cut at the head deadline (or at once).
EXPECTED = {
    "idle": (None, True),
    "half_header": (408, True),
    "trickle": (408, True),
    "half_upgrade": (408, True),
    "long_line_upgrade": (414, False),
    "oversized_head": (431, False),
}


@dataclass
class Probe:
    kind: str
    opened: float = 0.0
    ended: float | None = None
    status: int | None = None

    @property
    def lifetime(self) -> float:
        assert self.ended is not None
        return self.ended - self.opened


async def hold(port: int, kind: str, source: str, connected: asyncio.Queue[None]) -> Probe:
    """Open a connection from `source`, send the kind's opening, and wait for the edge to end it."""
    probe = Probe(kind, opened=time.monotonic())
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(OPENINGS[kind])
    connected.put_nowait(None)

    async def trickle() -> None:
        # A slowloris: a byte now and then, never the end of the head.
        while True:
            await asyncio.sleep(0.2)
            writer.write(b"X")

    dripping = asyncio.create_task(trickle()) if kind == "trickle" else None
    received = b""
    try:
        received = await asyncio.wait_for(reader.read(), 30)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        probe.ended = time.monotonic()
        if dripping is not None:
            dripping.cancel()
        writer.close()
    if received.startswith(b"HTTP/1.1 "):
        probe.status = int(received[9:12])
    return probe


async def chat_once(base_url: str, ws_url: str) -> float:
    """A person arriving: anonymous session, a room, a join, a socket, a message acked and delivered."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        token = await anonymous(http)
        room = await create_room(http, token)
        joined = await join(http, room["code"], "Visitor")
    socket = await ChatSocket.open(ws_url, room["code"], joined["room_token"])
    try:
        client_msg_id = await socket.send("still here")
        assert (await socket.ack_or_error(client_msg_id))["type"] == "ack"
        await socket.wait_for(lambda f: f["type"] == "message" and f["text"] == "still here")
    finally:
        await socket.close()
    return time.monotonic() - started


async def test_hundreds_of_unfinished_connections_neither_block_a_person_nor_outlive_their_timeouts(
    guarded: Guarded,
) -> None:
    connected: asyncio.Queue[None] = asyncio.Queue()
    kinds = list(OPENINGS)
    tasks = [
        asyncio.create_task(
            hold(guarded.port, kinds[index % len(kinds)], BAD_PEERS[index // PER_IP], connected)
        )
        for index in range(len(BAD_PEERS) * PER_IP)
    ]
    for _ in tasks:
        await asyncio.wait_for(connected.get(), 10)
    assert len(tasks) == 300
    # Someone arrives while all of them are held: in and chatting at once, not after the timeouts.
    chat_took = await chat_once(guarded.base_url, guarded.ws_url)
    held = [task for index, task in enumerate(tasks) if EXPECTED[kinds[index % len(kinds)]][1]]
    assert not any(task.done() for task in held), "the person had to wait for bad connections to go"
    assert chat_took < HEADER_TIMEOUT, chat_took

    probes = await asyncio.gather(*tasks)
    for probe in probes:
        status, at_deadline = EXPECTED[probe.kind]
        assert probe.status == status, (probe.kind, probe.status)
        if at_deadline:
            assert HEADER_TIMEOUT - 0.05 < probe.lifetime < HEADER_TIMEOUT + 2, (probe.kind, probe.lifetime)
        else:
            assert probe.lifetime < 1.5, (probe.kind, probe.lifetime)
    assert await guarded.metric("chatpop_connections_pending") == 0


async def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(guarded: Guarded) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
    answered = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert answered.startswith(b"HTTP/1.1 200 ")
    idle_from = time.monotonic()
    await asyncio.wait_for(reader.read(), 10)
    assert KEEP_ALIVE_TIMEOUT - 0.2 < time.monotonic() - idle_from < KEEP_ALIVE_TIMEOUT + 1.5
    writer.close()


async def first_answer(port: int, source: str) -> bytes:
    """What a new idle connection from `source` hears within half a second (b"" if nothing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        return await asyncio.wait_for(reader.read(200), 0.5)
    except (TimeoutError, ConnectionResetError):
        return b""
    finally:
        writer.close()


async def test_past_the_pending_limits_new_connections_are_refused_at_once(guarded: Guarded) -> None:
    port = guarded.port
    refused_per_ip = await guarded.metric("chatpop_connections_cut_total", '{reason="peer_limit"}')
    refused_total = await guarded.metric("chatpop_connections_cut_total", '{reason="total_limit"}')
    connected: asyncio.Queue[None] = asyncio.Queue()
    # One address opens 80: the first 50 are held (pending), the other 30 are answered 503 at once.
    from_one = [asyncio.create_task(hold(port, "idle", "127.0.0.21", connected)) for _ in range(80)]
    for _ in from_one:
        await asyncio.wait_for(connected.get(), 10)
    await asyncio.sleep(0.5)
    refused = [task.result() for task in from_one if task.done()]
    assert len(refused) == 80 - PER_IP and {probe.status for probe in refused} == {503}
    # Everyone else is unaffected.
    async with httpx.AsyncClient(base_url=guarded.base_url, timeout=5) as http:
        assert (await http.get("/healthz")).status_code == 200

    # Seven more addresses fill the total: then even a newcomer is refused until places free up.
    from_many = [
        asyncio.create_task(hold(port, "idle", f"127.0.0.{host}", connected))
        for host in range(22, 29)
        for _ in range(PER_IP)
    ]
    for _ in from_many:
        await asyncio.wait_for(connected.get(), 10)
    assert await guarded.metric("chatpop_connections_pending") == TOTAL
    assert (await first_answer(port, "127.0.0.29")).startswith(b"HTTP/1.1 503 ")

    # The head deadline frees every place: the newcomer gets in.
    probes = await asyncio.gather(*from_one, *from_many)
    assert all(probe.lifetime < HEADER_TIMEOUT + 2 for probe in probes)
    async with httpx.AsyncClient(
        base_url=guarded.base_url, timeout=5, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.29")
    ) as http:
        assert (await http.get("/healthz")).status_code == 200
    assert (
        await guarded.metric("chatpop_connections_cut_total", '{reason="peer_limit"}') >= refused_per_ip + 30
    )
    assert (
        await guarded.metric("chatpop_connections_cut_total", '{reason="total_limit"}') >= refused_total + 1
    )


# --- a WebSocket client that stops reading ---------------------------------------------------------


async def send_all(socket: ChatSocket, count: int, window: int = 16) -> None:
    """`count` messages, up to `window` waiting for their ack at a time; every one must be acked."""
    for start in range(0, count, window):
        ids = [await socket.send(TEXT) for _ in range(min(window, count - start))]
        for client_msg_id in ids:
            frame = await socket.ack_or_error(client_msg_id, timeout=30)
            assert frame["type"] == "ack", frame


def message_seqs(frames: list[Frame]) -> list[int]:
    return [frame["seq"] for frame in frames if frame["type"] == "message"]


async def read_until_closed(ws: ClientConnection) -> tuple[list[int], ConnectionClosed]:
    seqs: list[int] = []
    while True:
        try:
            raw = await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as closed:
            return seqs, closed
        frame = json.loads(raw)
        if frame["type"] == "message":
            seqs.append(frame["seq"])


async def test_a_reader_that_stops_is_cut_off_early_finds_1013_and_resumes_exactly(guarded: Guarded) -> None:
    async with httpx.AsyncClient(base_url=guarded.base_url, timeout=10) as http:
        host = await anonymous(http)
        room = await create_room(http, host)
        people = [await join(http, room["code"], name) for name in ("Slowpoke", "Chatty", "Talker")]
    code = room["code"]
    slow_url = f"{guarded.ws_url}/ws/v1/rooms/{code}?token={people[0]['room_token']}"
    slow = await connect(slow_url, max_queue=1)
    assert json.loads(await slow.recv())["type"] == "ready"
    chatty = await ChatSocket.open(guarded.ws_url, code, people[1]["room_token"])
    talker = await ChatSocket.open(guarded.ws_url, code, people[2]["room_token"])
    closes_before = await guarded.metric("chatpop_ws_slow_closes_total")
    try:
        # From here on the slow client reads nothing, while two others chat as fast as they can.
        stopped_reading = time.monotonic()
        chatting = asyncio.gather(send_all(chatty, 150), send_all(talker, 150))
        cut_off_after: float | None = None
        while not chatting.done():
            if cut_off_after is None and await guarded.metric("chatpop_ws_slow_closes_total") > closes_before:
                cut_off_after = time.monotonic() - stopped_reading
            await asyncio.sleep(0.05)
        await chatting
        assert cut_off_after is not None, "the client that stopped reading was never cut off"
        # 300 messages of 3.5 KB: it was cut off long before the room had sent them all.
        assert cut_off_after < 5, cut_off_after
        # Everyone else received everything, in order.
        for socket in (chatty, talker):
            await socket.wait_for_seq(300, timeout=30)
            assert message_seqs(socket.frames) == list(range(1, 301))

        # Reading again, the slow client finds what its buffers held, in order, then the close.
        held, closed = await read_until_closed(slow)
        assert closed.rcvd is not None, "the connection ended without a close frame"
        assert closed.rcvd.code == 1013
        assert held == list(range(1, len(held) + 1)) and 0 < len(held) < 300

        # Reconnecting with a resume brings exactly the rest.
        again = await connect(f"{slow_url}&after_seq={held[-1]}", max_queue=None)
        try:
            assert json.loads(await again.recv())["last_seq"] == 300
            resumed: list[int] = []
            while not resumed or resumed[-1] < 300:
                frame = json.loads(await asyncio.wait_for(again.recv(), 10))
                assert frame["type"] != "reload", frame
                if frame["type"] == "message":
                    resumed.append(frame["seq"])
            assert resumed == list(range(held[-1] + 1, 301))
        finally:
            await again.close()
    finally:
        await chatty.close()
        await talker.close()
        slow.transport.abort()

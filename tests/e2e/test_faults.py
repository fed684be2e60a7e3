"""Faults under traffic, with real processes.

Postgres restarted, or away for 5 s: every send is acknowledged or answered retryable, every
acknowledged message is stored once with its seq, REST never answers 500, readiness says when the
platform cannot serve. An edge process killed: its clients resume exactly on another edge.

Writers follow the client contract: a send answered `retryable: true` (or not answered in time) is
sent again with the same client_msg_id until it is acknowledged. Each test prints the counts it saw:
sends, acks, refusals (retryable or not) and lost messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from tests.e2e.chat import ChatSocket, bearer, history, join, new_id, open_room
from tests.e2e.conftest import SECOND_EDGE, Stack

WRITERS = 4
ACK_TIMEOUT = 6.0


@dataclass
class Tally:
    """What the writers saw, attempt by attempt."""

    sent: int = 0
    acked: int = 0
    refused_retryable: int = 0
    refused_otherwise: int = 0
    unanswered: int = 0
    codes: Counter[str] = field(default_factory=Counter)

    def report(self, label: str, lost: int) -> str:
        return json.dumps(
            {
                "fault": label,
                "sent": self.sent,
                "acked": self.acked,
                "refused_retryable": self.refused_retryable,
                "refused_otherwise": self.refused_otherwise,
                "unanswered_then_resent": self.unanswered,
                "lost": lost,
                "refusal_codes": dict(self.codes),
            }
        )


async def _write(
    socket: ChatSocket, stop: asyncio.Event, acked: dict[str, int], tally: Tally, who: str
) -> None:
    """Send one message after another until `stop`; each is retried with its id until acknowledged."""
    i = 0
    while not stop.is_set():
        msg_id = new_id()
        i += 1
        while True:
            tally.sent += 1
            await socket.send(f"{who} {i}", client_msg_id=msg_id)
            try:
                frame = await socket.ack_or_error(msg_id, timeout=ACK_TIMEOUT)
            except TimeoutError:
                tally.unanswered += 1
                continue
            socket.frames.remove(frame)
            if frame["type"] == "ack":
                tally.acked += 1
                acked[msg_id] = frame["seq"]
                break
            tally.codes[frame["code"]] += 1
            if not frame.get("retryable"):
                tally.refused_otherwise += 1
                raise AssertionError(f"a send was refused for good: {frame}")
            tally.refused_retryable += 1
            await asyncio.sleep(min(float(frame.get("retry_after") or 0.2), 0.5))
        await asyncio.sleep(0.01)


async def _poll_rest(
    client: httpx.AsyncClient, code: str, token: str, stop: asyncio.Event, seen: Counter[int]
) -> None:
    """History reads and REST sends beside the sockets; every status is counted."""
    while not stop.is_set():
        page = await client.get(f"/api/v1/rooms/{code}/messages?limit=20", headers=bearer(token))
        seen[page.status_code] += 1
        if page.status_code == 503:
            assert page.headers.get("Retry-After"), page.headers
            assert page.json()["error"]["code"] == "service_unavailable"
        sent = await client.post(
            f"/api/v1/rooms/{code}/messages",
            json={"client_msg_id": new_id(), "text": "over REST"},
            headers=bearer(token),
        )
        seen[sent.status_code] += 1
        await asyncio.sleep(0.05)


async def _poll_ready(client: httpx.AsyncClient, stop: asyncio.Event, seen: list[int]) -> None:
    while not stop.is_set():
        with contextlib.suppress(httpx.HTTPError):
            seen.append((await client.get("/readyz")).status_code)
        await asyncio.sleep(0.2)


async def _until(condition: Callable[[], bool], writers: list[asyncio.Task[None]], timeout: float) -> None:
    """Wait for `condition`; a writer that failed ends the wait with its error."""
    async with asyncio.timeout(timeout):
        while not condition():
            for writer in writers:
                if writer.done():
                    writer.result()
            await asyncio.sleep(0.02)


async def _run_through(
    stack: Stack,
    client: httpx.AsyncClient,
    label: str,
    *,
    down_for: float,
    mode: str,
    while_down: Callable[[httpx.AsyncClient, ChatSocket, ChatSocket], Awaitable[None]] | None = None,
) -> tuple[Tally, Counter[int], list[int]]:
    room = await open_room(client)
    people = [await join(client, room.code, f"Writer_{n}x") for n in range(WRITERS)]
    reader_person = await join(client, room.code, "ReaderOne")
    sockets = [await ChatSocket.open(stack.ws_url, room.code, p["room_token"]) for p in people]
    reader = await ChatSocket.open(stack.ws_url, room.code, reader_person["room_token"])
    acked: dict[str, int] = {}
    tally = Tally()
    statuses: Counter[int] = Counter()
    ready: list[int] = []
    stop = asyncio.Event()
    rest_stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as rest:
        tasks = [asyncio.create_task(_write(s, stop, acked, tally, f"w{n}")) for n, s in enumerate(sockets)]
        pollers = [
            asyncio.create_task(
                _poll_rest(rest, room.code, reader_person["room_token"], rest_stop, statuses)
            ),
            asyncio.create_task(_poll_ready(rest, rest_stop, ready)),
        ]
        try:
            await _until(lambda: tally.acked >= 40, tasks, 30)
            await stack.astop_postgres(mode)
            down_since = asyncio.get_running_loop().time()
            if while_down is not None:
                await while_down(rest, sockets[0], reader)
            await asyncio.sleep(max(0.0, down_for - (asyncio.get_running_loop().time() - down_since)))
            await stack.astart_postgres()
            # Traffic goes on for a while after Postgres is back.
            back_at = tally.acked
            await _until(lambda: tally.acked >= back_at + 40, tasks, 60)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            rest_stop.set()
            await asyncio.wait_for(asyncio.gather(*pollers), 30)
        finally:
            stop.set()
            rest_stop.set()
            for task in [*tasks, *pollers]:
                task.cancel()
            await asyncio.gather(*tasks, *pollers, return_exceptions=True)

        stored = await history(client, room.code, reader_person["room_token"])
        by_id: dict[str, int] = {m["client_msg_id"]: m["seq"] for m in stored}
        lost = sum(1 for msg_id, seq in acked.items() if by_id.get(msg_id) != seq)
        print(tally.report(label, lost), json.dumps({"rest_statuses": dict(statuses)}))
        try:
            assert len(stored) == len(by_id), "a message was stored twice"
            assert lost == 0, "an acknowledged message was lost"
            assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1)), "the seqs have a gap"
            # The live reader got every stored message exactly once, in order, without resuming by hand.
            await reader.wait_for_seq(len(stored), timeout=30)
            assert reader.seqs() == list(range(1, len(stored) + 1))
        finally:
            for s in [*sockets, reader]:
                await s.close()
    return tally, statuses, ready


async def test_postgres_restart_under_traffic_answers_every_send_and_loses_nothing(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tally, statuses, _ready = await _run_through(stack, client, "postgres restart", down_for=0.3, mode="fast")
    assert tally.refused_otherwise == 0
    assert not [s for s in statuses if s >= 500 and s != 503], statuses


async def test_postgres_down_for_five_seconds_under_traffic_answers_every_send_and_loses_nothing(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    served_while_down: list[str] = []

    async def what_still_works(rest: httpx.AsyncClient, writer: ChatSocket, reader: ChatSocket) -> None:
        """Without Postgres, what needs no Postgres goes on: open sockets, typing, keys, liveness."""
        await writer.send_json({"type": "typing"})
        await reader.wait_for(lambda f: f["type"] == "typing", timeout=3)
        served_while_down.append("typing")
        if (await rest.get("/.well-known/jwks.json")).status_code == 200:
            served_while_down.append("jwks")
        if (await rest.get("/healthz")).status_code == 200:
            served_while_down.append("healthz")

    tally, statuses, ready = await _run_through(
        stack, client, "postgres down 5 s", down_for=5.0, mode="immediate", while_down=what_still_works
    )
    assert served_while_down == ["typing", "jwks", "healthz"]
    assert tally.refused_otherwise == 0
    # Sends met the outage: they were held and retried, then refused as retryable, never for good.
    assert tally.refused_retryable + tally.unanswered > 0
    assert not [s for s in statuses if s >= 500 and s != 503], statuses
    assert statuses[503] > 0, statuses
    # Readiness said so while Postgres was away (after a few failed probes, not at the first), and
    # says ready again within a probe or two of its return.
    assert 503 in ready, ready
    async with asyncio.timeout(10):
        while (await client.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.2)


async def test_an_edge_killed_mid_traffic_its_clients_resume_exactly_elsewhere(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    """kill -9 of one edge process: its readers resume on the other edge with exactly what they
    missed, and a send that was in flight when it died, sent again with its id, is stored once."""
    doomed = (await stack.asecond_edge()).replace("http://", "ws://")
    room = await open_room(client)
    writer_person = await join(client, room.code, "SteadyWriter")
    reader_person = await join(client, room.code, "DoomedReader")
    sender_person = await join(client, room.code, "DoomedSender")
    writer = await ChatSocket.open(stack.ws_url, room.code, writer_person["room_token"])
    reader = await ChatSocket.open(doomed, room.code, reader_person["room_token"])
    sender = await ChatSocket.open(doomed, room.code, sender_person["room_token"])
    moved: list[ChatSocket] = []
    acked: dict[str, int] = {}
    tally = Tally()
    stop = asyncio.Event()
    traffic = asyncio.create_task(_write(writer, stop, acked, tally, "steady"))
    try:
        await _until(lambda: tally.acked >= 30, [traffic], 30)
        in_flight = await sender.send("sent as the edge died")
        await stack.akill(SECOND_EDGE)
        seen_before = reader.seqs()
        assert seen_before == list(range(1, len(seen_before) + 1))

        back_at = tally.acked
        await _until(lambda: tally.acked >= back_at + 20, [traffic], 30)
        # The reader comes back on the surviving edge and resumes from the last seq it saw.
        resumed = await ChatSocket.open(
            stack.ws_url,
            room.code,
            reader_person["room_token"],
            after_seq=seen_before[-1] if seen_before else 0,
        )
        moved.append(resumed)
        # The sender sends its unacknowledged message again, with the same id.
        retried = await ChatSocket.open(stack.ws_url, room.code, sender_person["room_token"])
        moved.append(retried)
        await retried.send("sent as the edge died", client_msg_id=in_flight)
        ack = await retried.ack_or_error(in_flight)
        assert ack["type"] == "ack", ack

        back_at = tally.acked
        await _until(lambda: tally.acked >= back_at + 10, [traffic], 30)
        stop.set()
        await asyncio.wait_for(traffic, 30)

        stored = await history(client, room.code, reader_person["room_token"])
        assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))
        assert [m["client_msg_id"] for m in stored].count(in_flight) == 1
        assert all(next(m["seq"] for m in stored if m["client_msg_id"] == i) == s for i, s in acked.items())
        await resumed.wait_for_seq(len(stored), timeout=30)
        # Before the kill on one edge, after it on the other: every seq exactly once, in order.
        assert seen_before + resumed.seqs() == list(range(1, len(stored) + 1))
    finally:
        stop.set()
        traffic.cancel()
        await asyncio.gather(traffic, return_exceptions=True)
        for s in [writer, reader, sender, *moved]:
            await s.close()
        await stack.astart(SECOND_EDGE)

"""The transactional outbox (chatpop_common.outbox) against the session's real Postgres.

Each test gets a schema of its own holding an `outbox` table made by `create_statements()` (the DDL
every service's migration runs), a pool whose connections see that schema first, and topics of its
own, so relays of other tests and of services never touch its rows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg
import pytest
from prometheus_client import REGISTRY

from chatpop_common import outbox
from chatpop_common.datastores import create_pg_pool
from chatpop_common.outbox import Message, PermanentFailure, Relay

WAIT = 10.0


@dataclass
class Box:
    pool: asyncpg.Pool
    schema: str
    database_url: str

    def relay(self, **options: object) -> Relay:
        settings: dict[str, object] = {"name": "test", "poll_interval": 0.05, "retry_first": 0.2}
        settings.update(options)
        return Relay(self.pool, **settings)  # type: ignore[arg-type]

    async def add(self, topic: str, key: str, payload: bytes = b"") -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            return await outbox.add(conn, topic, payload or key.encode(), key)

    async def row(self, topic: str, key: str) -> asyncpg.Record:
        record = await self.pool.fetchrow("SELECT * FROM outbox WHERE topic = $1 AND key = $2", topic, key)
        assert record is not None
        return record


@pytest.fixture
async def box(database_url: str) -> AsyncIterator[Box]:
    schema = f"outbox_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        await admin.execute(f'SET search_path TO "{schema}"')
        for statement in outbox.create_statements():
            await admin.execute(statement)
    finally:
        await admin.close()
    pool = await create_pg_pool(database_url, schema=schema, min_size=1, max_size=6)
    try:
        yield Box(pool, schema, database_url)
    finally:
        await pool.close()
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await admin.close()


def topic() -> str:
    return f"test.{uuid.uuid4().hex[:8]}"


class Recorder:
    """A handler that keeps what it was handed, and fails on demand."""

    def __init__(self, fail_first: int = 0, permanent: set[bytes] | None = None, delay: float = 0.0) -> None:
        self.calls: list[list[Message]] = []
        self.times: list[float] = []
        self.fail_first = fail_first
        self.permanent = permanent or set()
        self.delay = delay

    async def __call__(self, messages: Sequence[Message]) -> None:
        self.calls.append(list(messages))
        self.times.append(time.monotonic())
        if self.delay:
            await asyncio.sleep(self.delay)
        if len(self.calls) <= self.fail_first:
            raise ConnectionError("the receiver is away")
        refused = [m.key for m in messages if m.payload in self.permanent]
        if refused:
            raise PermanentFailure(f"refused {refused}")

    @property
    def delivered(self) -> Counter[str]:
        """Keys of calls that returned (once per successful hand-over)."""
        keys: Counter[str] = Counter()
        for number, call in enumerate(self.calls, 1):
            if number > self.fail_first and not any(m.payload in self.permanent for m in call):
                keys.update(m.key for m in call)
        return keys


async def eventually(check: object, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        await asyncio.sleep(0.02)


async def test_each_key_is_delivered_once_and_only_what_was_committed(box: Box) -> None:
    name = topic()
    recorder = Recorder()
    async with box.pool.acquire() as conn, conn.transaction():
        assert await outbox.add(conn, name, b"first", "a")
        assert not await outbox.add(conn, name, b"again", "a")
        assert await outbox.add(conn, name, b"second", "b")
    with pytest.raises(RuntimeError):
        async with box.pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, name, b"rolled back", "c")
            raise RuntimeError("the change failed")

    relay = box.relay()
    relay.register(name, recorder)
    relay.start()
    try:
        await eventually(lambda: _delivered(box, name, 2))
        # Later additions of a delivered key change nothing and are not handed over again.
        assert not await box.add(name, "a", b"third")
        assert await box.add(name, "d")
        await eventually(lambda: _delivered(box, name, 3))
        await asyncio.sleep(0.3)
    finally:
        await relay.stop()
    assert recorder.delivered == Counter({"a": 1, "b": 1, "d": 1})
    payloads = {m.key: m.payload for call in recorder.calls for m in call}
    assert payloads == {"a": b"first", "b": b"second", "d": b"d"}
    assert REGISTRY.get_sample_value("chatpop_outbox_delivered_total", {"topic": name}) == 3


async def _delivered(box: Box, name: str, count: int) -> bool:
    delivered = await box.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE topic = $1 AND delivered_at IS NOT NULL", name
    )
    return bool(delivered == count)


async def test_a_commit_wakes_a_listening_relay_long_before_its_poll(box: Box) -> None:
    name = topic()
    recorder = Recorder()
    relay = box.relay(poll_interval=60.0, listen_dsn=box.database_url)
    relay.register(name, recorder)
    relay.start()
    try:
        await asyncio.wait_for(relay.listening.wait(), WAIT)
        await asyncio.sleep(0.2)  # the round that follows LISTEN is over; the next poll is a minute away
        async with box.pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, name, b"x", "woken")
            await asyncio.sleep(0.3)
            assert recorder.calls == [], "a row must not be delivered before its transaction commits"
        committed = time.monotonic()
        await eventually(lambda: _delivered(box, name, 1), timeout=2.0)
        assert recorder.times[0] - committed < 2.0
    finally:
        await relay.stop()


async def test_a_failed_delivery_is_retried_with_growing_delays(box: Box) -> None:
    name = topic()
    recorder = Recorder(fail_first=2)
    relay = box.relay(retry_first=0.4, retry_limit=10.0)
    relay.register(name, recorder)
    await box.add(name, "k")
    relay.start()
    try:
        await eventually(lambda: _attempts(box, name, "k", 1))
        row = await box.row(name, "k")
        assert row["delivered_at"] is None and row["dead_at"] is None
        assert "the receiver is away" in row["last_error"]
        assert row["next_attempt_at"] > await box.pool.fetchval("SELECT now()")
        await eventually(lambda: _delivered(box, name, 1))
    finally:
        await relay.stop()
    assert len(recorder.calls) == 3
    first_wait = recorder.times[1] - recorder.times[0]
    second_wait = recorder.times[2] - recorder.times[1]
    # Jittered exponential backoff: 0.4 s then 0.8 s, each at least half of that.
    assert first_wait >= 0.2, first_wait
    assert second_wait >= 0.4, second_wait
    row = await box.row(name, "k")
    assert row["attempts"] == 2 and row["last_error"] is None
    assert REGISTRY.get_sample_value("chatpop_outbox_failed_attempts_total", {"topic": name}) == 2


async def _attempts(box: Box, name: str, key: str, attempts: int) -> bool:
    value = await box.pool.fetchval("SELECT attempts FROM outbox WHERE topic = $1 AND key = $2", name, key)
    return bool(value == attempts)


async def test_two_relays_never_hold_the_same_row_at_once(box: Box) -> None:
    name = topic()
    in_flight: set[str] = set()
    overlaps: list[str] = []
    handed: Counter[str] = Counter()

    async def handler(messages: Sequence[Message]) -> None:
        keys = {m.key for m in messages}
        overlaps.extend(keys & in_flight)
        in_flight.update(keys)
        handed.update(keys)
        try:
            await asyncio.sleep(0.01)
        finally:
            in_flight.difference_update(keys)

    keys = [f"row-{n}" for n in range(300)]
    async with box.pool.acquire() as conn, conn.transaction():
        for key in keys:
            await outbox.add(conn, name, b"x", key)
    relays = [box.relay(batch_size=7, poll_interval=0.01) for _ in range(2)]
    claims: list[Counter[str]] = []
    for relay in relays:
        seen: Counter[str] = Counter()
        claims.append(seen)

        async def counting(messages: Sequence[Message], seen: Counter[str] = seen) -> None:
            seen.update(m.key for m in messages)
            await handler(messages)

        relay.register(name, counting)
        relay.start()
    try:
        await eventually(lambda: _delivered(box, name, len(keys)), timeout=30)
    finally:
        for relay in relays:
            await relay.stop()
    assert overlaps == []
    assert handed == Counter(keys)
    assert all(claims), "both relays took part"


async def test_a_refused_row_goes_dead_and_the_rest_of_its_batch_is_delivered(box: Box) -> None:
    name = topic()
    recorder = Recorder(permanent={b"poison"})
    async with box.pool.acquire() as conn, conn.transaction():
        for n in range(4):
            await outbox.add(conn, name, f"fine {n}".encode(), f"fine-{n}")
        await outbox.add(conn, name, b"poison", "bad")
    relay = box.relay()
    relay.register(name, recorder)
    relay.start()
    try:
        await eventually(lambda: _delivered(box, name, 4))
        await eventually(lambda: _dead(box, name, 1))
        calls = len(recorder.calls)
        await asyncio.sleep(0.5)
        assert len(recorder.calls) == calls, "a dead row is not handed over again"
        await relay.measure()
    finally:
        await relay.stop()
    row = await box.row(name, "bad")
    assert row["dead_at"] is not None and row["delivered_at"] is None
    assert "refused" in row["last_error"]
    assert recorder.delivered == Counter({f"fine-{n}": 1 for n in range(4)})
    assert REGISTRY.get_sample_value("chatpop_outbox_dead_total", {"topic": name}) == 1
    assert REGISTRY.get_sample_value("chatpop_outbox_dead_rows", {"topic": name}) == 1
    assert REGISTRY.get_sample_value("chatpop_outbox_pending_rows", {"topic": name}) == 0


async def _dead(box: Box, name: str, count: int) -> bool:
    dead = await box.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE topic = $1 AND dead_at IS NOT NULL", name
    )
    return bool(dead == count)


async def test_rows_go_dead_after_max_attempts_and_pending_rows_are_measured(box: Box) -> None:
    name = topic()
    recorder = Recorder(fail_first=1_000)
    await box.add(name, "never")
    relay = box.relay(retry_first=0.05, max_attempts=3)
    relay.register(name, recorder)
    await relay.measure()
    assert REGISTRY.get_sample_value("chatpop_outbox_pending_rows", {"topic": name}) == 1
    assert (REGISTRY.get_sample_value("chatpop_outbox_oldest_pending_age_seconds", {"topic": name}) or 0) >= 0
    relay.start()
    try:
        await eventually(lambda: _dead(box, name, 1))
    finally:
        await relay.stop()
    assert len(recorder.calls) == 3
    assert (await box.row(name, "never"))["attempts"] == 3


async def test_stopping_lets_the_delivery_under_way_finish(box: Box) -> None:
    name = topic()
    recorder = Recorder(delay=0.5)
    await box.add(name, "slow")
    relay = box.relay()
    relay.register(name, recorder)
    relay.start()
    await eventually(lambda: _handed(recorder))
    await relay.stop(grace=5.0)
    assert await _delivered(box, name, 1)


async def _handed(recorder: Recorder) -> bool:
    return bool(recorder.calls)


async def test_rows_of_a_relay_cut_off_mid_delivery_are_delivered_by_another(box: Box) -> None:
    name = topic()
    hanging = Recorder(delay=60)
    await box.add(name, "stuck")
    first = box.relay()
    first.register(name, hanging)
    first.start()
    await eventually(lambda: _handed(hanging))
    # Stopped without grace: the round under way is cancelled and its rows are given back.
    await first.stop(grace=0)
    recorder = Recorder()
    second = box.relay()
    second.register(name, recorder)
    second.start()
    try:
        await eventually(lambda: _delivered(box, name, 1))
    finally:
        await second.stop()
    assert recorder.delivered == Counter({"stuck": 1})

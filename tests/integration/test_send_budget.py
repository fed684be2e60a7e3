"""The send budget (messaging's send_budget.py) against a single Redis and a 3-master Redis Cluster:
sends spend tokens taken ahead without a round trip each, never more than the bucket allows however
many processes hold tokens, held tokens go back when a lease ends, a holder that vanished stops
counting once its lease is over, slow-mode checks see what is held, and Redis being away lets sends
through."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from chatpop_common.datastores import RedisClient
from chatpop_messaging import send_budget
from chatpop_messaging.hotcache import RedisGuard
from chatpop_messaging.ratelimit import SendChecks, SendRateLimiter, SendToCheck
from chatpop_messaging.send_budget import SendBudget, bucket_key
from tests.integration.redis_targets import RedisTarget


@pytest.fixture
async def redis(redis_target: RedisTarget) -> AsyncIterator[RedisClient]:
    async with redis_target.connected() as client:
        yield client


def _sender() -> tuple[str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4())


def _budget(redis: RedisClient, *, rate: float, burst: int, lease: float) -> SendBudget:
    return SendBudget(redis, RedisGuard(1.0), rate=rate, burst=burst, lease_seconds=lease)


async def _state(redis: RedisClient, room: str, participant: str) -> tuple[float, float]:
    """The bucket's stored tokens and tokens held out (as last written)."""
    tokens, out = await redis.hmget(bucket_key(room, participant), ["tokens", "out"])
    return float(tokens), float(out or 0)


def _decisions(source: str) -> float:
    return REGISTRY.get_sample_value("chatpop_send_tokens_total", {"source": source}) or 0.0


async def test_sends_spend_held_tokens_and_stop_at_the_burst(redis: RedisClient) -> None:
    # A token every 100 s: nothing refills while this runs. Leases of 5 (a quarter of the burst).
    budget = _budget(redis, rate=0.01, burst=20, lease=600)
    assert budget.lease_size == 5
    room, participant = _sender()
    asked_before, held_before = _decisions("redis"), _decisions("process")
    try:
        answers = [(await budget.take([(room, participant)]))[0] for _ in range(25)]
        assert answers[:20] == [0] * 20
        # Refused with the time until the next token (100 s a token).
        assert all(90_000 <= wait <= 100_000 for wait in answers[20:])
        # Most sends spent a token held here; Redis was asked by the first and by those that found
        # the lease dry (top-ups run in the background and keep it filled).
        asked = _decisions("redis") - asked_before
        assert _decisions("process") - held_before + asked == 25
        assert asked <= 10, asked
        assert budget.held(room, participant) == 0
        tokens, out = await _state(redis, room, participant)
        assert tokens < 1
    finally:
        await budget.close()
    # Nothing held is left out: the bucket's books balance.
    tokens, out = await _state(redis, room, participant)
    assert out == 0 and tokens < 1


async def test_processes_together_never_exceed_the_burst(redis: RedisClient) -> None:
    first = _budget(redis, rate=0.01, burst=20, lease=600)
    second = _budget(redis, rate=0.01, burst=20, lease=600)
    room, participant = _sender()
    try:
        # One participant's sends alternating between two processes, then a flood on both at once.
        alternating = [(await budget.take([(room, participant)]))[0] for budget in [first, second] * 6]
        flood = await asyncio.gather(*(budget.take([(room, participant)]) for budget in [first, second] * 10))
        allowed = alternating.count(0) + sum(answer == [0] for answer in flood)
        held = first.held(room, participant) + second.held(room, participant)
        # Every send spent a token of the bucket; what is not spent is in the bucket or held.
        assert allowed + held <= 20
        # Stricter only by what the other process holds (a lease each at most).
        assert allowed >= 20 - 2 * first.lease_size
        tokens, out = await _state(redis, room, participant)
        assert tokens + out <= 20
    finally:
        await first.close()
        await second.close()
    # What the two held went back: a new process can spend exactly what is left.
    third = _budget(redis, rate=0.01, burst=20, lease=600)
    try:
        more = await third.take([(room, participant)] * 20)
        assert allowed + more.count(0) == 20
    finally:
        await third.close()


async def test_concurrent_first_sends_of_a_participant_take_one_lease_between_them(
    redis: RedisClient,
) -> None:
    # Many batches with the same participant's sends at once in one process: one lease between them,
    # not one each, so another process still finds the rest of the burst.
    first = _budget(redis, rate=0.01, burst=40, lease=1000)
    second = _budget(redis, rate=0.01, burst=40, lease=1000)
    assert first.lease_size == 10
    room, participant = _sender()
    try:
        answers = await asyncio.gather(*(first.take([(room, participant)]) for _ in range(8)))
        assert [answer for (answer,) in answers] == [0] * 8
        held = first.held(room, participant)
        assert held <= first.lease_size
        # The other process gets every token neither spent nor held there.
        rest = await second.take([(room, participant)] * (40 - 8 - held))
        assert rest == [0] * (40 - 8 - held)
        assert (await second.take([(room, participant)]))[0] > 0
    finally:
        await first.close()
        await second.close()


async def test_the_bucket_refills_only_up_to_the_burst_less_what_is_held(redis: RedisClient) -> None:
    # Ten tokens a second with a burst of ten: without the books the bucket would be full again in a
    # second while a process still held two tokens of it.
    holder = _budget(redis, rate=10, burst=10, lease=600)
    other = _budget(redis, rate=10, burst=10, lease=600)
    assert holder.lease_size == 2
    room, participant = _sender()
    try:
        assert await holder.take([(room, participant)]) == [0]
        assert holder.held(room, participant) == 2
        await asyncio.sleep(1.2)
        # Twelve at once in one round trip: the bucket holds at most 10 - 2.
        answers = await other.take([(room, participant)] * 12)
        assert answers.count(0) == 8
        assert [wait > 0 for wait in answers] == [False] * 8 + [True] * 4
        # The holder's two are still there to spend, without asking.
        assert await holder.take([(room, participant)] * 2) == [0, 0]
    finally:
        await holder.close()
        await other.close()


async def test_a_lease_that_ends_gives_back_what_it_held(redis: RedisClient) -> None:
    budget = _budget(redis, rate=0.01, burst=20, lease=0.3)
    assert budget.lease_size == 1
    room, participant = _sender()
    try:
        assert await budget.take([(room, participant)]) == [0]
        assert budget.held(room, participant) == 1
        assert (await _state(redis, room, participant))[1] == 1
        await asyncio.sleep(0.8)
        assert budget.held(room, participant) == 0
        tokens, out = await _state(redis, room, participant)
        assert out == 0 and 18.99 < tokens <= 19.05
    finally:
        await budget.close()


async def test_a_vanished_holder_stops_counting_once_its_lease_is_over(redis: RedisClient) -> None:
    # A process that took tokens ahead and died: the script called as it would, never told again.
    lease = redis.register_script(send_budget._LEASE)
    room, participant = _sender()
    key = bucket_key(room, participant)
    held_for = 0.3 + send_budget.LEASE_MARGIN
    assert await lease(keys=[key], args=[10, 20, held_for, 1, 4, 0, 0]) == [[4, 0]]
    assert (await _state(redis, room, participant))[1] == 3
    budget = _budget(redis, rate=10, burst=20, lease=0.3)
    try:
        # While its lease lasts the bucket refills only to 17.
        await asyncio.sleep(0.5)
        assert (await budget.take([(room, participant)] * 25)).count(0) == 17
        await budget.close()
        # Once it is over the bucket fills to the whole burst again.
        await asyncio.sleep(held_for + 2.1)
        budget = _budget(redis, rate=10, burst=20, lease=0.3)
        assert (await budget.take([(room, participant)] * 25)).count(0) == 20
    finally:
        await budget.close()


async def test_slow_mode_checks_and_spending_share_one_bucket(redis: RedisClient) -> None:
    limiter = SendRateLimiter(redis, RedisGuard(1.0), per_minute=0.6, burst=4, lease_seconds=600)
    checks = SendChecks(redis, RedisGuard(1.0), limiter)
    assert limiter.budget is not None and limiter.budget.lease_size == 1
    room, participant = _sender()

    async def send(slow: int) -> str | None:
        (refusal,) = await checks.check([SendToCheck(room, participant, str(uuid.uuid4()), slow)])
        return None if refusal is None else refusal.code

    try:
        # Spent with one held ahead: 2 of 4 left in the bucket.
        assert await send(0) is None
        # The slow-mode path takes from the bucket itself, with the marker...
        assert await send(30) is None
        # ...and a send slow mode holds back spends nothing.
        assert await send(30) == "slow_mode"
        assert await send(0) is None  # the held one, or the bucket's last
        assert await send(0) is None
        assert await send(0) == "rate_limited"
    finally:
        await limiter.close()


async def test_sends_go_ahead_while_redis_is_away() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = RedisTarget(f"redis://127.0.0.1:{port}/0", cluster=False).client()
    budget = _budget(client, rate=0.01, burst=1, lease=600)
    try:
        room, participant = _sender()
        assert await budget.take([(room, participant)] * 3) == [0, 0, 0]
    finally:
        await budget.close()
        await client.aclose()

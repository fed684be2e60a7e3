"""The Redis users outside messaging (common limiters, rooms' join-attempt limits and username rolls,
identity's and rooms' per-caller limits) against a single Redis and against a 3-master Redis Cluster:
the same answers on both, every key of one operation in one slot, different rooms and callers spread
over several slots, and scripts that survive an emptied script cache."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from chatpop_common.datastores import RedisClient
from chatpop_common.devstack import RedisCluster as LocalCluster
from chatpop_common.fixed_window import FixedWindowLimiter
from chatpop_common.keyslots import tagged
from chatpop_common.token_bucket import TokenBucketLimiter
from chatpop_rooms.limits import JoinAttemptLimiter
from chatpop_rooms.rolls import UsernameRolls
from tests.integration.redis_targets import RedisTarget, key_slots, keys_matching


@pytest.fixture
async def redis(redis_target: RedisTarget) -> AsyncIterator[RedisClient]:
    async with redis_target.connected() as client:
        yield client


@pytest.fixture
async def cluster(redis_cluster: LocalCluster) -> AsyncIterator[RedisClient]:
    """A client of the session's Redis Cluster alone, for slot checks."""
    client = RedisTarget(redis_cluster.url, cluster=True).client()
    assert isinstance(client, RedisCluster)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


def _id() -> str:
    return str(uuid.uuid4())


async def test_fixed_window_admits_the_limit_and_refuses_the_rest(redis: RedisClient) -> None:
    limiter = FixedWindowLimiter(redis, limit=3, window_seconds=60)
    key = tagged("test:fixed", _id())
    decisions = [await limiter.hit(key) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert 1 <= decisions[3].retry_after <= 60

    # Concurrent callers cannot slip past the limit, and each key has a window of its own.
    other = tagged("test:fixed", _id())
    outcomes = await asyncio.gather(*(limiter.hit(other) for _ in range(20)))
    assert sum(d.allowed for d in outcomes) == 3


async def test_token_bucket_admits_the_burst_then_refills(redis: RedisClient) -> None:
    limiter = TokenBucketLimiter(redis, limit=1, window_seconds=60, burst=5)
    key = tagged("test:bucket", _id())
    outcomes = await asyncio.gather(*(limiter.hit(key) for _ in range(12)))
    assert sum(d.allowed for d in outcomes) == 5
    refused = [d for d in outcomes if not d.allowed]
    # One token a minute: the next one is at most a minute away.
    assert all(1 <= d.retry_after <= 60 for d in refused)
    assert (await limiter.hit(tagged("test:bucket", _id()))).allowed


async def test_join_attempts_are_limited_per_client_and_per_room(redis: RedisClient) -> None:
    limiter = JoinAttemptLimiter(redis, client_limit=2, room_limit=3, window_seconds=60)
    room = _id()
    first = await limiter.reserve(room, "ip:a")
    second = await limiter.reserve(room, "ip:a")
    assert first.granted and not first.last_for_client
    assert second.granted and second.last_for_client and not second.last_for_room
    assert not (await limiter.reserve(room, "ip:a")).granted
    # A right code gives its reservation back.
    await limiter.release(second)
    assert (await limiter.reserve(room, "ip:a")).granted
    # The room-wide count is shared by every client of the room, and only of that room.
    last = await limiter.reserve(room, "ip:b")
    assert last.granted and last.last_for_room and not last.last_for_client
    assert not (await limiter.reserve(room, "ip:c")).granted
    assert (await limiter.reserve(_id(), "ip:b")).granted


async def test_rolls_hold_names_and_give_them_back(redis: RedisClient) -> None:
    rolls = UsernameRolls(redis, limit=3, window_seconds=60, hold_seconds=60)
    room, subject, other = _id(), _id(), _id()
    taken = await rolls.take(room, subject, ["Amber_Fox", "Blue_Owl"])
    assert (taken.username, taken.remaining) == ("Amber_Fox", 2)
    assert await rolls.holder(room, "amber_fox") == subject
    # A held name is nobody else's, and not the roller's again.
    assert (await rolls.take(room, other, ["Amber_Fox", "Blue_Owl"])).username == "Blue_Owl"
    assert (await rolls.take(room, subject, ["AMBER_FOX", "blue_owl"])).username is None
    # Concurrent rolls can neither exceed the limit nor be handed the same name.
    racer = _id()
    candidates = [f"Name_{n}" for n in range(10)]
    results = await asyncio.gather(*(rolls.take(room, racer, candidates) for _ in range(6)))
    names = [r.username for r in results if r.username is not None]
    assert len(names) == 3 and len(set(names)) == 3
    assert sum(r.exhausted for r in results) == 3
    assert (await rolls.peek(room, racer)).exhausted

    await rolls.release(room, subject)
    assert await rolls.holder(room, "amber_fox") is None
    assert await rolls.holder(room, "blue_owl") == other
    # Rolls in another room are counted and held on their own.
    assert (await rolls.take(_id(), racer, ["Name_0"])).username == "Name_0"


async def test_scripts_run_after_the_script_cache_was_emptied(redis: RedisClient) -> None:
    """A restarted node or a promoted replica knows no scripts: the call loads its script again."""
    limiter = FixedWindowLimiter(redis, limit=5, window_seconds=60)
    rolls = UsernameRolls(redis, limit=5, window_seconds=60, hold_seconds=60)
    keys = [tagged("test:noscript", _id()) for _ in range(12)]
    for key in keys:
        assert (await limiter.hit(key)).allowed
    if isinstance(redis, RedisCluster):
        await redis.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.PRIMARIES)
        known = await redis.execute_command(
            "SCRIPT EXISTS", limiter._hit.sha, target_nodes=RedisCluster.PRIMARIES
        )
    else:
        await redis.script_flush()
        known = await redis.script_exists(limiter._hit.sha)
    assert not any(known)
    # Keys on every master (a dozen tags spread over the cluster's three) each find the script again.
    for key in keys:
        assert (await limiter.hit(key)).remaining == 3
    assert (await rolls.take(_id(), _id(), ["Some_Name"])).username == "Some_Name"


async def test_one_operation_stays_in_one_slot_and_rooms_spread(cluster: RedisClient) -> None:
    rolls = UsernameRolls(cluster, limit=5, window_seconds=60, hold_seconds=60)
    attempts = JoinAttemptLimiter(cluster, client_limit=5, room_limit=5, window_seconds=60)
    room_slots: set[int] = set()
    for _ in range(12):
        room, subject = _id(), _id()
        await rolls.take(room, subject, ["Taken_Name", "Other_Name"])
        reservation = await attempts.reserve(room, f"sub:{subject}")
        # The roll's counter, held set and hold, and both attempt counters: one slot per room.
        keys = [
            *await keys_matching(cluster, f"rooms:rolls:{{{room}}}:*"),
            *reservation.keys,
        ]
        assert len(keys) == 5
        slots = await key_slots(cluster, keys)
        assert len(slots) == 1
        room_slots |= slots
    assert len(room_slots) > 1


async def test_per_caller_limit_keys_carry_their_caller_as_tag(cluster: RedisClient) -> None:
    """identity's and rooms' per-caller limits: each caller's key in its own slot, callers spread."""
    prefixes = [
        "identity:anon-sessions",
        "identity:reset-network",
        "identity:reset-email",
        "identity:password-change",
        "identity:account-delete",
        "rooms:room-creations",
    ]
    for prefix in prefixes:
        callers = [uuid.uuid4().hex for _ in range(12)]
        keys = [tagged(prefix, caller) for caller in callers]
        assert all(key == f"{prefix}:{{{caller}}}" for key, caller in zip(keys, callers, strict=True))
        # Hashed by the tag alone: the same slot as the bare caller id, and more than one slot overall.
        assert [await key_slots(cluster, [key]) for key in keys] == [
            await key_slots(cluster, [caller]) for caller in callers
        ]
        assert len(await key_slots(cluster, keys)) > 1

"""Resuming from below the oldest entry of a room's Redis stream, with Redis up: the stream answers
only what it holds in full, and the rest of the way is read from Postgres, exactly.

The stream is trimmed approximately (MAXLEN ~), so it keeps more than the cap, by a margin that
depends on Redis's node sizes: a resume just below the cap still finds everything in Redis. Here the
room gets many times the cap, the stream's real oldest entry is looked up, and the resume starts
below it. Messaging runs in-process with the fake rooms service of test_messaging_service.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis
from test_messaging_service import (
    GENEROUS_RATE_LIMIT,
    FakeRooms,
    Messaging,
    join,
    messaging_server,
    new_room,
    rooms,
)

from chatpop.messaging.v1 import messaging_pb2
from chatpop_messaging.hotcache import stream_key

__all__ = ["rooms"]  # the module-scoped fake rooms server, shared with test_messaging_service.py

HOT_CACHE_SIZE = 20
# Many times the cap and its trimming slack, so whole stream nodes are trimmed away.
SENT = 300
# Below the stream's oldest entry, this many messages must come from Postgres.
BELOW = 5


@pytest_asyncio.fixture(scope="module")
async def server(database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]) -> AsyncIterator[Messaging]:
    async with messaging_server(
        database_url,
        redis_url,
        rooms[1],
        hot_cache_size=HOT_CACHE_SIZE,
        resume_max=1000,
        **GENEROUS_RATE_LIMIT,
    ) as running:
        yield running


async def stream_bounds(redis_url: str, room_id: str) -> tuple[int, int, int]:
    """(oldest seq, newest seq, entries) of the room's Redis stream."""
    client: aioredis.Redis = aioredis.Redis.from_url(redis_url)  # type: ignore[type-arg]
    try:
        key = stream_key(room_id)
        oldest = await client.xrange(key, "-", "+", count=1)
        newest = await client.xrevrange(key, "+", "-", count=1)
        length = await client.xlen(key)
    finally:
        await client.aclose()
    assert oldest and newest, "the room's stream is empty"
    return int(oldest[0][0].split(b"-")[0]), int(newest[0][0].split(b"-")[0]), length


async def test_a_resume_from_below_the_streams_oldest_entry_reads_the_rest_from_postgres(
    server: Messaging, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake = rooms[0]
    room = new_room()
    writers = [join(fake, room, f"Writer{n}") for n in range(3)]
    sent: dict[int, messaging_pb2.Message] = {}
    for n in range(SENT):
        response = await server.send(writers[n % 3], f"message {n + 1}", f"floor-{n + 1}")
        sent[response.message.seq] = response.message
    assert sorted(sent) == list(range(1, SENT + 1))

    oldest, newest, length = await stream_bounds(redis_url, room)
    assert newest == SENT and length == newest - oldest + 1
    # Trimmed, but approximately: the stream holds at least the cap, often well beyond it.
    assert length >= HOT_CACHE_SIZE
    assert oldest > BELOW + 1, f"the stream was never trimmed (oldest entry {oldest})"
    member = writers[0]

    async def resume(after_seq: int) -> tuple[list[messaging_pb2.Message], list[str]]:
        """The messages a resume after `after_seq` gets, and where the service says they came from."""
        sources = ("hot_cache", "postgres")
        before = [await server.counter("chatpop_resume_reads_total", source=s) for s in sources]
        response = await server.after(member, after_seq)
        assert not response.reload and response.last_seq == SENT
        after = [await server.counter("chatpop_resume_reads_total", source=s) for s in sources]
        return list(response.messages), [
            s for s, old, new in zip(sources, before, after, strict=True) if new > old
        ]

    def expected(after_seq: int) -> list[messaging_pb2.Message]:
        return [sent[seq] for seq in range(after_seq + 1, SENT + 1)]

    # Redis is up and holds everything from its oldest entry on, beyond the cap: it answers alone.
    messages, sources = await resume(oldest - 1)
    assert messages == expected(oldest - 1)
    assert sources == ["hot_cache"]

    # From below the oldest entry: exactly the missed messages, the older ones from Postgres.
    after_seq = oldest - 1 - BELOW
    messages, sources = await resume(after_seq)
    assert messages == expected(after_seq)
    assert sources == ["postgres"]

    # A live subscription that resumes from there catches up the same way, in order, once each.
    events = server.subscribe(room, after_seq=after_seq)
    try:
        caught_up = [await events.message() for _ in range(SENT - after_seq)]
        assert caught_up == expected(after_seq)
        marker = await server.send(member, "live again")
        assert await events.message() == marker.message
    finally:
        await events.close()

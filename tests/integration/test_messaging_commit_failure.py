"""A message whose commit fails leaves no trace: no subscriber, no Redis stream entry, no publish, no
ack, no seq used up. Fan-out must come after the commit, and only a commit that can fail shows it.

Postgres is made to refuse the commit with a deferred constraint trigger, created here on messaging's
`messages` table for one room and one text: it runs at COMMIT, after the insert itself went through,
so the message is refused exactly when a transaction that publishes before committing would already
have published it. Messaging runs in-process against the session's Postgres and Redis, with the fake
rooms service of test_messaging_service.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from test_messaging_service import (
    EVENT_TIMEOUT,
    GENEROUS_RATE_LIMIT,
    FakeRooms,
    Member,
    Messaging,
    failure,
    join,
    messaging_server,
    new_room,
    rooms,
)

from chatpop.messaging.v1 import messaging_pb2
from chatpop_messaging import keys
from chatpop_messaging.hotcache import live_channel, stream_key
from chatpop_messaging.store import ENTRY_COLUMNS, read_entries

__all__ = ["rooms"]  # the module-scoped fake rooms server, shared with test_messaging_service.py

REFUSED = "this one is refused at commit"
# The client_msg_ids REFUSED is sent with.
REFUSED_IDS = "('refused-1', 'retried-1')"
# Refuse every commit of the marked text, however often it is tried.
ALWAYS = 1_000_000


@asynccontextmanager
async def refused_at_commit(
    database_url: str, room_id: str, *, sqlstate: str, times: int = ALWAYS
) -> AsyncIterator[None]:
    """The first `times` commits of a REFUSED message in `room_id` fail with `sqlstate` (told by its
    client_msg_id, REFUSED_IDS: the stored text is sealed)."""
    tag = uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(database_url)
    try:
        # A sequence counts the attempts: unlike a table, it is not rolled back with them.
        await conn.execute(
            f"""
            CREATE SEQUENCE messaging.refusals_{tag};
            CREATE FUNCTION messaging.refuse_{tag}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('messaging.refusals_{tag}') <= {times} THEN
                    RAISE EXCEPTION 'commit refused by the test' USING ERRCODE = '{sqlstate}';
                END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER refuse_{tag} AFTER INSERT ON messaging.messages
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                WHEN (NEW.room_id = '{room_id}' AND NEW.client_msg_id IN {REFUSED_IDS})
                EXECUTE FUNCTION messaging.refuse_{tag}();
            """
        )
        yield
    finally:
        await conn.execute(
            f"""
            DROP TRIGGER refuse_{tag} ON messaging.messages;
            DROP FUNCTION messaging.refuse_{tag}();
            DROP SEQUENCE messaging.refusals_{tag};
            """
        )
        await conn.close()


class Published:
    """Everything published on a room's live channel, decoded."""

    def __init__(self, client: aioredis.Redis, room_id: str) -> None:  # type: ignore[type-arg]
        self._pubsub = client.pubsub()
        self._room_id = room_id
        self.messages: list[messaging_pb2.Message] = []

    async def start(self) -> None:
        await self._pubsub.subscribe(live_channel(self._room_id))

    async def until(self, seq: int) -> list[messaging_pb2.Message]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EVENT_TIMEOUT
        while not self.messages or self.messages[-1].seq < seq:
            assert loop.time() < deadline, f"seq {seq} was never published"
            event = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if event is not None:
                # Sealed with the room's key: opened with this process's messaging keyring.
                opener = await keys.keyring().opener(self._room_id, [event["data"]])
                self.messages.append(opener.entry(event["data"]))
        return self.messages

    async def close(self) -> None:
        await self._pubsub.aclose()


@pytest_asyncio.fixture(scope="module")
async def sender(database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]) -> AsyncIterator[Messaging]:
    async with messaging_server(database_url, redis_url, rooms[1], **GENEROUS_RATE_LIMIT) as server:
        yield server


@pytest_asyncio.fixture(scope="module")
async def other_process(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> AsyncIterator[Messaging]:
    """A second messaging process: its subscribers hear of messages only through Redis."""
    async with messaging_server(database_url, redis_url, rooms[1], **GENEROUS_RATE_LIMIT) as server:
        yield server


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:  # type: ignore[type-arg]
    client: aioredis.Redis = aioredis.Redis.from_url(redis_url)  # type: ignore[type-arg]
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def fake_rooms(rooms: tuple[FakeRooms, str]) -> FakeRooms:
    return rooms[0]


class Watchers:
    """Every way a message leaves messaging, watched from before the first send."""

    def __init__(
        self,
        sender: Messaging,
        other: Messaging,
        client: aioredis.Redis,  # type: ignore[type-arg]
        room_id: str,
    ) -> None:
        self.local = sender.subscribe(room_id, after_seq=0)
        self.remote = other.subscribe(room_id, after_seq=0)
        self.published = Published(client, room_id)
        self._client = client
        self._room_id = room_id

    async def stream(self) -> list[messaging_pb2.Message]:
        """The room's Redis stream (the hot cache), oldest first; each entry's id is its seq."""
        entries = await self._client.xrange(stream_key(self._room_id))
        opener = await keys.keyring().opener(self._room_id, [fields[b"m"] for _entry_id, fields in entries])
        messages = [opener.entry(fields[b"m"]) for _entry_id, fields in entries]
        assert [entry_id for entry_id, _fields in entries] == [f"{m.seq}-0".encode() for m in messages]
        return messages

    async def close(self) -> None:
        await self.local.close()
        await self.remote.close()
        await self.published.close()


@asynccontextmanager
async def watching(
    sender: Messaging,
    other: Messaging,
    client: aioredis.Redis,  # type: ignore[type-arg]
    member: Member,
) -> AsyncIterator[Watchers]:
    watchers = Watchers(sender, other, client, member.room_id)
    try:
        await watchers.published.start()
        # Both streams are live once the first message reaches them.
        first = await sender.send(member, "before")
        assert first.message.seq == 1
        for events in (watchers.local, watchers.remote):
            assert await events.message() == first.message
        yield watchers
    finally:
        await watchers.close()


async def stored(database_url: str, room_id: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            f"SELECT {ENTRY_COLUMNS} FROM messaging.messages WHERE room_id = $1 ORDER BY seq",
            room_id,
        )
        last = await conn.fetchval("SELECT last_seq FROM messaging.room_counters WHERE room_id = $1", room_id)
    finally:
        await conn.close()
    assert last == (rows[-1]["seq"] if rows else None), "the room's counter moved past its last message"
    # The texts are sealed: read as messaging reads them.
    return [(message.seq, message.text) for message in await read_entries(rows)]


@pytest.mark.parametrize(
    ("sqlstate", "status", "code"),
    [
        # A deferred constraint that fails: nothing to retry, the caller learns nothing internal.
        ("23514", grpc.StatusCode.INTERNAL, "internal"),
        # A serialization failure: retried within the deadline, still refused, then "try again".
        ("40001", grpc.StatusCode.UNAVAILABLE, "service_unavailable"),
    ],
)
async def test_a_message_whose_commit_fails_is_neither_delivered_nor_acknowledged(
    sender: Messaging,
    other_process: Messaging,
    redis_client: aioredis.Redis,  # type: ignore[type-arg]
    fake_rooms: FakeRooms,
    database_url: str,
    sqlstate: str,
    status: grpc.StatusCode,
    code: str,
) -> None:
    member = join(fake_rooms, new_room())
    async with watching(sender, other_process, redis_client, member) as watchers:
        async with refused_at_commit(database_url, member.room_id, sqlstate=sqlstate):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await sender.send(member, REFUSED, "refused-1")
        assert failure(refused.value)[:2] == (status, code)
        assert "refused" not in (refused.value.details() or "")

        after = await sender.send(member, "after")
        assert after.created and after.message.seq == 2
        # The next message is the next thing every subscriber sees, under the next seq.
        for events in (watchers.local, watchers.remote):
            assert await events.message() == after.message
        assert [(m.seq, m.text) for m in await watchers.published.until(2)] == [(1, "before"), (2, "after")]
        assert [(m.seq, m.text) for m in await watchers.stream()] == [(1, "before"), (2, "after")]
        # Readers see the same, from the hot cache and from Postgres.
        page = await sender.history(member)
        assert [(m.seq, m.text) for m in page.messages] == [(2, "after"), (1, "before")]
        resumed = await other_process.after(member, 0)
        assert [(m.seq, m.text) for m in resumed.messages] == [(1, "before"), (2, "after")]
        assert await stored(database_url, member.room_id) == [(1, "before"), (2, "after")]

        # Sent again once Postgres takes it, it is a new message with the next seq, delivered once.
        again = await sender.send(member, REFUSED, "refused-1")
        assert again.created and again.message.seq == 3
        for events in (watchers.local, watchers.remote):
            assert await events.message() == again.message


async def test_a_send_whose_first_commit_fails_is_delivered_once_as_acknowledged(
    sender: Messaging,
    other_process: Messaging,
    redis_client: aioredis.Redis,  # type: ignore[type-arg]
    fake_rooms: FakeRooms,
    database_url: str,
) -> None:
    """A passing failure at commit is retried by the server: the caller gets one ack, and subscribers
    get that very message (same id, same seq), never the attempt that was rolled back."""
    member = join(fake_rooms, new_room())
    async with watching(sender, other_process, redis_client, member) as watchers:
        async with refused_at_commit(database_url, member.room_id, sqlstate="40001", times=1):
            sent = await sender.send(member, REFUSED, "retried-1")
        assert sent.created and sent.message.seq == 2
        for events in (watchers.local, watchers.remote):
            assert await events.message() == sent.message
        after = await sender.send(member, "after")
        assert after.message.seq == 3
        for events in (watchers.local, watchers.remote):
            assert await events.message() == after.message
        published = await watchers.published.until(3)
        assert [(m.seq, m.id) for m in published] == [
            (1, published[0].id),
            (2, sent.message.id),
            (3, after.message.id),
        ]
        assert (await watchers.stream())[1:] == [sent.message, after.message]
        assert (await other_process.after(member, 1)).messages == [sent.message, after.message]
        assert await stored(database_url, member.room_id) == [(1, "before"), (2, REFUSED), (3, "after")]

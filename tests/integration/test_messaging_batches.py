"""SendMessages and group commit: an edge's batch of sends, each checked and answered on its own, the
sends of a room committed together with consecutive seqs, and Subscribe streams carrying batches.

Messaging runs in-process against the session's Postgres and Redis with the fake rooms service of
test_messaging_service.py; the edge's service credential is signed with the key the servers trust.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import grpc
import jwt
import pytest
import pytest_asyncio
from test_messaging_commit_failure import REFUSED, refused_at_commit
from test_messaging_service import (
    GENEROUS_RATE_LIMIT,
    KID,
    SIGNING_KEY,
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
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.datastores import create_pg_pool
from chatpop_common.devstack import Redis
from chatpop_messaging import store as store_module
from chatpop_messaging.group_commit import RoomsInserts
from chatpop_messaging.store import COMMIT_SERVER_SETTINGS, MessageStore, NewMessage

__all__ = ["rooms"]  # the module-scoped fake rooms server, shared with test_messaging_service.py

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


def edge_credential(service: str = "edge") -> Sequence[tuple[str, str]]:
    now = int(time.time())
    claims = {
        "iss": "chatpop",
        "aud": "chatpop:service",
        "sub": service,
        "typ": "service",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, SIGNING_KEY, algorithm="EdDSA", headers={"kid": KID})
    return (("authorization", f"Bearer {token}"),)


def batched(
    member: Member,
    text: str,
    client_msg_id: str | None = None,
    *,
    reply_to_seq: int = 0,
    token_version: int | None = None,
    room_id: str | None = None,
) -> messaging_pb2.BatchedSend:
    return messaging_pb2.BatchedSend(
        send=messaging_pb2.SendMessageRequest(
            room_id=member.room_id if room_id is None else room_id,
            client_msg_id=client_msg_id or uuid.uuid4().hex,
            text=text,
            reply_to_seq=reply_to_seq,
        ),
        participant_id=member.participant.id,
        token_version=member.participant.version if token_version is None else token_version,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


async def send_batch(
    server: Messaging, sends: Sequence[messaging_pb2.BatchedSend]
) -> list[messaging_pb2.SendResult]:
    response = await server.stub.SendMessages(
        messaging_pb2.SendMessagesRequest(sends=sends), metadata=edge_credential(), timeout=20
    )
    assert len(response.results) == len(sends)
    return list(response.results)


def sent(result: messaging_pb2.SendResult) -> messaging_pb2.SendMessageResponse:
    assert result.WhichOneof("result") == "sent", f"expected sent, got {result}"
    return result.sent


def error(result: messaging_pb2.SendResult) -> tuple[int, str, bool]:
    assert result.WhichOneof("result") == "error", f"expected an error, got {result}"
    return result.error.status, result.error.code, result.error.retryable


async def stored_seqs(database_url: str, room_id: str) -> tuple[list[int], int | None]:
    conn = await asyncpg.connect(database_url)
    try:
        seqs = [
            row["seq"]
            for row in await conn.fetch(
                "SELECT seq FROM messaging.messages WHERE room_id = $1 ORDER BY seq", room_id
            )
        ]
        last = await conn.fetchval("SELECT last_seq FROM messaging.room_counters WHERE room_id = $1", room_id)
    finally:
        await conn.close()
    return seqs, last


@pytest_asyncio.fixture(scope="module")
async def server(database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]) -> AsyncIterator[Messaging]:
    async with messaging_server(
        database_url, redis_url, rooms[1], transient_retry_seconds=0.5, **GENEROUS_RATE_LIMIT
    ) as server:
        yield server


@pytest_asyncio.fixture(scope="module")
async def other(database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]) -> AsyncIterator[Messaging]:
    """A second messaging process: its subscribers hear of batches only through Redis."""
    async with messaging_server(database_url, redis_url, rooms[1], **GENEROUS_RATE_LIMIT) as server:
        yield server


@pytest.fixture
def fake_rooms(rooms: tuple[FakeRooms, str]) -> FakeRooms:
    return rooms[0]


async def test_concurrent_batches_and_single_sends_get_gap_free_consecutive_seqs(
    server: Messaging, other: Messaging, fake_rooms: FakeRooms, database_url: str
) -> None:
    room = new_room()
    members = [join(fake_rooms, room, f"Member{i}") for i in range(5)]
    batches = [[batched(m, f"batch {b} from {i}") for i, m in enumerate(members)] for b in range(20)]
    singles = [members[i % 5] for i in range(20)]
    # Both processes at once, as behind the edge's round robin.
    outcomes = await asyncio.gather(
        *(send_batch(server if b % 2 else other, sends) for b, sends in enumerate(batches)),
        *((server if i % 2 else other).send(member, f"single {i}") for i, member in enumerate(singles)),
    )
    acked: list[messaging_pb2.Message] = []
    for outcome in outcomes:
        if isinstance(outcome, list):
            batch_messages = [sent(result).message for result in outcome]
            # One batch's sends of a room commit in the order given, one after the other.
            assert [m.seq for m in batch_messages] == list(
                range(batch_messages[0].seq, batch_messages[0].seq + len(batch_messages))
            )
            acked += batch_messages
        else:
            assert outcome.created
            acked.append(outcome.message)
    total = 20 * 5 + 20
    assert sorted(m.seq for m in acked) == list(range(1, total + 1))
    assert len({m.id for m in acked}) == total
    assert await stored_seqs(database_url, room) == (list(range(1, total + 1)), total)
    page = await server.after(members[0], 0)
    assert {m.seq: m for m in page.messages} == {m.seq: m for m in acked}


async def test_each_send_of_a_batch_is_answered_on_its_own(
    server: Messaging, fake_rooms: FakeRooms, database_url: str
) -> None:
    room, closed_room = new_room(), new_room()
    member = join(fake_rooms, room, "Member")
    banned = join(fake_rooms, room, "Banned", banned=True)
    bumped = join(fake_rooms, room, "Bumped", version=3)
    fake_rooms.rooms[closed_room] = rooms_pb2.Room(id=closed_room, name="Closed", closed=True)
    in_closed = join(fake_rooms, closed_room, "Late")
    results = await send_batch(
        server,
        [
            batched(member, "first"),
            batched(member, "   "),
            batched(banned, "let me in"),
            batched(member, "bad id", "not valid!"),
            batched(member, "wrong room", room_id="no/such"),
            batched(member, "replying", reply_to_seq=40),
            batched(bumped, "old token", token_version=2),
            batched(in_closed, "too late"),
            batched(member, "second"),
        ],
    )
    first, second = sent(results[0]), sent(results[8])
    assert (first.message.seq, first.message.text, first.created) == (1, "first", True)
    assert (second.message.seq, second.message.text) == (2, "second")
    assert [error(r) for r in results[1:8]] == [
        (INVALID_ARGUMENT, "message_empty", False),
        (PERMISSION_DENIED, "banned", False),
        (INVALID_ARGUMENT, "invalid_client_msg_id", False),
        (INVALID_ARGUMENT, "invalid_room_id", False),
        (INVALID_ARGUMENT, "reply_target_not_found", False),
        (PERMISSION_DENIED, "token_revoked", False),
        (grpc.StatusCode.FAILED_PRECONDITION.value[0], "room_closed", False),
    ]
    assert all(r.error.message for r in results[1:8])
    # Reply targets are checked before the batch commits: one committed earlier is found.
    (reply,) = await send_batch(server, [batched(member, "replying", reply_to_seq=1)])
    assert (sent(reply).message.seq, sent(reply).message.reply_to_seq) == (3, 1)
    assert await stored_seqs(database_url, room) == ([1, 2, 3], 3)


async def test_retries_and_duplicates_in_a_batch_are_answered_with_the_original(
    server: Messaging, fake_rooms: FakeRooms, database_url: str
) -> None:
    room = new_room()
    member = join(fake_rooms, room)
    other_member = join(fake_rooms, room)
    original = await server.send(member, "once", "a")
    results = await send_batch(
        server,
        [
            batched(member, "once, changed on the retry", "a"),
            batched(member, "b first", "b"),
            batched(member, "b again", "b"),
            batched(other_member, "theirs", "b"),
            batched(member, "   ", "a"),  # invalid now, but a retry: the original answers
        ],
    )
    retry, b_first, b_again, theirs, invalid_retry = (sent(r) for r in results)
    assert (retry.message, retry.created) == (original.message, False)
    assert (invalid_retry.message, invalid_retry.created) == (original.message, False)
    assert (b_first.message.seq, b_first.message.text, b_first.created) == (2, "b first", True)
    assert (b_again.message, b_again.created) == (b_first.message, False)
    assert (theirs.message.seq, theirs.created) == (3, True)
    # Sent again in a later batch: the original again.
    (later,) = await send_batch(server, [batched(member, "b later", "b")])
    assert (sent(later).message, sent(later).created) == (b_first.message, False)
    assert await stored_seqs(database_url, room) == ([1, 2, 3], 3)


async def test_a_commit_failure_fails_only_that_rooms_sends_and_leaves_no_gap(
    server: Messaging, fake_rooms: FakeRooms, database_url: str
) -> None:
    failing, fine = new_room(), new_room()
    in_failing, in_fine = join(fake_rooms, failing), join(fake_rooms, fine)
    assert (await server.send(in_failing, "before")).message.seq == 1
    async with refused_at_commit(database_url, failing, sqlstate="40001"):
        results = await send_batch(
            server,
            [
                batched(in_failing, REFUSED, "refused-1"),
                batched(in_fine, "fine 1"),
                batched(in_failing, "same group"),
                batched(in_fine, "fine 2"),
            ],
        )
    assert [error(results[i]) for i in (0, 2)] == [(UNAVAILABLE, "service_unavailable", True)] * 2
    assert results[0].error.retry_after_ms > 0
    assert [sent(results[i]).message.seq for i in (1, 3)] == [1, 2]
    # Tried again, they commit under the next seqs: none was used up by the failure.
    again = await send_batch(server, [batched(in_failing, REFUSED, "refused-1"), batched(in_failing, "next")])
    assert [(sent(r).message.seq, sent(r).created) for r in again] == [(2, True), (3, True)]
    assert await stored_seqs(database_url, failing) == ([1, 2, 3], 3)


async def test_with_redis_down_batches_are_still_committed_and_acknowledged(
    server: Messaging, fake_rooms: FakeRooms, redis_server: Redis, tmp_path: Path, database_url: str
) -> None:
    room = new_room()
    member = join(fake_rooms, room)
    redis_server.stop()
    try:
        results = await send_batch(server, [batched(member, f"during {i}") for i in range(4)])
        assert [(sent(r).message.seq, sent(r).created) for r in results] == [(i, True) for i in range(1, 5)]
    finally:
        if redis_server.process is None:
            redis_server.start(tmp_path / "redis.log", persist=False)
    assert await stored_seqs(database_url, room) == ([1, 2, 3, 4], 4)
    assert [m.seq for m in (await server.after(member, 0)).messages] == [1, 2, 3, 4]


async def test_subscribers_get_a_batch_as_the_messages_acknowledged(
    server: Messaging, other: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    member = join(fake_rooms, room)
    first = await server.send(member, "first")
    local, remote = server.subscribe(room, after_seq=0), other.subscribe(room, after_seq=0)
    try:
        for events in (local, remote):
            assert await events.message() == first.message
        results = await send_batch(server, [batched(member, f"in a batch {i}") for i in range(5)])
        acked = [sent(r).message for r in results]
        single = await server.send(member, "alone")
        for events in (local, remote):
            assert [await events.message() for _ in range(6)] == [*acked, single.message]
        # The local hub hands the group over at once: one batch of consecutive seqs.
        assert [2, 3, 4, 5, 6] in local.batches
        # A late subscriber's backfill comes as a batch too, equal to the messages.
        late = server.subscribe(room, after_seq=0)
        try:
            assert [await late.message() for _ in range(7)] == [first.message, *acked, single.message]
            assert late.batches == [[1, 2, 3, 4, 5, 6, 7]]
        finally:
            await late.close()
    finally:
        await local.close()
        await remote.close()


async def test_past_the_sends_in_flight_limit_sends_are_refused_at_once(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake, rooms_addr = rooms
    room = new_room()
    member = join(fake, room)
    async with messaging_server(
        database_url, redis_url, rooms_addr, sends_in_flight_max=3, **GENEROUS_RATE_LIMIT
    ) as small:
        results = await send_batch(small, [batched(member, f"m{i}") for i in range(5)])
        assert [sent(r).message.seq for r in results[:3]] == [1, 2, 3]
        for result in results[3:]:
            assert error(result) == (RESOURCE_EXHAUSTED, "overloaded", True)
            assert result.error.retry_after_ms > 0
        # Answered, so released: the next sends go through.
        assert (await small.send(member, "later")).message.seq == 4


async def test_only_the_edge_may_send_batches(server: Messaging, fake_rooms: FakeRooms) -> None:
    member = join(fake_rooms, new_room())
    request = messaging_pb2.SendMessagesRequest(sends=[batched(member, "hello")])
    for metadata in (member.metadata, edge_credential("payments")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await server.stub.SendMessages(request, metadata=metadata, timeout=10)
        assert failure(refused.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "forbidden")
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await server.stub.SendMessages(
            messaging_pb2.SendMessagesRequest(), metadata=edge_credential(), timeout=10
        )
    assert failure(empty.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_batch_size")


def _new_messages(
    room_id: str, texts: Sequence[str], client_msg_ids: Sequence[str] | None = None
) -> list[NewMessage]:
    return [
        NewMessage(
            room_id=room_id,
            sender_participant_id="p-rooms-inserts",
            sender_username="Tester",
            sender_is_host=False,
            sender_verified=False,
            client_msg_id=(client_msg_ids[index] if client_msg_ids else uuid.uuid4().hex),
            text=text,
            reply_to_seq=0,
        )
        for index, text in enumerate(texts)
    ]


async def _writers(database_url: str, room_ids: Sequence[str]) -> dict[str, set[int]]:
    """The transactions (xmin) that wrote each room's messages."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT room_id, xmin::text::bigint AS writer FROM messaging.messages WHERE room_id = ANY($1)",
            list(room_ids),
        )
    finally:
        await conn.close()
    found: dict[str, set[int]] = {room_id: set() for room_id in room_ids}
    for row in rows:
        found[row["room_id"]].add(row["writer"])
    return found


async def test_rooms_groups_waiting_together_share_one_transaction_and_a_failing_one_fails_alone(
    server: Messaging, database_url: str
) -> None:
    """While one insert is in flight the groups of other rooms wait, then go in one transaction; one
    that cannot be stored (two sends of one key in a group break the unique key) takes the others
    down with it only for a moment: they are stored on their own, it alone fails."""
    pool = await create_pg_pool(database_url, schema="messaging", max_size=4)
    try:
        store = MessageStore(pool)
        inserts = RoomsInserts(store, max_rooms=32, max_calls=1)
        rooms_ = [new_room() for _ in range(6)]
        for room_id in rooms_:
            await store.seal_group(room_id, _new_messages(room_id, ["warm the room's key"]))
        stored = await asyncio.gather(
            *(inserts.insert_group(room_id, _new_messages(room_id, ["one", "two"])) for room_id in rooms_)
        )
        assert [[message.seq for message in found if message] for found in stored] == [[1, 2]] * 6
        writers = await _writers(database_url, rooms_)
        assert all(len(found) == 1 for found in writers.values())
        # The first went alone; the five that waited behind it went together.
        assert len({next(iter(found)) for found in writers.values()}) == 2

        first, clash, last = rooms_[0], new_room(), rooms_[5]
        await store.seal_group(clash, _new_messages(clash, ["warm"]))
        blocker = asyncio.create_task(inserts.insert_group(first, _new_messages(first, ["three"])))
        await asyncio.sleep(0)
        waiting = [
            inserts.insert_group(clash, _new_messages(clash, ["a", "b"], ["same", "same"])),
            inserts.insert_group(last, _new_messages(last, ["three"])),
        ]
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert isinstance(outcomes[0], asyncpg.UniqueViolationError)
        assert isinstance(outcomes[1], list)
        assert [message.seq for message in outcomes[1] if message] == [3]
        assert [message.seq for message in await blocker if message] == [3]
        assert await stored_seqs(database_url, clash) == ([], None)
        assert await stored_seqs(database_url, last) == ([1, 2, 3], 3)
        await inserts.close()
    finally:
        await pool.close()


async def test_group_commits_run_on_connections_of_their_own_with_one_generic_plan(
    server: Messaging, database_url: str
) -> None:
    """insert_sealed goes to the commit pool (COMMIT_SERVER_SETTINGS): the statement is planned once
    per connection and every execution after that reuses it (with Postgres's default every group
    was planned again); the main pool keeps the default."""
    pool = await create_pg_pool(database_url, schema="messaging", max_size=2)
    commits = await create_pg_pool(
        database_url, schema="messaging", min_size=1, max_size=1, server_settings=COMMIT_SERVER_SETTINGS
    )
    try:
        store = MessageStore(pool, commit_pool=commits)
        room_id = new_room()
        for round_ in range(8):
            group = await store.seal_group(room_id, _new_messages(room_id, [f"round {round_}", "again"]))
            (found,) = await store.insert_sealed([group])
            assert [message.seq for message in found if message] == [2 * round_ + 1, 2 * round_ + 2]
        async with commits.acquire() as connection:
            assert await connection.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            plans = await connection.fetchrow(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
                store_module._INSERT_GROUP,
            )
        assert plans is not None and (plans["generic_plans"], plans["custom_plans"]) == (8, 0)
        assert await pool.fetchval("SHOW plan_cache_mode") == "auto"
    finally:
        await commits.close()
        await pool.close()

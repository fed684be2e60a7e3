"""Retention over gRPC: messaging in-process on the session's Postgres and Redis, a fake rooms service
that answers ListRetentionPolicies (and checks messaging's service credential), and a fake identity
that issues it. Old entries are made by backdating `created_at` in SQL; every count is read from the
raw tables.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import grpc
import jwt
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
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
)

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_messaging.hotcache import stream_key, tombstones_key

BATCH = 5
RESUME_MAX = 30
OLD = "now() - interval '10 days'"
DEADLINE = 20.0


def service_token(service: str) -> str:
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
    return jwt.encode(claims, SIGNING_KEY, algorithm="EdDSA", headers={"kid": KID})


def cli() -> tuple[tuple[str, str], ...]:
    """The admin CLI's credential, minted when used (one minted at import could expire first)."""
    return (("authorization", f"Bearer {service_token('cli')}"),)


class RetentionRooms(FakeRooms):
    """The fake rooms service, with each room's retention (rooms not named are unknown to it)."""

    def __init__(self) -> None:
        super().__init__()
        self.retention: dict[str, int] = {}
        self.callers: list[str] = []

    async def ListRetentionPolicies(
        self, request: rooms_pb2.ListRetentionPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.ListRetentionPoliciesResponse:
        token = dict(context.invocation_metadata()).get("authorization", "").removeprefix("Bearer ")
        self.callers.append(jwt.decode(token, options={"verify_signature": False})["sub"])
        assert 1 <= len(request.room_ids) <= 1000
        return rooms_pb2.ListRetentionPoliciesResponse(
            policies=[
                rooms_pb2.RetentionPolicy(room_id=room_id, retention_days=self.retention[room_id])
                for room_id in request.room_ids
                if room_id in self.retention
            ]
        )


class FakeIdentity(identity_pb2_grpc.IdentityServiceServicer):
    async def IssueServiceToken(
        self, request: identity_pb2.IssueServiceTokenRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.IssueServiceTokenResponse:
        return identity_pb2.IssueServiceTokenResponse(
            service_token=service_token(request.service), expires_in=600
        )


@pytest_asyncio.fixture(scope="module")
async def fakes() -> AsyncIterator[tuple[RetentionRooms, str]]:
    from chatpop.rooms.v1 import rooms_pb2_grpc

    rooms = RetentionRooms()
    server = grpc.aio.server()
    rooms_pb2_grpc.add_RoomsServiceServicer_to_server(rooms, server)
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(FakeIdentity(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield rooms, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def _settings(address: str) -> dict[str, object]:
    return {
        "identity_addr": address,
        "hot_cache_size": 50,
        "resume_max": RESUME_MAX,
        "retention_interval": 0,
        "retention_batch": BATCH,
        "retention_pause": 0,
        **GENEROUS_RATE_LIMIT,
    }


@pytest_asyncio.fixture(scope="module")
async def server_a(
    database_url: str, redis_url: str, fakes: tuple[RetentionRooms, str]
) -> AsyncIterator[Messaging]:
    async with messaging_server(database_url, redis_url, fakes[1], **_settings(fakes[1])) as server:
        yield server


@pytest_asyncio.fixture(scope="module")
async def server_b(
    database_url: str, redis_url: str, fakes: tuple[RetentionRooms, str]
) -> AsyncIterator[Messaging]:
    async with messaging_server(database_url, redis_url, fakes[1], **_settings(fakes[1])) as server:
        yield server


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "messaging"})
    try:
        yield connection
    finally:
        await connection.close()


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:  # type: ignore[type-arg]
    client: aioredis.Redis = aioredis.Redis.from_url(redis_url)  # type: ignore[type-arg]
    try:
        yield client
    finally:
        await client.aclose()


async def run(
    server: Messaging, room_id: str = "", *, dry_run: bool = False
) -> messaging_pb2.RunRetentionResponse:
    return await server.stub.RunRetention(
        messaging_pb2.RunRetentionRequest(room_id=room_id, dry_run=dry_run), metadata=cli(), timeout=60
    )


async def seqs(db: asyncpg.Connection, room_id: str) -> list[int]:
    rows = await db.fetch("SELECT seq FROM messages WHERE room_id = $1 ORDER BY seq", room_id)
    return [row["seq"] for row in rows]


async def backdate(db: asyncpg.Connection, room_id: str, through_seq: int) -> None:
    await db.execute(
        f"UPDATE messages SET created_at = {OLD} WHERE room_id = $1 AND seq <= $2",
        room_id,
        through_seq,
    )


async def count(db: asyncpg.Connection, table: str, room_id: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table} WHERE room_id = $1", room_id))


async def send_many(server: Messaging, member: Member, n: int, prefix: str) -> list[int]:
    return [(await server.send(member, f"{prefix} {i}")).message.seq for i in range(n)]


async def react(server: Messaging, member: Member, seq: int) -> int:
    response = await server.stub.SetReaction(
        messaging_pb2.SetReactionRequest(room_id=member.room_id, target_seq=seq, emoji="👍", on=True),
        metadata=member.metadata,
        timeout=10,
    )
    return int(response.entry.seq)


async def stream_seqs(client: aioredis.Redis, room_id: str) -> list[int]:  # type: ignore[type-arg]
    entries = await client.xrange(stream_key(room_id), "-", "+")
    return [int(entry_id.split(b"-")[0]) for entry_id, _ in entries]


async def test_retention_deletes_exactly_the_old_entries_and_what_refers_to_them(
    server_a: Messaging,
    fakes: tuple[RetentionRooms, str],
    db: asyncpg.Connection,
    redis_client: aioredis.Redis,  # type: ignore[type-arg]
) -> None:
    fake = fakes[0]
    room = new_room()
    host = join(fake, room, "Host", is_host=True)
    other = join(fake, room, "Other")
    reporter = join(fake, room, "Reporter")
    old = await send_many(server_a, other, 12, "old")
    reaction_entry = await react(server_a, host, old[2])
    await server_a.stub.ReportMessage(
        messaging_pb2.ReportMessageRequest(
            room_id=room, target_seq=old[3], reason=messaging_pb2.REPORT_REASON_SPAM
        ),
        metadata=reporter.metadata,
        timeout=10,
    )
    pinned = await server_a.stub.SetPin(
        messaging_pb2.SetPinRequest(room_id=room, target_seq=old[4], pinned=True),
        metadata=host.metadata,
        timeout=10,
    )
    last_old = pinned.entry.seq
    assert last_old > reaction_entry > old[-1]
    # A media record carried by an old message (written as SendMessage would leave it).
    media_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO media (room_id, id, uploader_participant_id, kind, state, message_seq)"
        " VALUES ($1, $2, $3, 'photo', 'ready', $4)",
        room,
        media_id,
        other.participant.id,
        old[5],
    )
    await db.execute(
        "UPDATE messages SET media_id = $3 WHERE room_id = $1 AND seq = $2", room, old[5], media_id
    )
    await backdate(db, room, last_old)
    floor = last_old + 1
    new = await send_many(server_a, other, 6, "new")
    # A new change to an old message: the entry stays, the reaction row goes with its message.
    late_reaction = await react(server_a, other, old[1])
    everything = await seqs(db, room)
    assert everything == list(range(1, late_reaction + 1))
    assert await count(db, "reactions", room) == 2
    assert await count(db, "reports", room) == 1
    assert await count(db, "pins", room) == 1
    assert len(await stream_seqs(redis_client, room)) == late_reaction

    fake.retention[room] = 7
    dry = await run(server_a, room, dry_run=True)
    assert dry.dry_run
    assert [(r.room_id, r.entries, r.media, r.floor_seq) for r in dry.rooms] == [(room, last_old, 1, floor)]
    assert await seqs(db, room) == everything, "a dry run deleted something"
    assert await db.fetchval("SELECT floor_seq FROM room_counters WHERE room_id = $1", room) == 0

    deleted_before = await server_a.counter("chatpop_retention_deleted_total", kind="entries")
    done = await run(server_a, room)
    assert not done.dry_run
    assert [(r.room_id, r.entries, r.media, r.floor_seq, r.retention_days) for r in done.rooms] == [
        (room, last_old, 1, floor, 7)
    ]
    assert (done.entries, done.media) == (dry.entries, dry.media)
    assert await seqs(db, room) == list(range(floor, late_reaction + 1))
    assert await db.fetchval("SELECT floor_seq FROM room_counters WHERE room_id = $1", room) == floor
    assert await count(db, "reactions", room) == 0
    assert await count(db, "reports", room) == 0
    assert await count(db, "pins", room) == 0
    state = await db.fetchrow(
        "SELECT state, delete_reason FROM media WHERE room_id = $1 AND id = $2", room, media_id
    )
    assert (state["state"] in ("deleting", "deleted"), state["delete_reason"]) == (True, "retention")
    assert (
        await server_a.counter("chatpop_retention_deleted_total", kind="entries") == deleted_before + last_old
    )
    # The hot cache holds nothing below the floor any more.
    assert await stream_seqs(redis_client, room) == list(range(floor, late_reaction + 1))
    assert fake.callers[-1] == "messaging"

    # Nothing more is old: a second run deletes nothing.
    again = await run(server_a, room)
    assert again.entries == 0 and await seqs(db, room) == list(range(floor, late_reaction + 1))
    assert new[0] == floor


async def test_history_and_resume_stop_at_the_floor(
    server_a: Messaging, fakes: tuple[RetentionRooms, str], db: asyncpg.Connection
) -> None:
    fake = fakes[0]
    room = new_room()
    member = join(fake, room, "Reader")
    await send_many(server_a, member, 20, "old")
    await backdate(db, room, 20)
    kept = await send_many(server_a, member, 5, "kept")
    fake.retention[room] = 1
    assert (await run(server_a, room)).entries == 20

    page = await server_a.history(member, limit=3)
    assert [m.seq for m in page.messages] == [25, 24, 23] and page.has_more and page.floor_seq == 21
    page = await server_a.history(member, before_seq=23, limit=50)
    assert [m.seq for m in page.messages] == [22, 21]
    assert not page.has_more and page.floor_seq == 21
    page = await server_a.history(member, before_seq=21, limit=50)
    assert list(page.messages) == [] and not page.has_more

    after = await server_a.after(member, 3)
    assert not after.reload and after.floor_seq == 21
    assert [m.seq for m in after.messages] == kept
    # Resuming from above the floor is unchanged, and says the floor too.
    after = await server_a.after(member, 23)
    assert [m.seq for m in after.messages] == [24, 25] and after.floor_seq == 21

    events = server_a.subscribe(room, 3)
    try:
        first = await events.next()
        assert first.WhichOneof("event") == "trimmed" and first.trimmed.floor_seq == 21
        assert await events.until(25) == kept
        live = await server_a.send(member, "live")
        assert (await events.message()).seq == live.message.seq
    finally:
        await events.close()
    # From the floor exactly, or from above it: no Trimmed.
    events = server_a.subscribe(room, 20)
    try:
        assert await events.until(26) == [21, 22, 23, 24, 25, 26]
    finally:
        await events.close()


async def test_a_resume_below_the_floor_reloads_only_when_the_rest_is_too_much(
    server_a: Messaging, fakes: tuple[RetentionRooms, str], db: asyncpg.Connection
) -> None:
    fake = fakes[0]
    room = new_room()
    member = join(fake, room, "Reader")
    await send_many(server_a, member, 10, "old")
    await backdate(db, room, 10)
    await send_many(server_a, member, RESUME_MAX + 1, "kept")
    fake.retention[room] = 2
    await run(server_a, room)
    after = await server_a.after(member, 0)
    assert after.reload and after.floor_seq == 11
    events = server_a.subscribe(room, 0)
    try:
        event = await events.next()
        assert event.WhichOneof("event") == "reload"
    finally:
        await events.close()


async def test_zero_keeps_forever_and_a_change_applies_at_the_next_run(
    server_a: Messaging, fakes: tuple[RetentionRooms, str], db: asyncpg.Connection
) -> None:
    fake = fakes[0]
    room = new_room()
    member = join(fake, room, "Writer")
    await send_many(server_a, member, 8, "m")
    await backdate(db, room, 8)
    fake.retention[room] = 0
    response = await run(server_a)
    assert room not in [r.room_id for r in response.rooms]
    assert await seqs(db, room) == list(range(1, 9))
    # Messages are 10 days old: a retention of 30 days keeps them, 9 days deletes them.
    fake.retention[room] = 30
    await run(server_a)
    assert await seqs(db, room) == list(range(1, 9))
    fake.retention[room] = 9
    response = await run(server_a)
    assert [(r.room_id, r.entries) for r in response.rooms if r.room_id == room] == [(room, 8)]
    assert await seqs(db, room) == []
    assert await db.fetchval("SELECT floor_seq FROM room_counters WHERE room_id = $1", room) == 9
    page = await server_a.history(member)
    assert list(page.messages) == [] and not page.has_more and page.floor_seq == 9 and page.last_seq == 8
    # The room goes on from its last seq.
    assert (await server_a.send(member, "after")).message.seq == 9


async def test_two_replicas_at_once_delete_each_entry_once(
    server_a: Messaging, server_b: Messaging, fakes: tuple[RetentionRooms, str], db: asyncpg.Connection
) -> None:
    fake = fakes[0]
    rooms = [new_room() for _ in range(3)]
    old, kept = 137, 4
    for room in rooms:
        # Straight into the log (as a bulk load would), then a few real messages.
        await db.execute("INSERT INTO room_counters (room_id, last_seq) VALUES ($1, $2)", room, old)
        await db.execute(
            f"""
            INSERT INTO messages (id, room_id, seq, sender_participant_id, sender_username, client_msg_id,
                                  text, created_at)
            SELECT gen_random_uuid(), $1, s, 'p', 'Bulk', 'bulk-' || s, '', {OLD}
            FROM generate_series(1, $2) AS s
            """,
            room,
            old,
        )
        await send_many(server_a, join(fake, room, "Writer"), kept, "kept")
        fake.retention[room] = 5
    # Both replicas run over every room at once, while a writer keeps sending to one of them.
    writer = join(fake, rooms[0], "Busy")

    async def keep_sending() -> int:
        sent = 0
        for i in range(20):
            await server_b.send(writer, f"during {i}")
            sent += 1
        return sent

    results = await asyncio.gather(run(server_a), run(server_b), run(server_a, rooms[1]), keep_sending())
    responses: Sequence[messaging_pb2.RunRetentionResponse] = results[:3]  # type: ignore[assignment]
    for room in rooms:
        deleted = sum(r.entries for response in responses for r in response.rooms if r.room_id == room)
        assert deleted == old, f"room {room}: {deleted} deleted"
        remaining = await seqs(db, room)
        assert remaining[0] == old + 1 and len(remaining) == remaining[-1] - old
        assert await db.fetchval("SELECT floor_seq FROM room_counters WHERE room_id = $1", room) == old + 1
    assert results[3] == 20


async def test_the_scheduled_job_runs_by_itself(
    database_url: str, redis_url: str, fakes: tuple[RetentionRooms, str], db: asyncpg.Connection
) -> None:
    fake = fakes[0]
    settings = {**_settings(fakes[1]), "retention_interval": 0.5}
    async with messaging_server(database_url, redis_url, fakes[1], **settings) as server:
        room = new_room()
        member = join(fake, room, "Writer")
        await send_many(server, member, 6, "m")
        await backdate(db, room, 4)
        fake.retention[room] = 3
        deadline = time.monotonic() + DEADLINE
        while await seqs(db, room) != [5, 6]:
            assert time.monotonic() < deadline, f"the job left {await seqs(db, room)}"
            await asyncio.sleep(0.1)
        assert await server.counter("chatpop_retention_runs_total", result="ok") >= 1


async def test_run_retention_takes_the_cli_credential_only(server_a: Messaging) -> None:
    member_like = (("authorization", f"Bearer {service_token('payments')}"),)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await server_a.stub.RunRetention(
            messaging_pb2.RunRetentionRequest(), metadata=member_like, timeout=10
        )
    assert failure(caught.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "forbidden")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await server_a.stub.RunRetention(
            messaging_pb2.RunRetentionRequest(room_id="bad room id!"), metadata=cli(), timeout=10
        )
    assert failure(caught.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_room_id")


async def test_the_hot_cache_loses_tombstones_below_the_floor(
    server_a: Messaging,
    fakes: tuple[RetentionRooms, str],
    db: asyncpg.Connection,
    redis_client: aioredis.Redis,  # type: ignore[type-arg]
) -> None:
    fake = fakes[0]
    room = new_room()
    member = join(fake, room, "Writer")
    sent = await send_many(server_a, member, 4, "m")
    await server_a.stub.DeleteMessage(
        messaging_pb2.DeleteMessageRequest(room_id=room, target_seq=sent[1]),
        metadata=member.metadata,
        timeout=10,
    )
    deadline = time.monotonic() + DEADLINE
    while not await redis_client.hexists(tombstones_key(room), str(sent[1])):
        assert time.monotonic() < deadline, "the deletion never reached the hot cache"
        await asyncio.sleep(0.05)
    await backdate(db, room, 5)
    fake.retention[room] = 1
    assert (await run(server_a, room)).entries == 5
    assert await redis_client.hlen(tombstones_key(room)) == 0
    assert await stream_seqs(redis_client, room) == []


async def test_a_resume_far_below_the_floor_gets_the_rest_without_a_reload(
    server_a: Messaging, fakes: tuple[RetentionRooms, str], db: asyncpg.Connection
) -> None:
    """More than RESUME_MAX entries after the position, but most of them deleted: no reload."""
    fake = fakes[0]
    room = new_room()
    member = join(fake, room, "Reader")
    await send_many(server_a, member, RESUME_MAX + 10, "old")
    await backdate(db, room, RESUME_MAX + 10)
    kept = await send_many(server_a, member, 3, "kept")
    fake.retention[room] = 1
    await run(server_a, room)
    after = await server_a.after(member, 1)
    assert not after.reload and after.floor_seq == kept[0]
    assert [m.seq for m in after.messages] == kept
    events = server_a.subscribe(room, 1)
    try:
        first = await events.next()
        assert first.WhichOneof("event") == "trimmed" and first.trimmed.floor_seq == kept[0]
        assert await events.until(kept[-1]) == kept
    finally:
        await events.close()

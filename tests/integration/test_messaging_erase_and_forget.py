"""Erasing a closed room and forgetting deleted accounts' participants, over gRPC against a real
messaging server, the session's Postgres, Redis and S3, and the fake rooms of test_messaging_service.py.

After EraseRoom the raw tables and Redis hold nothing of the room, and no data key is left that could
open anything a copy kept. After ForgetParticipants one PARTICIPANT_FORGOTTEN entry per room reaches
live subscribers and resumes, and history afterwards is history before with the entry applied.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from test_messaging_media import PHOTO, eventually, objects, s3_values, send, upload
from test_messaging_paid_pins import as_service
from test_messaging_service import (
    GENEROUS_RATE_LIMIT,
    FakeRooms,
    Member,
    Messaging,
    failure,
    fake_rooms,
    join,
    messaging_server,
    rooms,
)

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.devstack import SeaweedS3
from chatpop_common.objectstore import ObjectStore

# Fixtures shared with the modules imported from.
__all__ = ["fake_rooms", "objects", "rooms"]

FORGOTTEN = messaging_pb2.ENTRY_KIND_PARTICIPANT_FORGOTTEN
# Every messaging table keyed by room, and the column naming it.
ROOM_TABLES = (
    "messages",
    "reactions",
    "reports",
    "pins",
    "paid_pins",
    "paid_orders",
    "mutes",
    "read_positions",
    "room_boards",
    "media",
    "room_counters",
    "room_keys",
)


@pytest_asyncio.fixture(scope="module")
async def server(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str], s3_server: SeaweedS3
) -> AsyncIterator[Messaging]:
    async with messaging_server(
        database_url,
        redis_url,
        rooms[1],
        room_policy_cache_ttl=0,
        participant_cache_ttl=0,
        media_sweep_interval=3600,
        erase_batch=2,
        **s3_values(s3_server),
        **GENEROUS_RATE_LIMIT,
    ) as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "messaging"})
    try:
        yield connection
    finally:
        await connection.close()


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def open_room(fake_rooms: FakeRooms) -> tuple[str, Member, Member]:
    host_id = str(uuid.uuid4())
    room = fake_rooms.open(host_id)
    room.media.CopyFrom(rooms_pb2.MediaSettings(photo=True))
    room.retention_days = 0
    host = join(fake_rooms, room.id, "TheHost", is_host=True)
    fake_rooms.participants[(room.id, host.participant.id)].subject = host_id
    guest = join(fake_rooms, room.id, "Guest")
    return room.id, host, guest


async def raw_rows(db: asyncpg.Connection, room_id: str) -> dict[str, int]:
    counts = {}
    for table in ROOM_TABLES:
        counts[table] = await db.fetchval(f"SELECT count(*) FROM {table} WHERE room_id = $1", room_id)
    return counts


async def room_keys(redis: aioredis.Redis, room_id: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"msg:{{{room_id}}}:*")]


async def erase(server: Messaging, room_id: str, metadata: Sequence[tuple[str, str]] | None = None) -> bool:
    request = messaging_pb2.EraseRoomRequest(room_id=room_id)
    credential = metadata if metadata is not None else as_service("rooms")
    return bool((await server.stub.EraseRoom(request, metadata=credential, timeout=30)).erased)


async def test_erasing_a_closed_room_leaves_nothing_of_it_in_postgres_redis_or_s3(
    server: Messaging,
    fake_rooms: FakeRooms,
    db: asyncpg.Connection,
    redis: aioredis.Redis,
    objects: ObjectStore,
) -> None:
    room_id, host, guest = open_room(fake_rooms)
    marker = f"erase-marker-{uuid.uuid4().hex}"
    first = (await server.send(guest, f"{marker} one")).message
    await server.send(host, f"{marker} two")
    photo = await upload(server, guest, PHOTO, objects=objects)
    await send(server, guest, photo.id, text=f"{marker} photo")
    await server.stub.SetReaction(
        messaging_pb2.SetReactionRequest(room_id=room_id, target_seq=first.seq, emoji="\U0001f44d", on=True),
        metadata=host.metadata,
        timeout=10,
    )
    await server.stub.SetPin(
        messaging_pb2.SetPinRequest(room_id=room_id, target_seq=first.seq, pinned=True),
        metadata=host.metadata,
        timeout=10,
    )
    await server.stub.MarkRead(
        messaging_pb2.MarkReadRequest(room_id=room_id, seq=first.seq), metadata=guest.metadata, timeout=10
    )
    await server.history(guest)
    before = await raw_rows(db, room_id)
    assert before["messages"] >= 5 and before["room_keys"] >= 1 and before["media"] == 1
    assert await room_keys(redis, room_id), "the hot cache holds the room"
    sealed = await db.fetchval(
        "SELECT text FROM messages WHERE room_id = $1 AND seq = $2", room_id, first.seq
    )
    assert marker.encode() not in bytes(sealed), "content is stored sealed"

    # An open room is not erased; only rooms (or the CLI) may ask.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await erase(server, room_id)
    assert failure(caught.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "room_open")
    fake_rooms.rooms[room_id].closed = True
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await erase(server, room_id, as_service("payments"))
    assert failure(caught.value)[0] == grpc.StatusCode.PERMISSION_DENIED

    # Called until it says erased, as rooms' outbox does (media are purged in between).
    async def erased() -> bool:
        return await erase(server, room_id)

    await eventually(erased, "the room is erased")
    assert not await objects.keys(photo.object_prefix), "the photo's objects are gone from S3"
    assert await raw_rows(db, room_id) == dict.fromkeys(ROOM_TABLES, 0)
    assert await db.fetchval("SELECT count(*) FROM erased_rooms WHERE room_id = $1", room_id) == 1
    assert await room_keys(redis, room_id) == []
    # No key row is left: even a copy of the sealed text taken before (a backup) cannot be opened.
    assert await db.fetchval("SELECT count(*) FROM room_keys WHERE room_id = $1", room_id) == 0
    history = await server.history(guest)
    assert list(history.messages) == [] and history.last_seq == 0
    # Erasing again changes nothing and still answers erased.
    assert await erase(server, room_id)


def applied(history: Sequence[messaging_pb2.Message], entry: messaging_pb2.Message) -> list[tuple]:
    """A client's view of a history after it applied a participant_forgotten entry."""
    view = []
    for message in history:
        renamed = message.sender_participant_id == entry.sender_participant_id
        erased = renamed and entry.messages_erased
        view.append(
            (
                message.seq,
                entry.sender_username if renamed else message.sender_username,
                "" if erased or message.state.deleted else message.text,
                erased or message.state.deleted,
            )
        )
    return view


def seen(history: Sequence[messaging_pb2.Message]) -> list[tuple]:
    return [(m.seq, m.sender_username, "" if m.state.deleted else m.text, m.state.deleted) for m in history]


async def forget(
    server: Messaging, members: Sequence[Member], username: str, *, erase_messages: bool
) -> messaging_pb2.ForgetParticipantsResponse:
    request = messaging_pb2.ForgetParticipantsRequest(
        participants=[
            messaging_pb2.ForgottenParticipant(
                room_id=member.room_id, participant_id=member.participant.id, username=username
            )
            for member in members
        ],
        erase_messages=erase_messages,
    )
    return await server.stub.ForgetParticipants(request, metadata=as_service("rooms"), timeout=30)


@pytest.mark.parametrize("erase_messages", [False, True])
async def test_forgetting_renames_or_erases_and_live_resume_and_history_agree(
    server: Messaging,
    fake_rooms: FakeRooms,
    db: asyncpg.Connection,
    objects: ObjectStore,
    erase_messages: bool,
) -> None:
    room_id, host, guest = open_room(fake_rooms)
    for n in range(5):
        await server.send(guest, f"guest says {n}")
    await server.send(host, "host says hi")
    photo = await upload(server, guest, PHOTO, objects=objects)
    await send(server, guest, photo.id, text="guest's photo")
    # Subscribed after the room's last seq, the stream starts there: the ping sent next reaches it
    # however late the subscription begins (from -1, "from now", a slow start could miss it).
    live = server.subscribe(room_id, (await server.history(host)).last_seq)
    ping = (await server.send(host, "anyone here?")).message
    assert (await live.message()).seq == ping.seq
    before = await server.history(host)
    # Only rooms may ask.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await server.stub.ForgetParticipants(
            messaging_pb2.ForgetParticipantsRequest(), metadata=as_service("payments"), timeout=10
        )
    assert failure(caught.value)[0] == grpc.StatusCode.PERMISSION_DENIED

    new_name = "deleted_" + uuid.uuid4().hex[:6]
    response = await forget(server, [guest], new_name, erase_messages=erase_messages)
    assert response.entries == 1 and response.messages_changed >= 6

    entry = await live.message()
    await live.close()
    assert entry.kind == FORGOTTEN
    assert (entry.sender_participant_id, entry.sender_username) == (guest.participant.id, new_name)
    assert entry.messages_erased is erase_messages
    assert entry.seq == before.last_seq + 1
    resumed = await server.after(host, before.last_seq)
    assert [m.seq for m in resumed.messages] == [entry.seq] and resumed.messages[0].kind == FORGOTTEN

    after = await server.history(host)
    assert seen(after.messages) == applied(before.messages, entry)
    # The raw rows say the same; the name is gone from every entry of the participant.
    old_names = await db.fetchval(
        "SELECT count(*) FROM messages WHERE room_id = $1 AND sender_username = 'Guest'", room_id
    )
    assert old_names == 0
    if erase_messages:
        texts = await db.fetch(
            "SELECT text FROM messages WHERE room_id = $1 AND sender_participant_id = $2 AND kind = 1",
            room_id,
            guest.participant.id,
        )
        assert {bytes(row["text"]) for row in texts} == {b""}

        async def photo_gone() -> bool:
            return not await objects.keys(photo.object_prefix)

        await eventually(photo_gone, "the forgotten participant's photo is purged")

    # Calling again (rooms' outbox retries) appends nothing and changes nothing.
    again = await forget(server, [guest], new_name, erase_messages=erase_messages)
    assert again.entries == 0
    assert (await server.history(host)).last_seq == entry.seq

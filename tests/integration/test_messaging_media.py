"""Media records in messaging over gRPC: real messaging servers, the session's Postgres, Redis and S3
(SeaweedFS), and the fake rooms service of test_messaging_service.py (rooms' media settings, closing
and retention are set on it). Objects are put into the real bucket as the edge would, and purges are
checked by listing the bucket, polled with a deadline.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
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
from chatpop_common.objectstore import ObjectStore, S3Settings
from chatpop_messaging.hotcache import stream_key

# Fixtures shared with test_messaging_service.py.
__all__ = ["fake_rooms", "rooms"]

PHOTO = messaging_pb2.MEDIA_KIND_PHOTO
VOICE = messaging_pb2.MEDIA_KIND_VOICE
VIDEO = messaging_pb2.MEDIA_KIND_VIDEO
PENDING = messaging_pb2.MEDIA_STATE_PENDING
READY = messaging_pb2.MEDIA_STATE_READY
DELETED = messaging_pb2.MEDIA_STATE_DELETED
DEADLINE = 30.0

# What the edge stores for each kind: (variant, content type).
STORED = {
    PHOTO: [("full", "image/jpeg"), ("thumb", "image/jpeg")],
    VOICE: [("full", "audio/mp4")],
    VIDEO: [("full", "video/mp4"), ("poster", "image/jpeg")],
}


def s3_values(server: SeaweedS3) -> dict[str, Any]:
    return {
        "s3_endpoint_url": server.url,
        "s3_bucket": server.bucket,
        "s3_access_key_id": server.access_key,
        "s3_secret_access_key": server.secret_key,
        "s3_vacuum_url": server.master_url,
    }


@pytest_asyncio.fixture(scope="module")
async def server(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str], s3_server: SeaweedS3
) -> AsyncIterator[Messaging]:
    """Messaging with media on; its sweeper looks once at start-up and then not for an hour."""
    async with messaging_server(
        database_url,
        redis_url,
        rooms[1],
        room_policy_cache_ttl=0,
        media_sweep_interval=3600,
        **s3_values(s3_server),
        **GENEROUS_RATE_LIMIT,
    ) as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def objects(s3_server: SeaweedS3) -> AsyncIterator[ObjectStore]:
    store = await ObjectStore.open(S3Settings(**s3_values(s3_server)))
    try:
        yield store
    finally:
        await store.close()


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "messaging"})
    try:
        yield connection
    finally:
        await connection.close()


def media_room(fake_rooms: FakeRooms, *, photo: bool = True, voice: bool = True, video: bool = True) -> str:
    room = fake_rooms.open(str(uuid.uuid4()))
    room.media.CopyFrom(rooms_pb2.MediaSettings(photo=photo, voice=voice, video=video))
    room.retention_days = 0
    return room.id


async def create(server: Messaging, member: Member, kind: int = PHOTO) -> messaging_pb2.Media:
    request = messaging_pb2.CreateMediaRequest(room_id=member.room_id, kind=kind)  # type: ignore[arg-type]
    return (await server.stub.CreateMedia(request, metadata=member.metadata, timeout=10)).media


async def complete(
    server: Messaging, member: Member, created: messaging_pb2.Media, kind: int = PHOTO
) -> messaging_pb2.Media:
    request = messaging_pb2.CompleteMediaRequest(
        room_id=member.room_id,
        media_id=created.id,
        content_type=STORED[kind][0][1],
        size_bytes=1234,
        width=640 if kind != VOICE else 0,
        height=480 if kind != VOICE else 0,
        duration_ms=0 if kind == PHOTO else 2500,
        variants=[
            messaging_pb2.MediaVariant(
                name=name, content_type=content_type, size_bytes=100, width=64, height=48
            )
            for name, content_type in STORED[kind]
        ],
    )
    return (await server.stub.CompleteMedia(request, metadata=member.metadata, timeout=10)).media


async def upload(
    server: Messaging, member: Member, kind: int = PHOTO, *, objects: ObjectStore | None = None
) -> messaging_pb2.Media:
    """What the edge does: open the record, store every variant under its prefix, complete it."""
    created = await create(server, member, kind)
    if objects is not None:
        with tempfile.TemporaryDirectory() as folder:
            for name, content_type in STORED[kind]:
                path = Path(folder) / name
                path.write_bytes(f"{created.id}/{name}".encode() * 50)
                await objects.put_file(created.object_prefix + name, path, content_type)
    return await complete(server, member, created, kind)


async def send(
    server: Messaging, member: Member, media_id: str, text: str = "", client_msg_id: str | None = None
) -> messaging_pb2.SendMessageResponse:
    request = messaging_pb2.SendMessageRequest(
        room_id=member.room_id, client_msg_id=client_msg_id or uuid.uuid4().hex, text=text, media_id=media_id
    )
    return await server.stub.SendMessage(request, metadata=member.metadata, timeout=10)


async def get_media(
    server: Messaging, room_id: str, ids: Sequence[str], metadata: Sequence[tuple[str, str]]
) -> list[messaging_pb2.Media]:
    request = messaging_pb2.GetMediaRequest(room_id=room_id, media_ids=list(ids))
    return list((await server.stub.GetMedia(request, metadata=metadata, timeout=10)).media)


async def refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    status, code, _ = failure(caught.value)
    return status, code


async def eventually(check: Callable[[], Awaitable[bool]], what: str, deadline: float = DEADLINE) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline
    while not await check():
        if loop.time() > until:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.1)


async def purged(
    objects: ObjectStore,
    db: asyncpg.Connection,
    record: messaging_pb2.Media,
    reason: str,
    *,
    deadline: float = DEADLINE,
) -> None:
    """Wait until the media's objects are gone and its record says deleted, for `reason`."""

    async def gone() -> bool:
        if await objects.keys(record.object_prefix):
            return False
        row = await db.fetchrow(
            "SELECT state, delete_reason, variants FROM media WHERE room_id = $1 AND id = $2",
            record.room_id,
            uuid.UUID(record.id),
        )
        return row is not None and row["state"] == "deleted"

    await eventually(gone, f"media {record.id} is purged", deadline)
    row = await db.fetchrow(
        "SELECT delete_reason, variants::text AS variants, deleted_at FROM media WHERE id = $1",
        uuid.UUID(record.id),
    )
    assert row["delete_reason"] == reason
    assert row["variants"] == "[]"
    assert row["deleted_at"] is not None


async def backdate(db: asyncpg.Connection, record: messaging_pb2.Media, seconds: float) -> None:
    await db.execute(
        "UPDATE media SET created_at = now() - make_interval(secs => $3) WHERE room_id = $1 AND id = $2",
        record.room_id,
        uuid.UUID(record.id),
        seconds,
    )


# --- the record -------------------------------------------------------------------------------------


async def test_an_upload_is_created_pending_completed_ready_and_read_back(
    server: Messaging, fake_rooms: FakeRooms
) -> None:
    room = media_room(fake_rooms)
    member = join(fake_rooms, room, "Uploader")

    created = await create(server, member, VIDEO)
    assert created.state == PENDING
    assert created.kind == VIDEO
    assert created.room_id == room
    assert created.uploader_participant_id == member.participant.id
    assert created.object_prefix == f"media/{room}/{created.id}/"
    assert uuid.UUID(created.id)
    assert not created.variants and created.message_seq == 0

    done = await complete(server, member, created, VIDEO)
    assert done.state == READY
    assert (done.content_type, done.size_bytes, done.width, done.height, done.duration_ms) == (
        "video/mp4",
        1234,
        640,
        480,
        2500,
    )
    assert [(v.name, v.content_type, v.object_key) for v in done.variants] == [
        ("full", "video/mp4", created.object_prefix + "full"),
        ("poster", "image/jpeg", created.object_prefix + "poster"),
    ]
    # Completing again answers the same record.
    assert await complete(server, member, created, VIDEO) == done

    other = await upload(server, member, VOICE)
    unknown = str(uuid.uuid4())
    found = await get_media(server, room, [other.id, unknown, created.id], member.metadata)
    assert found == [other, done]


async def test_create_and_complete_refusals(server: Messaging, fake_rooms: FakeRooms) -> None:
    room = media_room(fake_rooms, video=False)
    member = join(fake_rooms, room)
    assert await refused(create(server, member, messaging_pb2.MEDIA_KIND_UNSPECIFIED)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_media_kind",
    )
    assert await refused(create(server, member, VIDEO)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "media_not_allowed",
    )
    banned = join(fake_rooms, room, banned=True)
    assert await refused(create(server, banned, PHOTO)) == (grpc.StatusCode.PERMISSION_DENIED, "banned")

    created = await create(server, member, VOICE)
    # A voice message stores no thumbnail.
    request = messaging_pb2.CompleteMediaRequest(
        room_id=room,
        media_id=created.id,
        content_type="audio/mp4",
        variants=[
            messaging_pb2.MediaVariant(name="full", content_type="audio/mp4"),
            messaging_pb2.MediaVariant(name="thumb", content_type="image/jpeg"),
        ],
    )
    assert await refused(server.stub.CompleteMedia(request, metadata=member.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_media_variants",
    )
    del request.variants[:]
    request.variants.add(name="poster", content_type="image/jpeg")
    assert await refused(server.stub.CompleteMedia(request, metadata=member.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_media_variants",
    )
    # Only its uploader completes it; from another room it does not exist.
    someone = join(fake_rooms, room)
    assert await refused(complete(server, someone, created, VOICE)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "media_not_yours",
    )
    elsewhere = join(fake_rooms, media_room(fake_rooms))
    assert await refused(complete(server, elsewhere, created, VOICE)) == (
        grpc.StatusCode.NOT_FOUND,
        "media_not_found",
    )
    bad = messaging_pb2.CompleteMediaRequest(room_id=room, media_id="not-a-uuid")
    assert await refused(server.stub.CompleteMedia(bad, metadata=member.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_media_id",
    )

    fake_rooms.rooms[room].closed = True
    assert await refused(create(server, member, PHOTO)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "room_closed",
    )
    fake_rooms.rooms[room].taken_down = True
    assert await refused(create(server, member, PHOTO)) == (grpc.StatusCode.NOT_FOUND, "room_taken_down")


async def test_uploads_answer_media_disabled_without_a_bucket(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str], fake_rooms: FakeRooms
) -> None:
    member = join(fake_rooms, media_room(fake_rooms))
    async with messaging_server(database_url, redis_url, rooms[1], media_sweep_interval=3600) as plain:
        assert await refused(create(plain, member, PHOTO)) == (grpc.StatusCode.UNAVAILABLE, "media_disabled")
        # Everything else still works.
        assert (await plain.send(member, "no media here")).created


async def test_get_media_is_for_the_rooms_participants_and_the_edge(
    server: Messaging, fake_rooms: FakeRooms
) -> None:
    room = media_room(fake_rooms)
    member = join(fake_rooms, room)
    record = await upload(server, member)
    outsider = join(fake_rooms, media_room(fake_rooms))

    assert await get_media(server, room, [record.id], as_service("edge")) == [record]
    assert await refused(get_media(server, room, [record.id], outsider.metadata)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "wrong_room",
    )
    assert await refused(get_media(server, room, [record.id], as_service("payments"))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "forbidden",
    )
    assert await refused(get_media(server, room, [record.id], ())) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated",
    )
    # Another room's participant asking about their own room learns nothing of this one's media.
    assert await get_media(server, outsider.room_id, [record.id], outsider.metadata) == []
    assert await refused(get_media(server, room, ["nope"], member.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_media_id",
    )
    assert await refused(get_media(server, room, [], member.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_media_ids",
    )
    too_many = [str(uuid.uuid4()) for _ in range(101)]
    assert await refused(get_media(server, room, too_many, member.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_media_ids",
    )
    assert await get_media(server, room, too_many[:100], member.metadata) == []


# --- messages that carry media ----------------------------------------------------------------------


async def test_a_message_may_be_only_media_and_every_read_carries_its_record(
    server: Messaging, fake_rooms: FakeRooms, redis_url: str
) -> None:
    room = media_room(fake_rooms)
    member = join(fake_rooms, room, "Photographer")
    reader = join(fake_rooms, room, "Reader")
    first = await server.send(member, "before")
    events = server.subscribe(room, first.message.seq)
    try:
        record = await upload(server, member)
        sent = await send(server, member, record.id, client_msg_id="with-photo")
        assert sent.created
        message = sent.message
        assert message.text == ""
        assert message.media.id == record.id
        assert message.media.state == READY
        assert message.media.message_seq == message.seq
        assert [v.name for v in message.media.variants] == ["full", "thumb"]
        expected = messaging_pb2.Media()
        expected.CopyFrom(record)
        expected.message_seq = message.seq
        assert message.media == expected

        # Live, history (hot cache, then Postgres once the cache is gone), resume and a retry.
        assert (await events.message()).media == expected
        page = await server.history(reader)
        assert [m.media for m in page.messages] == [expected, messaging_pb2.Media()]
        await drop_hot_stream(redis_url, room)
        page = await server.history(reader)
        assert page.messages[0].media == expected
        resumed = await server.after(reader, first.message.seq)
        assert [m.media for m in resumed.messages] == [expected]
        again = await send(server, member, record.id, client_msg_id="with-photo")
        assert not again.created and again.message == message

        # With text too.
        captioned = await send(server, member, (await upload(server, member, VOICE)).id, "listen")
        assert captioned.message.text == "listen" and captioned.message.media.kind == VOICE
        # Without media, text is still required.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await server.send(member, "   ")
        assert failure(caught.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "message_empty")
    finally:
        await events.close()


async def drop_hot_stream(redis_url: str, room_id: str) -> None:
    """Drop the room's hot stream, so reads come from Postgres."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.delete(stream_key(room_id))
    finally:
        await client.aclose()


async def test_media_of_a_message_hidden_by_reports_is_withheld_from_all_but_the_host(
    server: Messaging, fake_rooms: FakeRooms
) -> None:
    room = media_room(fake_rooms)
    host = join(fake_rooms, room, "TheHost", is_host=True)
    member = join(fake_rooms, room)
    record = await upload(server, member)
    sent = await send(server, member, record.id, "soon hidden")
    for reporter in [join(fake_rooms, room, f"Reporter{n}") for n in range(3)]:
        await server.stub.ReportMessage(
            messaging_pb2.ReportMessageRequest(
                room_id=room, target_seq=sent.message.seq, reason=messaging_pb2.REPORT_REASON_SPAM
            ),
            metadata=reporter.metadata,
            timeout=10,
        )

    assert await get_media(server, room, [record.id], member.metadata) == []
    (for_host,) = await get_media(server, room, [record.id], host.metadata)
    assert for_host.id == record.id and for_host.state == messaging_pb2.MEDIA_STATE_READY
    # The edge serves URLs it signed before (until they expire) and checks the record by itself.
    (for_edge,) = await get_media(server, room, [record.id], as_service("edge"))
    assert for_edge.id == record.id


async def test_send_refuses_media_it_may_not_carry(
    server: Messaging, fake_rooms: FakeRooms, db: asyncpg.Connection
) -> None:
    room = media_room(fake_rooms)
    member = join(fake_rooms, room)
    other = join(fake_rooms, room)
    elsewhere = join(fake_rooms, media_room(fake_rooms))

    async def refusal(media_id: str, who: Member = member) -> tuple[grpc.StatusCode, str]:
        return await refused(send(server, who, media_id, "caption"))

    assert await refusal("not-a-uuid") == (grpc.StatusCode.INVALID_ARGUMENT, "media_reference_invalid")
    assert await refusal("https://example.com/cat.jpg") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "media_reference_invalid",
    )
    assert await refusal(str(uuid.uuid4())) == (grpc.StatusCode.NOT_FOUND, "media_not_found")
    theirs = await upload(server, elsewhere)
    assert await refusal(theirs.id) == (grpc.StatusCode.PERMISSION_DENIED, "media_not_in_room")
    others = await upload(server, other)
    assert await refusal(others.id) == (grpc.StatusCode.PERMISSION_DENIED, "media_not_yours")
    pending = await create(server, member)
    assert await refusal(pending.id) == (grpc.StatusCode.FAILED_PRECONDITION, "media_not_ready")
    used = await upload(server, member)
    assert (await send(server, member, used.id)).created
    assert await refusal(used.id) == (grpc.StatusCode.FAILED_PRECONDITION, "media_in_use")
    # The host turned videos off after this one was stored.
    video = await upload(server, member, VIDEO)
    fake_rooms.rooms[room].media.video = False
    assert await refusal(video.id) == (grpc.StatusCode.PERMISSION_DENIED, "media_not_allowed")
    abandoned = await upload(server, member)
    await server.stub.AbandonMedia(
        messaging_pb2.AbandonMediaRequest(room_id=room, media_id=abandoned.id), metadata=member.metadata
    )
    assert await refusal(abandoned.id) == (grpc.StatusCode.FAILED_PRECONDITION, "media_not_ready")

    # Nothing refused was stored or linked.
    count = await db.fetchval("SELECT count(*) FROM messages WHERE room_id = $1", room)
    assert count == 1
    linked = await db.fetchval(
        "SELECT count(*) FROM media WHERE room_id = $1 AND message_seq IS NOT NULL", room
    )
    assert linked == 1


# --- purging ----------------------------------------------------------------------------------------


def volume_files_hold(server: SeaweedS3, marker: bytes) -> bool:
    """Whether any of SeaweedFS's volume files still holds these bytes (deleted but not vacuumed)."""
    return any(marker in path.read_bytes() for path in server.datadir.rglob("*.dat"))


async def test_deleting_a_message_purges_its_media_from_storage(
    server: Messaging,
    fake_rooms: FakeRooms,
    objects: ObjectStore,
    db: asyncpg.Connection,
    s3_server: SeaweedS3,
) -> None:
    room = media_room(fake_rooms)
    member = join(fake_rooms, room)
    record = await upload(server, member, objects=objects)
    kept = await upload(server, member, objects=objects)
    assert sorted(await objects.keys(record.object_prefix)) == [
        record.object_prefix + "full",
        record.object_prefix + "thumb",
    ]
    sent = await send(server, member, record.id, "soon gone")
    await send(server, member, kept.id)
    before = await server.counter("chatpop_media_purged_total", reason="message_deleted")
    vacuums = await server.counter("chatpop_media_vacuums_total", result="ok")
    events = server.subscribe(room, sent.message.seq)
    try:
        deleted = await server.stub.DeleteMessage(
            messaging_pb2.DeleteMessageRequest(room_id=room, target_seq=sent.message.seq),
            metadata=member.metadata,
            timeout=10,
        )
        assert deleted.changed
        await events.message()  # the other message
        assert (await events.message()).kind == messaging_pb2.ENTRY_KIND_DELETION
    finally:
        await events.close()

    await purged(objects, db, record, "message_deleted")
    assert await objects.keys(kept.object_prefix), "only the deleted message's media goes"
    assert await server.counter("chatpop_media_purged_total", reason="message_deleted") == before + 1

    # With S3_VACUUM_URL set, SeaweedFS is asked to vacuum after the purge.
    async def vacuumed() -> bool:
        return await server.counter("chatpop_media_vacuums_total", result="ok") > vacuums

    await eventually(vacuumed, "storage was vacuumed", deadline=60.0)
    # ... so the deleted bytes are gone from its volume files, not only marked deleted (the private
    # server's own vacuum runs only every minute).
    gone = f"{record.id}/full".encode()
    await eventually(
        lambda: asyncio.to_thread(lambda: not volume_files_hold(s3_server, gone)),
        "the deleted media's bytes left the volume files",
        deadline=30.0,
    )
    assert volume_files_hold(s3_server, f"{kept.id}/full".encode()), "the kept media's bytes stay"
    page = await server.history(member)
    tombstone = next(m for m in page.messages if m.seq == sent.message.seq)
    assert tombstone.state.deleted and tombstone.text == ""
    assert tombstone.media.id == record.id and tombstone.media.state == DELETED
    assert not tombstone.media.variants
    (read,) = await get_media(server, room, [record.id], as_service("edge"))
    assert read.state == DELETED and not read.variants
    assert (await server.after(member, sent.message.seq - 1)).messages[0].media.state == DELETED


async def test_abandoning_an_upload_purges_what_was_stored(
    server: Messaging, fake_rooms: FakeRooms, objects: ObjectStore, db: asyncpg.Connection
) -> None:
    room = media_room(fake_rooms)
    member = join(fake_rooms, room)
    created = await create(server, member)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "full"
        path.write_bytes(b"half an upload")
        await objects.put_file(created.object_prefix + "full", path, "image/jpeg")

    async def abandon(who: Member) -> None:
        await server.stub.AbandonMedia(
            messaging_pb2.AbandonMediaRequest(room_id=room, media_id=created.id), metadata=who.metadata
        )

    assert await refused(abandon(join(fake_rooms, room))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "media_not_yours",
    )
    await abandon(member)
    await abandon(member)  # idempotent
    await purged(objects, db, created, "abandoned")
    assert await refused(complete(server, member, created)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "media_deleted",
    )
    # Media on a message goes with the message, not on its own.
    record = await upload(server, member)
    await send(server, member, record.id)
    assert await refused(
        server.stub.AbandonMedia(
            messaging_pb2.AbandonMediaRequest(room_id=room, media_id=record.id), metadata=member.metadata
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "media_in_use")


async def test_closing_a_room_purges_its_media_at_once(
    server: Messaging, fake_rooms: FakeRooms, objects: ObjectStore, db: asyncpg.Connection
) -> None:
    room = media_room(fake_rooms)
    host = join(fake_rooms, room, "Host", is_host=True)
    member = join(fake_rooms, room)
    carried = await upload(server, member, objects=objects)
    sent = await send(server, member, carried.id)
    loose = await upload(server, host, VOICE, objects=objects)
    pending = await create(server, member)

    fake_rooms.rooms[room].closed = True
    await server.stub.AnnounceRoomUpdate(
        messaging_pb2.AnnounceRoomUpdateRequest(room_id=room), metadata=host.metadata, timeout=10
    )
    for record in (carried, loose, pending):
        await purged(objects, db, record, "room_closed")
    page = await server.history(member)
    message = next(m for m in page.messages if m.seq == sent.message.seq)
    assert not message.state.deleted
    assert message.media.state == DELETED and not message.media.variants


@pytest_asyncio.fixture
async def sweeping(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str], s3_server: SeaweedS3
) -> AsyncIterator[Messaging]:
    """A replica that sweeps several times a second (with TTLs of a minute and an hour; the tests
    age their media in Postgres)."""
    async with messaging_server(
        database_url,
        redis_url,
        rooms[1],
        media_sweep_interval=0.2,
        media_pending_ttl=60,
        media_unreferenced_ttl=3600,
        **s3_values(s3_server),
        **GENEROUS_RATE_LIMIT,
    ) as running:
        yield running


async def test_the_sweeper_purges_what_nothing_may_show(
    server: Messaging,
    sweeping: Messaging,
    fake_rooms: FakeRooms,
    objects: ObjectStore,
    db: asyncpg.Connection,
) -> None:
    room = media_room(fake_rooms)
    member = join(fake_rooms, room)
    stale_pending = await create(server, member)
    fresh_pending = await create(server, member)
    await backdate(db, stale_pending, 61)
    await backdate(db, fresh_pending, 50)
    unreferenced = await upload(server, member, objects=objects)
    await backdate(db, unreferenced, 3601)
    referenced = await upload(server, member, objects=objects)
    # Sent before it is made old: the sweeper runs all along and would take it as never referenced.
    await send(server, member, referenced.id)
    await backdate(db, referenced, 3601)
    fresh = await upload(server, member, objects=objects)

    # A room with 2 days' retention: older media goes, younger stays.
    kept_room = media_room(fake_rooms)
    fake_rooms.rooms[kept_room].retention_days = 2
    keeper = join(fake_rooms, kept_room)
    old = await upload(server, keeper, objects=objects)
    await send(server, keeper, old.id)
    await backdate(db, old, 3 * 86400)
    young = await upload(server, keeper, objects=objects)
    await send(server, keeper, young.id)
    await backdate(db, young, 86400 + 60)

    # A closed room's media goes, referenced or not.
    closed_room = media_room(fake_rooms)
    closer = join(fake_rooms, closed_room)
    in_closed = await upload(server, closer, objects=objects)
    fake_rooms.rooms[closed_room].closed = True

    await purged(objects, db, stale_pending, "pending_expired")
    await purged(objects, db, unreferenced, "unreferenced")
    await purged(objects, db, old, "retention")
    await purged(objects, db, in_closed, "room_closed")

    for record in (fresh_pending, referenced, fresh, young):
        (now,) = await get_media(server, record.room_id, [record.id], as_service("edge"))
        assert now.state in (PENDING, READY), f"{record.id} should have been kept"
    for record in (referenced, fresh, young):
        assert await objects.keys(record.object_prefix)


async def test_a_purge_waits_for_storage_and_completes_when_it_is_back(
    server: Messaging,
    fake_rooms: FakeRooms,
    s3_server: SeaweedS3,
    objects: ObjectStore,
    db: asyncpg.Connection,
) -> None:
    room = media_room(fake_rooms)
    member = join(fake_rooms, room)
    record = await upload(server, member, objects=objects)
    sent = await send(server, member, record.id)

    # Storage goes away (every replica shares it: another could not purge meanwhile either).
    s3_server.stop(kill=True)
    try:
        await server.stub.DeleteMessage(
            messaging_pb2.DeleteMessageRequest(room_id=room, target_seq=sent.message.seq),
            metadata=member.metadata,
            timeout=10,
        )

        async def attempted() -> bool:
            attempts = await db.fetchval(
                "SELECT attempts FROM outbox WHERE topic = 'media.purge' AND key = $1", record.id
            )
            return bool(attempts)

        await eventually(attempted, "the purge failed at least once")
        state = await db.fetchval("SELECT state FROM media WHERE id = $1", uuid.UUID(record.id))
        assert state == "deleting"
        # Never served meanwhile.
        (read,) = await get_media(server, room, [record.id], as_service("edge"))
        assert read.state == DELETED and not read.variants
    finally:
        s3_server.start(s3_server.datadir.parent / "s3.log")
    await purged(objects, db, record, "message_deleted", deadline=90.0)

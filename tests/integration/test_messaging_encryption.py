"""Message content is encrypted at rest, in Postgres and in Redis, and keys rotate without losing it.

The module runs messaging on a database of its own (migrated to 0009, given rows written before
encryption existed, then upgraded), so rotating its master key touches no other test's data.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from test_messaging_paid_pins import apply_pin, apply_tip, as_service
from test_messaging_service import (
    GENEROUS_RATE_LIMIT,
    FakeRooms,
    Member,
    Messaging,
    fake_rooms,
    join,
    messaging_server,
    new_room,
    rooms,
)

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.migrate import script_location
from chatpop_common.migrations import upgrade
from chatpop_common.pricing import BASE_RATE_CENTS
from chatpop_messaging.hotcache import live_channel, stream_key
from chatpop_messaging.signals import signal_channel

__all__ = ["fake_rooms", "rooms"]

DEADLINE = 20.0


def _master(current: int, **versions: bytes) -> str:
    keys = {name.lstrip("v"): base64.b64encode(key).decode() for name, key in versions.items()}
    return json.dumps({"current": current, "keys": keys})


KEY_1 = os.urandom(32)
KEY_2 = os.urandom(32)
MASTER_1 = _master(1, v1=KEY_1)
# What the module's database runs with: version 2 current, 1 still there.
BOTH = _master(2, v1=KEY_1, v2=KEY_2)

LEGACY_ROOM = new_room()
LEGACY_MARKER = f"legacy-{uuid.uuid4().hex}"


async def _legacy_rows(url: str) -> None:
    """Rows as messaging wrote them before 0010: plaintext text, sticky text, report, tip and pin."""
    connection = await asyncpg.connect(url, server_settings={"search_path": "messaging"})
    try:
        tip = messaging_pb2.Message(
            tip=messaging_pb2.Tip(order_id="o1", amount_cents=100, note=LEGACY_MARKER)
        )
        pinned = messaging_pb2.Message(id=str(uuid.uuid4()), room_id=LEGACY_ROOM, seq=1, text=LEGACY_MARKER)
        rows: list[tuple[int, int, str, bytes | None, bytes | None]] = [
            (1, messaging_pb2.ENTRY_KIND_MESSAGE, LEGACY_MARKER, None, None),
            (2, messaging_pb2.ENTRY_KIND_TIP, "", tip.SerializeToString(), None),
            (3, messaging_pb2.ENTRY_KIND_PIN, "", None, pinned.SerializeToString()),
        ]
        for seq, kind, text, payload, pinned_message in rows:
            await connection.execute(
                "INSERT INTO messages (id, room_id, seq, sender_participant_id, sender_username,"
                " client_msg_id, text, kind, target_seq, payload, pinned_message, pinned_seqs)"
                " VALUES ($1, $2, $3, 'p-old', 'Oldtimer', $4, $5, $6, $7, $8, $9, $10)",
                uuid.uuid4(),
                LEGACY_ROOM,
                seq,
                f"c{seq}",
                text,
                kind,
                {messaging_pb2.ENTRY_KIND_PIN: 1, messaging_pb2.ENTRY_KIND_TIP: 0}.get(kind),
                payload,
                pinned_message,
                [1] if kind == messaging_pb2.ENTRY_KIND_PIN else None,
            )
        await connection.execute("INSERT INTO room_counters (room_id, last_seq) VALUES ($1, 3)", LEGACY_ROOM)
        await connection.execute(
            "INSERT INTO room_boards (room_id, sticky_text, sticky_seq) VALUES ($1, $2, 0)",
            LEGACY_ROOM,
            LEGACY_MARKER,
        )
        await connection.execute(
            "INSERT INTO reports (room_id, message_seq, reporter_participant_id, reporter_username,"
            " reason, text) VALUES ($1, 1, 'p-rep', 'Reporter', 1, $2)",
            LEGACY_ROOM,
            LEGACY_MARKER,
        )
    finally:
        await connection.close()


async def _new_database(database_url: str, revision: str = "head") -> str:
    """A database of its own on the test Postgres, messaging's schema migrated to `revision`."""
    name = f"enc_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    await asyncio.to_thread(upgrade, script_location("chatpop_messaging"), url, "messaging", revision)
    return url


@pytest_asyncio.fixture(scope="module")
async def private_db(database_url: str) -> str:
    """The module's database, with legacy plaintext rows upgraded by migration 0010."""
    url = await _new_database(database_url, "0009")
    await _legacy_rows(url)
    await asyncio.to_thread(upgrade, script_location("chatpop_messaging"), url, "messaging")
    return url


@pytest_asyncio.fixture
async def db(private_db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(private_db, server_settings={"search_path": "messaging"})
    try:
        yield connection
    finally:
        await connection.close()


@pytest_asyncio.fixture
async def cache(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _server(private_db: str, redis_url: str, rooms_addr: str, master: str = BOTH, **more: Any) -> Any:
    # No background re-encryption: the tests say when content is re-encrypted.
    return messaging_server(
        private_db,
        redis_url,
        rooms_addr,
        master_keys=master,
        reencrypt_interval=0,
        **GENEROUS_RATE_LIMIT,
        **more,
    )


class Listener:
    """Every payload published on rooms' live and signal channels, raw."""

    def __init__(self, client: aioredis.Redis, room_ids: Sequence[str]) -> None:
        self._pubsub = client.pubsub()
        self._channels = [c for room in room_ids for c in (live_channel(room), signal_channel(room))]
        self.payloads: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        await self._pubsub.subscribe(*self._channels)
        self._task = asyncio.create_task(self._pump())
        return self

    async def _pump(self) -> None:
        while True:
            event = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if event is not None and event.get("type") == "message":
                self.payloads.append(bytes(event["data"]))

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._pubsub.aclose()


async def _redis_values(client: aioredis.Redis) -> list[bytes]:
    """Every value Redis holds, whatever its type."""
    values: list[bytes] = []
    async for key in client.scan_iter(count=1000):
        kind = (await client.type(key)).decode()
        values.append(bytes(key))
        if kind == "string":
            values.append(await client.get(key) or b"")
        elif kind == "hash":
            for field, value in (await client.hgetall(key)).items():
                values += [field, value]
        elif kind == "stream":
            for _entry_id, fields in await client.xrange(key):
                for field, value in fields.items():
                    values += [field, value]
        elif kind == "list":
            values += await client.lrange(key, 0, -1)
        elif kind == "set":
            values += list(await client.smembers(key))
        elif kind == "zset":
            values += [member for member, _ in await client.zrange(key, 0, -1, withscores=True)]
    return values


async def _postgres_values(db: asyncpg.Connection) -> list[Any]:
    """Every value of every row of every table of messaging's schema."""
    values: list[Any] = []
    tables = await db.fetch(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'messaging' AND table_type = 'BASE TABLE'"
    )
    for table in tables:
        for row in await db.fetch(f'SELECT * FROM messaging."{table["table_name"]}"'):
            values += list(row.values())
    return values


def _holds(values: Sequence[Any], marker: str) -> list[Any]:
    found = []
    for value in values:
        if isinstance(value, (bytes, bytearray, memoryview)):
            if marker.encode() in bytes(value):
                found.append(value)
        elif marker in str(value):
            found.append(value)
    return found


async def _until(check: Any, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while True:
        result = await check()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _texts(page: messaging_pb2.ListMessagesResponse) -> list[str]:
    """The page's messages' texts, oldest first."""
    return [
        m.text
        for m in sorted(page.messages, key=lambda m: m.seq)
        if m.kind == messaging_pb2.ENTRY_KIND_MESSAGE
    ]


async def _history(server: Messaging, member: Member) -> messaging_pb2.ListMessagesResponse:
    return await server.history(member, limit=100)


async def test_no_plaintext_reaches_postgres_or_redis(
    private_db: str,
    redis_url: str,
    rooms: tuple[FakeRooms, str],
    db: asyncpg.Connection,
    cache: aioredis.Redis,
) -> None:
    fake, rooms_addr = rooms
    room_id = new_room()
    host = join(fake, room_id, "Hostess", is_host=True)
    guest = join(fake, room_id, "Guest")
    marker = f"marker-{uuid.uuid4().hex}"
    async with _server(private_db, redis_url, rooms_addr) as server, Listener(cache, [room_id]) as listener:
        events = server.subscribe(room_id, after_seq=0)
        sent = (await server.send(host, f"{marker} message")).message
        await server.send(guest, "a plain other message")
        await server.stub.SetSticky(
            messaging_pb2.SetStickyRequest(room_id=room_id, text=f"{marker} sticky"), metadata=host.metadata
        )
        await server.stub.ReportMessage(
            messaging_pb2.ReportMessageRequest(
                room_id=room_id,
                target_seq=sent.seq,
                reason=messaging_pb2.REPORT_REASON_OTHER,
                text=f"{marker} report",
            ),
            metadata=guest.metadata,
        )
        tip = await apply_tip(server, guest, 500, f"{marker} tip")
        assert tip.created
        pin = await server.stub.SetPin(
            messaging_pb2.SetPinRequest(room_id=room_id, target_seq=sent.seq, pinned=True),
            metadata=host.metadata,
        )
        assert pin.changed and pin.entry.pinned_message.text == f"{marker} message"
        paid = await apply_pin(server, guest, BASE_RATE_CENTS, target_seq=sent.seq, metadata=as_service())
        assert paid.entry.paid_pin.message.text == f"{marker} message"
        deleted = (await server.send(guest, f"{marker} soon deleted")).message
        await server.stub.DeleteMessage(
            messaging_pb2.DeleteMessageRequest(room_id=room_id, target_seq=deleted.seq),
            metadata=guest.metadata,
        )

        # What the API gives back is plaintext: the stream (what the edge gets), history, the reports.
        streamed = [await events.message() for _ in range(8)]
        assert f"{marker} message" in [m.text for m in streamed]
        assert f"{marker} tip" in [m.tip.note for m in streamed]
        page = await _history(server, host)
        assert page.board.sticky_text == f"{marker} sticky"
        assert [m.text for m in page.messages if m.seq == sent.seq] == [f"{marker} message"]
        reports = await server.stub.ListReports(
            messaging_pb2.ListReportsRequest(room_id=room_id), metadata=host.metadata
        )
        assert [r.text for item in reports.items for r in item.reports] == [f"{marker} report"]

        # A lost stream is rebuilt from Postgres (the merge writes it sealed too).
        await cache.delete(stream_key(room_id))
        await _history(server, guest)
        await _until(lambda: cache.exists(stream_key(room_id)), "the stream to be rebuilt")
        await _until(lambda: asyncio.sleep(0, len(listener.payloads) >= 8), "the live payloads")

        assert _holds(await _postgres_values(db), marker) == []
        assert _holds(await _redis_values(cache), marker) == []
        assert _holds(listener.payloads, marker) == []
        # Rows and cache hold sealed values (format byte 1 in Postgres, the envelope, 2, in Redis).
        row = await db.fetchrow(
            "SELECT text FROM messages WHERE room_id = $1 AND seq = $2", room_id, sent.seq
        )
        assert bytes(row["text"])[0] == 1
        entries = await cache.xrange(stream_key(room_id))
        assert entries and all(fields[b"m"][0] == 2 for _id, fields in entries)


async def test_a_ciphertext_moved_to_another_row_does_not_read(
    private_db: str,
    redis_url: str,
    rooms: tuple[FakeRooms, str],
    db: asyncpg.Connection,
    cache: aioredis.Redis,
) -> None:
    fake, rooms_addr = rooms
    room_id, other_room = new_room(), new_room()
    member = join(fake, room_id, "Mover")
    other = join(fake, other_room, "Elsewhere")
    async with _server(private_db, redis_url, rooms_addr) as server:
        first = (await server.send(member, "first secret")).message
        second = (await server.send(member, "second secret")).message
        third = (await server.send(member, "third, untouched")).message
        foreign = (await server.send(other, "from another room")).message
        before = await server.counter("chatpop_content_unreadable_total")
        # Swap the first two messages' texts; put the other room's in place of the third's.
        await db.execute(
            "UPDATE messages m SET text = o.text FROM messages o "
            "WHERE (m.id, o.id) IN (($1::uuid, $2::uuid), ($2::uuid, $1::uuid))",
            uuid.UUID(first.id),
            uuid.UUID(second.id),
        )
        await db.execute(
            "UPDATE messages SET text = (SELECT text FROM messages WHERE id = $2) WHERE id = $1",
            uuid.UUID(third.id),
            uuid.UUID(foreign.id),
        )
        # Read from Postgres, not from the hot cache that still holds what was sent.
        await cache.delete(stream_key(room_id))
        page = await server.history(member, limit=10)
        read = {m.seq: m for m in page.messages}
        for message in (first, second, third):
            assert read[message.seq].text == ""
            assert read[message.seq].state.deleted
        texts = [m.text for m in page.messages]
        assert not {"first secret", "second secret", "from another room"} & set(texts)
        assert await server.counter("chatpop_content_unreadable_total") >= before + 3
        # The other room is untouched.
        assert [m.text for m in (await server.history(other, limit=10)).messages] == ["from another room"]


async def _versions(server: Messaging, room_id: str = "") -> messaging_pb2.GetKeyVersionsResponse:
    response: messaging_pb2.GetKeyVersionsResponse = await server.stub.GetKeyVersions(
        messaging_pb2.GetKeyVersionsRequest(room_id=room_id), metadata=as_service("cli"), timeout=10
    )
    return response


async def test_key_rpcs_need_the_cli_credential(
    private_db: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake, rooms_addr = rooms
    member = join(fake, new_room(), "Nosy")
    async with _server(private_db, redis_url, rooms_addr) as server:
        for metadata in (member.metadata, as_service()):
            with pytest.raises(Exception) as failed:
                await server.stub.RotateMasterKey(messaging_pb2.RotateMasterKeyRequest(), metadata=metadata)
            assert "PERMISSION_DENIED" in str(failed.value) or "UNAUTHENTICATED" in str(failed.value)


async def test_master_key_rotation_keeps_every_message_readable(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str], cache: aioredis.Redis
) -> None:
    fake, rooms_addr = rooms
    room_id = new_room()
    member = join(fake, room_id, "Rotator")
    private_db = await _new_database(database_url)
    async with _server(private_db, redis_url, rooms_addr, MASTER_1) as server:
        for n in range(3):
            await server.send(member, f"before rotation {n}")
    # Version 2 rolled out next to version 1: old data keys still unwrap with 1, new ones use 2.
    async with _server(private_db, redis_url, rooms_addr, BOTH) as server:
        await server.send(member, "after the new version")
        versions = await _versions(server)
        assert versions.current_master_version == 2
        assert list(versions.available_master_versions) == [1, 2]
        assert [use.version for use in versions.master_versions] == [1]
        rotated = await server.stub.RotateMasterKey(
            messaging_pb2.RotateMasterKeyRequest(), metadata=as_service("cli")
        )
        assert (rotated.master_version, rotated.rewrapped) == (2, 1)
        assert [(use.version) for use in (await _versions(server)).master_versions] == [2]
    # Version 1 removed from the secret: everything still opens, from Postgres and from the cache.
    async with _server(private_db, redis_url, rooms_addr, _master(2, v2=KEY_2)) as server:
        expected = [f"before rotation {n}" for n in range(3)] + ["after the new version"]
        assert _texts(await server.history(member)) == expected
        await cache.delete(stream_key(room_id))
        assert _texts(await server.history(member)) == expected


async def test_messaging_refuses_to_start_without_a_master_key_in_use(
    private_db: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake, rooms_addr = rooms
    member = join(fake, new_room(), "Writer")
    async with _server(private_db, redis_url, rooms_addr) as server:
        await server.send(member, "wrapped by whatever is current")
    # A key this database's data keys are wrapped with is missing: start-up fails.
    with pytest.raises(Exception, match="master key versions"):
        async with _server(private_db, redis_url, rooms_addr, _master(9, v9=os.urandom(32))):
            pass


async def test_room_key_rotation_and_reencryption(
    private_db: str, redis_url: str, rooms: tuple[FakeRooms, str], db: asyncpg.Connection
) -> None:
    fake, rooms_addr = rooms
    room_id = new_room()
    host = join(fake, room_id, "Keeper", is_host=True)
    async with _server(private_db, redis_url, rooms_addr) as server:
        await server.send(host, "on version one")
        await server.stub.SetSticky(
            messaging_pb2.SetStickyRequest(room_id=room_id, text="sticky on one"), metadata=host.metadata
        )
        assert (await _versions(server, room_id)).current_data_key_version == 1
        rotated = await server.stub.RotateRoomKeys(
            messaging_pb2.RotateRoomKeysRequest(room_ids=[room_id]), metadata=as_service("cli")
        )
        assert rotated.rotated == 1
        await server.send(host, "on version two")
        versions = await _versions(server, room_id)
        assert versions.current_data_key_version == 2
        # The message, the STICKY entry and the board's sticky text on 1; the new message on 2.
        assert {use.version: use.count for use in versions.data_key_versions} == {1: 3, 2: 1}
        assert _texts(await server.history(host)) == ["on version one", "on version two"]

        done = await server.stub.ReencryptRooms(
            messaging_pb2.ReencryptRoomsRequest(room_ids=[room_id]), metadata=as_service("cli")
        )
        assert done.reencrypted == 3 and not done.more
        versions = await _versions(server, room_id)
        assert {use.version: use.count for use in versions.data_key_versions} == {2: 4}
        page = await server.history(host)
        assert _texts(page) == ["on version one", "on version two"]
        assert page.board.sticky_text == "sticky on one"
        heads = await db.fetch(
            "SELECT substring(text from 1 for 5) AS head FROM messages"
            " WHERE room_id = $1 AND length(text) > 0",
            room_id,
        )
        assert {bytes(row["head"]) for row in heads} == {b"\x01\x00\x00\x00\x02"}


async def test_plaintext_from_before_encryption_is_read_then_reencrypted(
    private_db: str, redis_url: str, rooms: tuple[FakeRooms, str], db: asyncpg.Connection
) -> None:
    fake, rooms_addr = rooms
    host = join(fake, LEGACY_ROOM, "Newhost", is_host=True)
    # Migration 0010 marked the old rows plaintext (0x00) and queued the room.
    row = await db.fetchrow("SELECT text FROM messages WHERE room_id = $1 AND seq = 1", LEGACY_ROOM)
    assert bytes(row["text"]) == b"\x00" + LEGACY_MARKER.encode()
    assert await db.fetchval("SELECT count(*) FROM reencrypt_rooms WHERE room_id = $1", LEGACY_ROOM) == 1
    async with _server(private_db, redis_url, rooms_addr) as server:
        page = await server.history(host)
        assert _texts(page) == [LEGACY_MARKER]
        assert page.board.sticky_text == LEGACY_MARKER
        after = await server.after(host, 0)
        tip = [m for m in after.messages if m.kind == messaging_pb2.ENTRY_KIND_TIP]
        pinned = [m for m in after.messages if m.kind == messaging_pb2.ENTRY_KIND_PIN]
        assert tip[0].tip.note == LEGACY_MARKER and pinned[0].pinned_message.text == LEGACY_MARKER
        reports = await server.stub.ListReports(
            messaging_pb2.ListReportsRequest(room_id=LEGACY_ROOM), metadata=host.metadata
        )
        assert [r.text for item in reports.items for r in item.reports] == [LEGACY_MARKER]
        assert {use.version for use in (await _versions(server, LEGACY_ROOM)).data_key_versions} == {0}

        done = await server.stub.ReencryptRooms(
            messaging_pb2.ReencryptRoomsRequest(), metadata=as_service("cli")
        )
        assert done.reencrypted >= 5
        assert {
            use.version: use.count for use in (await _versions(server, LEGACY_ROOM)).data_key_versions
        } == {1: 5}
        assert _holds(await _postgres_values(db), LEGACY_MARKER) == []
        page = await server.history(host)
        assert _texts(page) == [LEGACY_MARKER]
        assert page.board.sticky_text == LEGACY_MARKER

"""messaging over gRPC: real servers in-process on free ports, the session's Postgres and Redis, and a
small fake RoomsService (an internal dependency) that answers GetParticipant. Room tokens are signed
here with a local Ed25519 key handed to the servers as their key source. Every test uses its own room.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import jwt
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from prometheus_client.parser import text_string_to_metric_families

from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.clients import insecure_channel
from chatpop_common.devstack import Redis, free_port
from chatpop_common.errors import error_details
from chatpop_common.server import serve
from chatpop_messaging.app import build
from chatpop_messaging.settings import MessagingSettings
from tests.integration.encryption_keys import MASTER_KEYS
from tests.integration.identity_server import SERVICE_TOKEN_SECRET
from tests.integration.inprocess import wait_serving

SIGNING_KEY = Ed25519PrivateKey.generate()
KID = "messaging-test-key"
EVENT_TIMEOUT = 20.0


async def _public_keys() -> dict[str, Ed25519PublicKey]:
    return {KID: SIGNING_KEY.public_key()}


# --- a fake rooms service -------------------------------------------------------------------------


# A room id the fake rooms service does not know.
MISSING_ROOM = "no-such-room"


class FakeRooms(rooms_pb2_grpc.RoomsServiceServicer):
    def __init__(self) -> None:
        self.participants: dict[tuple[str, str], rooms_pb2.Participant] = {}
        # Rooms a test set up; any other room id reads as an open room with default settings, and
        # MISSING_ROOM as not found.
        self.rooms: dict[str, rooms_pb2.Room] = {}

    def open(self, host_id: str, name: str = "Test room") -> rooms_pb2.Room:
        room = rooms_pb2.Room(
            id=str(uuid.uuid4()),
            code=uuid.uuid4().hex[:8].upper(),
            name=name,
            host_id=host_id,
            theme=rooms_pb2.THEME_PURPLE_DREAM,
        )
        self.rooms[room.id] = room
        return room

    async def GetRoom(
        self, request: rooms_pb2.GetRoomRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.GetRoomResponse:
        if request.room_id == MISSING_ROOM:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such room")
        room = self.rooms.get(request.room_id) or rooms_pb2.Room(id=request.room_id, name="Any room")
        return rooms_pb2.GetRoomResponse(room=room)

    async def GetParticipant(
        self, request: rooms_pb2.GetParticipantRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.GetParticipantResponse:
        participant = self.participants.get((request.room_id, request.participant_id))
        if participant is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such participant")
        return rooms_pb2.GetParticipantResponse(participant=participant)


@dataclass
class Member:
    room_id: str
    participant: rooms_pb2.Participant
    token: str

    @property
    def metadata(self) -> Sequence[tuple[str, str]]:
        return (("authorization", f"Bearer {self.token}"),)


def room_token(room_id: str, participant: rooms_pb2.Participant, *, version: int | None = None) -> str:
    now = int(time.time())
    claims = {
        "typ": "room",
        "iss": "chatpop",
        "aud": f"chatpop:room:{room_id}",
        "sub": participant.subject,
        "rid": room_id,
        "pid": participant.id,
        "ver": participant.version if version is None else version,
        "host": participant.is_host,
        "iat": now,
        "nbf": now,
        "exp": now + 900,
    }
    return jwt.encode(claims, SIGNING_KEY, algorithm="EdDSA", headers={"kid": KID})


def join(
    rooms: FakeRooms,
    room_id: str,
    username: str = "Someone",
    *,
    is_host: bool = False,
    verified: bool = False,
    banned: bool = False,
    version: int = 1,
    token_version: int | None = None,
) -> Member:
    participant = rooms_pb2.Participant(
        id=str(uuid.uuid4()),
        room_id=room_id,
        subject=str(uuid.uuid4()),
        username=username,
        is_host=is_host,
        version=version,
        banned=banned,
        verified=verified,
    )
    rooms.participants[(room_id, participant.id)] = participant
    return Member(room_id, participant, room_token(room_id, participant, version=token_version))


def new_room() -> str:
    return str(uuid.uuid4())


# --- servers ----------------------------------------------------------------------------------------


@dataclass
class Messaging:
    stub: messaging_pb2_grpc.MessagingServiceStub
    metrics_url: str
    address: str
    # Set: the server begins to shut down (as on SIGTERM).
    stop: asyncio.Event | None = None

    async def send(
        self, member: Member, text: str, client_msg_id: str | None = None, reply_to_seq: int = 0
    ) -> messaging_pb2.SendMessageResponse:
        request = messaging_pb2.SendMessageRequest(
            room_id=member.room_id,
            client_msg_id=client_msg_id or uuid.uuid4().hex,
            text=text,
            reply_to_seq=reply_to_seq,
        )
        return await self.stub.SendMessage(request, metadata=member.metadata, timeout=10)

    async def history(
        self, member: Member, before_seq: int = 0, limit: int = 0
    ) -> messaging_pb2.ListMessagesResponse:
        request = messaging_pb2.ListMessagesRequest(
            room_id=member.room_id, before_seq=before_seq, limit=limit
        )
        return await self.stub.ListMessages(request, metadata=member.metadata, timeout=10)

    async def after(
        self, member: Member, after_seq: int, limit: int = 0
    ) -> messaging_pb2.ListMessagesAfterResponse:
        request = messaging_pb2.ListMessagesAfterRequest(
            room_id=member.room_id, after_seq=after_seq, limit=limit
        )
        return await self.stub.ListMessagesAfter(request, metadata=member.metadata, timeout=10)

    def subscribe(self, room_id: str, after_seq: int) -> Events:
        return Events(
            self.stub.Subscribe(messaging_pb2.SubscribeRequest(room_id=room_id, after_seq=after_seq))
        )

    async def counter(self, name: str, **labels: str) -> float:
        async with httpx.AsyncClient() as client:
            text = (await client.get(self.metrics_url, timeout=10)).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0


@asynccontextmanager
async def messaging_server(
    database_url: str, redis_url: str, rooms_addr: str, **overrides: Any
) -> AsyncIterator[Messaging]:
    values: dict[str, Any] = {
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "database_url": database_url,
        "redis_url": redis_url,
        "rooms_addr": rooms_addr,
        "shutdown_grace": 1.0,
        "hub_poll_interval": 0.5,
        "log_format": "text",
        "service_token_secret": SERVICE_TOKEN_SECRET,
        "master_keys": MASTER_KEYS,
    }
    values.update(overrides)
    settings = MessagingSettings(**values)
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(
            "messaging",
            settings,
            lambda: build(settings, key_fetcher=_public_keys),
            drain_delay=0,
            stop_event=stop,
        )
    )
    address = f"127.0.0.1:{settings.grpc_port}"
    try:
        await wait_serving(address, task)
        async with grpc.aio.insecure_channel(address) as channel:
            yield Messaging(
                messaging_pb2_grpc.MessagingServiceStub(channel),
                f"http://127.0.0.1:{settings.metrics_port}/metrics",
                address,
                stop,
            )
    finally:
        stop.set()
        await task


@pytest_asyncio.fixture(scope="module")
async def rooms() -> AsyncIterator[tuple[FakeRooms, str]]:
    fake = FakeRooms()
    server = grpc.aio.server()
    rooms_pb2_grpc.add_RoomsServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.fixture
def fake_rooms(rooms: tuple[FakeRooms, str]) -> FakeRooms:
    return rooms[0]


# A small hot cache and resume window so the suite can cross them with a few dozen messages.
HOT_CACHE_SIZE = 20
RESUME_MAX = 30
# Limited (so the limiter runs, and must fail open while Redis is down) but never reached here.
GENEROUS_RATE_LIMIT: dict[str, Any] = {"send_rate_limit": 60_000, "send_rate_burst": 200}


@pytest_asyncio.fixture(scope="module")
async def server_a(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> AsyncIterator[Messaging]:
    async with messaging_server(
        database_url,
        redis_url,
        rooms[1],
        hot_cache_size=HOT_CACHE_SIZE,
        resume_max=RESUME_MAX,
        **GENEROUS_RATE_LIMIT,
    ) as server:
        yield server


@pytest_asyncio.fixture(scope="module")
async def server_b(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> AsyncIterator[Messaging]:
    """A second messaging process on the same databases."""
    async with messaging_server(
        database_url,
        redis_url,
        rooms[1],
        hot_cache_size=HOT_CACHE_SIZE,
        resume_max=RESUME_MAX,
        **GENEROUS_RATE_LIMIT,
    ) as server:
        yield server


def failure(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, int | None]:
    code, retry_after = error_details(exc)
    return exc.code(), code, retry_after


_END = object()


class Events:
    """A Subscribe stream read by a background task, so waiting for an event never cancels the call."""

    def __init__(self, call: Any) -> None:
        self.call = call
        # The seqs of each `batch` event received (their messages are queued one by one).
        self.batches: list[list[int]] = []
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for event in self.call:
                if event.WhichOneof("event") == "batch":
                    # A batch is its messages in order: read one at a time, its size kept.
                    self.batches.append([m.seq for m in event.batch.messages])
                    for message in event.batch.messages:
                        self._queue.put_nowait(messaging_pb2.SubscribeResponse(message=message))
                    continue
                self._queue.put_nowait(event)
            self._queue.put_nowait(_END)
        except grpc.aio.AioRpcError as exc:
            self._queue.put_nowait(exc)

    async def next(self, timeout: float = EVENT_TIMEOUT) -> Any:
        """The next event, `_END` when the stream ended, or the error it ended with."""
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def message(self) -> messaging_pb2.Message:
        event = await self.next()
        assert isinstance(event, messaging_pb2.SubscribeResponse), f"expected a message, got {event!r}"
        assert event.WhichOneof("event") == "message", f"expected a message, got {event}"
        return event.message

    async def until(self, last_seq: int) -> list[int]:
        """Seqs received until `last_seq` arrives."""
        seqs: list[int] = []
        while not seqs or seqs[-1] < last_seq:
            seqs.append((await self.message()).seq)
        return seqs

    async def close(self) -> None:
        self.call.cancel()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


# --- sending ----------------------------------------------------------------------------------------


async def test_send_acknowledges_consecutive_seqs_with_sender_details(
    server_a: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    host = join(fake_rooms, room, "HostUser", is_host=True, verified=True)
    guest = join(fake_rooms, room, "GuestUser")

    first = await server_a.send(host, "  hello  ", "c-1")
    second = await server_a.send(guest, "hi there")
    third = await server_a.send(host, "line one\n\tline two", reply_to_seq=2)

    assert [r.message.seq for r in (first, second, third)] == [1, 2, 3]
    assert all(r.created for r in (first, second, third))
    assert first.message.text == "hello"
    assert first.message.client_msg_id == "c-1"
    assert first.message.room_id == room
    assert (first.message.sender_username, first.message.sender_is_host, first.message.sender_verified) == (
        "HostUser",
        True,
        True,
    )
    assert first.message.sender_participant_id == host.participant.id
    assert (second.message.sender_username, second.message.sender_is_host) == ("GuestUser", False)
    assert third.message.reply_to_seq == 2
    assert third.message.text == "line one\n\tline two"
    assert uuid.UUID(first.message.id) != uuid.UUID(second.message.id)
    assert first.message.created_at.seconds > 0

    page = await server_a.history(host)
    assert [m.seq for m in page.messages] == [3, 2, 1]
    assert page.last_seq == 3
    assert page.messages[2] == first.message


async def test_retry_returns_the_original_message(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    room = new_room()
    member = join(fake_rooms, room)
    original = await server_a.send(member, "only once", "retry-1")
    again = await server_a.send(member, "only once", "retry-1")
    different = await server_a.send(member, "something else", "retry-1")
    invalid = await server_a.send(member, "   ", "retry-1")

    assert original.created
    assert not again.created and not different.created and not invalid.created
    assert again.message == original.message == different.message == invalid.message
    page = await server_a.history(member)
    assert [m.text for m in page.messages] == ["only once"]
    assert page.last_seq == 1

    # Another sender may use the same client_msg_id: it is only unique per sender.
    other = join(fake_rooms, room)
    theirs = await server_a.send(other, "mine", "retry-1")
    assert theirs.created and theirs.message.seq == 2


async def test_concurrent_retries_create_one_message(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    member = join(fake_rooms, new_room())
    results = await asyncio.gather(*(server_a.send(member, "racing", "same-id") for _ in range(10)))
    assert sum(r.created for r in results) == 1
    assert {r.message.id for r in results} == {results[0].message.id}
    page = await server_a.history(member)
    assert page.last_seq == 1 and len(page.messages) == 1


async def test_concurrent_sends_get_gap_free_seqs(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    members = [join(fake_rooms, room, f"User{i:03d}") for i in range(5)]
    sends = [
        (server_a if i % 2 else server_b).send(members[i % 5], f"message {i}", f"m-{i}") for i in range(50)
    ]
    results = await asyncio.gather(*sends)

    assert sorted(r.message.seq for r in results) == list(range(1, 51))
    assert all(r.created for r in results)
    by_seq = {r.message.seq: r.message for r in results}
    stored = await server_a.history(members[0], limit=100)
    assert [m.seq for m in stored.messages] == list(range(50, 0, -1))
    assert all(m == by_seq[m.seq] for m in stored.messages)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "message_empty"),
        (" \n\t ", "message_empty"),
        ("x" * 4001, "message_too_long"),
        ("bell\x07", "message_invalid_characters"),
        ("nul\x00byte", "message_invalid_characters"),
        ("carriage\rreturn", "message_invalid_characters"),
        ("escape \x1b[31m", "message_invalid_characters"),
        ("del\x7f", "message_invalid_characters"),
    ],
)
async def test_invalid_text_is_refused_and_nothing_is_stored(
    server_a: Messaging, fake_rooms: FakeRooms, text: str, code: str
) -> None:
    member = join(fake_rooms, new_room())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await server_a.send(member, text)
    assert failure(raised.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code)
    assert raised.value.details()
    page = await server_a.history(member)
    assert page.last_seq == 0 and not page.messages


async def test_longest_message_is_accepted(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    member = join(fake_rooms, new_room())
    text = "é" * 3999 + "😀"
    response = await server_a.send(member, f"  {text}  ")
    assert response.message.text == text


@pytest.mark.parametrize("client_msg_id", ["", "x" * 65, "has space", "semi;colon", "ünïcode"])
async def test_invalid_client_msg_id_is_refused(
    server_a: Messaging, fake_rooms: FakeRooms, client_msg_id: str
) -> None:
    member = join(fake_rooms, new_room())
    request = messaging_pb2.SendMessageRequest(room_id=member.room_id, client_msg_id=client_msg_id, text="hi")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await server_a.stub.SendMessage(request, metadata=member.metadata)
    assert failure(raised.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_client_msg_id")
    assert (await server_a.history(member)).last_seq == 0


async def test_reply_must_name_an_existing_message(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    member = join(fake_rooms, new_room())
    await server_a.send(member, "first")
    for target in (2, 99, -1):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await server_a.send(member, "reply", reply_to_seq=target)
        assert failure(raised.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "reply_target_not_found")
    reply = await server_a.send(member, "reply", reply_to_seq=1)
    assert reply.message.seq == 2 and reply.message.reply_to_seq == 1
    assert (await server_a.history(member)).last_seq == 2


# --- authorization ----------------------------------------------------------------------------------


async def test_token_for_another_room_is_refused(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    member = join(fake_rooms, new_room())
    other_room = new_room()
    calls = [
        server_a.stub.SendMessage(
            messaging_pb2.SendMessageRequest(room_id=other_room, client_msg_id="a", text="hi"),
            metadata=member.metadata,
        ),
        server_a.stub.ListMessages(
            messaging_pb2.ListMessagesRequest(room_id=other_room), metadata=member.metadata
        ),
        server_a.stub.ListMessagesAfter(
            messaging_pb2.ListMessagesAfterRequest(room_id=other_room), metadata=member.metadata
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert failure(raised.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "wrong_room")


async def test_missing_or_forged_token_is_refused(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    member = join(fake_rooms, new_room())
    request = messaging_pb2.SendMessageRequest(room_id=member.room_id, client_msg_id="a", text="hi")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await server_a.stub.SendMessage(request)
    assert failure(raised.value)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")

    forged = jwt.encode(
        jwt.decode(member.token, options={"verify_signature": False}),
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": KID},
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await server_a.stub.SendMessage(request, metadata=(("authorization", f"Bearer {forged}"),))
    assert failure(raised.value)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "invalid_token")
    assert (await server_a.history(member)).last_seq == 0


async def test_banned_revoked_and_unknown_participants_cannot_send(
    server_a: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    banned = join(fake_rooms, room, banned=True)
    revoked = join(fake_rooms, room, version=3, token_version=2)
    stranger = Member(room, rooms_pb2.Participant(id=str(uuid.uuid4()), subject="nobody"), "")
    stranger.token = room_token(room, stranger.participant)

    for member, code in ((banned, "banned"), (revoked, "token_revoked"), (stranger, "not_a_participant")):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await server_a.send(member, "let me in")
        assert failure(raised.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, code)

    current = Member(room, revoked.participant, room_token(room, revoked.participant))
    assert (await server_a.send(current, "with a fresh token")).message.seq == 1


async def test_send_rate_limit_trips_with_retry_after(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake, rooms_addr = rooms
    room = new_room()
    member = join(fake, room)
    other = join(fake, room)
    async with messaging_server(
        database_url, redis_url, rooms_addr, send_rate_limit=3, send_rate_burst=3
    ) as server:
        before = await server.counter("chatpop_rate_limited_total")
        sent = [await server.send(member, f"burst {i}", f"b-{i}") for i in range(3)]
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await server.send(member, "one too many", "b-3")
        status, code, retry_after = failure(raised.value)
        assert (status, code) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
        # Three per minute: the next token is about 20 seconds away.
        assert retry_after is not None and 1 <= retry_after <= 20
        assert await server.counter("chatpop_rate_limited_total") == before + 1

        # A retry of an accepted message is still acknowledged, and other senders are not limited.
        retry = await server.send(member, "burst 0", "b-0")
        assert not retry.created and retry.message == sent[0].message
        assert (await server.send(other, "my own budget")).message.seq == 4
        assert (await server.history(member)).last_seq == 4


# --- history and resume -----------------------------------------------------------------------------


async def test_history_pages_newest_first_across_the_hot_window(
    server_a: Messaging, fake_rooms: FakeRooms, redis_url: str
) -> None:
    member = join(fake_rooms, new_room())
    for i in range(1, 46):
        await server_a.send(member, f"message {i}", f"h-{i}")

    hits = await server_a.counter("chatpop_hot_cache_requests_total", result="hit")
    misses = await server_a.counter("chatpop_hot_cache_requests_total", result="miss")
    pages = []
    before = 0
    while True:
        page = await server_a.history(member, before_seq=before, limit=10)
        assert page.last_seq == 45
        pages.append([m.seq for m in page.messages])
        if not page.has_more:
            break
        before = page.messages[-1].seq
    assert pages == [
        list(range(45, 35, -1)),
        list(range(35, 25, -1)),
        list(range(25, 15, -1)),
        list(range(15, 5, -1)),
        list(range(5, 0, -1)),
    ]
    # The newest 20 (26..45) come from the hot cache, older pages from Postgres.
    assert await server_a.counter("chatpop_hot_cache_requests_total", result="hit") == hits + 2
    assert await server_a.counter("chatpop_hot_cache_requests_total", result="miss") == misses + 3

    newest = await server_a.history(member, limit=10)
    client: aioredis.Redis = aioredis.Redis.from_url(redis_url)  # type: ignore[type-arg]
    try:
        await client.flushall()
    finally:
        await client.aclose()
    misses = await server_a.counter("chatpop_hot_cache_requests_total", result="miss")
    from_postgres = await server_a.history(member, limit=10)
    assert from_postgres == newest
    assert await server_a.counter("chatpop_hot_cache_requests_total", result="miss") == misses + 1

    # The miss re-warms the room's stream in the background; reads become hits again.
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        hits = await server_a.counter("chatpop_hot_cache_requests_total", result="hit")
        again = await server_a.history(member, limit=10)
        assert again == newest
        if await server_a.counter("chatpop_hot_cache_requests_total", result="hit") == hits + 1:
            break
        assert time.monotonic() < deadline, "the hot cache was never re-warmed"
        await asyncio.sleep(0.1)


async def test_history_arguments_are_checked(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    member = join(fake_rooms, new_room())
    await server_a.send(member, "one")
    assert [m.seq for m in (await server_a.history(member, before_seq=1000)).messages] == [1]
    assert not (await server_a.history(member, before_seq=1)).messages
    for before_seq, limit, code in (
        (-1, 10, "invalid_before_seq"),
        (0, 101, "invalid_limit"),
        (0, -5, "invalid_limit"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await server_a.history(member, before_seq=before_seq, limit=limit)
        assert failure(raised.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code)


async def test_list_after_resumes_or_asks_for_reload(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    member = join(fake_rooms, new_room())
    await asyncio.gather(*(server_a.send(member, f"m{i}") for i in range(RESUME_MAX + 5)))
    last = RESUME_MAX + 5

    resumed = await server_a.after(member, 10)
    assert not resumed.reload and resumed.last_seq == last
    assert [m.seq for m in resumed.messages] == list(range(11, last + 1))
    assert (await server_a.after(member, last)).messages == []

    for after_seq, limit in ((0, 0), (4, 0), (10, 5), (last + 1, 0)):
        response = await server_a.after(member, after_seq, limit)
        assert response.reload and not response.messages and response.last_seq == last
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await server_a.after(member, -1)
    assert failure(raised.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_after_seq")


async def test_a_resume_of_many_long_messages_fits_through_service_channels(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str], fake_rooms: FakeRooms
) -> None:
    """Hundreds of 4,000-character messages in 4-byte UTF-8 pass gRPC's default 4 MB message cap."""
    member = join(fake_rooms, new_room())
    text = "\U0001f600" * 4000  # 16,000 bytes in UTF-8
    async with messaging_server(
        database_url, redis_url, rooms[1], resume_max=1000, **GENEROUS_RATE_LIMIT
    ) as server:
        for _ in range(300):
            await server.send(member, text)
        request = messaging_pb2.ListMessagesAfterRequest(room_id=member.room_id, after_seq=0)
        channel = insecure_channel(server.address)
        try:
            stub = messaging_pb2_grpc.MessagingServiceStub(channel)
            response = await stub.ListMessagesAfter(request, metadata=member.metadata, timeout=30)
        finally:
            await channel.close()
    assert not response.reload
    assert response.ByteSize() > 4 * 1024 * 1024
    assert [m.seq for m in response.messages] == list(range(1, 301))
    assert all(m.text == text for m in response.messages)


# --- live delivery ----------------------------------------------------------------------------------


async def test_a_watched_room_has_its_key_before_its_first_message(
    server_a: Messaging, fake_rooms: FakeRooms, database_url: str
) -> None:
    room = new_room()
    member = join(fake_rooms, room)

    async def keys() -> list[int]:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch("SELECT version FROM messaging.room_keys WHERE room_id = $1", room)
        finally:
            await connection.close()
        return [row["version"] for row in rows]

    assert await keys() == []
    events = server_a.subscribe(room, after_seq=-1)
    try:
        deadline = time.monotonic() + 5
        while not await keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Made when the room was first watched, not on its first write; that write uses it.
        assert await keys() == [1]
        sent = await server_a.send(member, "first")
        assert (await events.message()) == sent.message
        assert await keys() == [1]
    finally:
        await events.close()


async def test_subscribe_backfills_then_delivers_live_without_gaps_or_duplicates(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    member = join(fake_rooms, room)
    for i in range(1, 6):
        await server_a.send(member, f"before {i}")

    events = server_a.subscribe(room, after_seq=2)
    try:
        assert await events.until(5) == [3, 4, 5]
        # Live messages from this process and from another one, some of them concurrently.
        for i in range(6, 9):
            await server_a.send(member, f"live {i}")
        await asyncio.gather(
            *(server.send(member, "burst") for server in (server_a, server_b, server_a, server_b))
        )
        await server_b.send(member, "from b")
        assert await events.until(13) == list(range(6, 14))
        # Anything delivered twice would arrive before this.
        marker = await server_b.send(member, "marker")
        assert await events.message() == marker.message
    finally:
        await events.close()


async def test_subscribe_on_one_process_sees_sends_on_another(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    member = join(fake_rooms, room)
    events = server_b.subscribe(room, after_seq=0)
    try:
        sent = await server_a.send(member, "across processes")
        assert await events.message() == sent.message
    finally:
        await events.close()


async def test_first_message_of_a_new_subscription_is_never_lost(
    server_a: Messaging, fake_rooms: FakeRooms
) -> None:
    """A send racing the first Subscribe of a room (whose hub is just starting) still arrives.

    The hub reads the room's position while starting; a message committed meanwhile must still reach
    a subscriber whose own position was read before it, without waiting for a later message.
    """
    # The window is a few milliseconds wide; sweep the send across it.
    for step in range(60):
        room = new_room()
        member = join(fake_rooms, room)
        events = server_a.subscribe(room, after_seq=0)
        try:
            await asyncio.sleep((step % 20) * 0.0005)
            sent = await server_a.send(member, "racing the subscription")
            assert await events.message() == sent.message
        finally:
            await events.close()


async def test_subscribe_from_now_skips_history(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    room = new_room()
    member = join(fake_rooms, room)
    for i in range(3):
        await server_a.send(member, f"old {i}")
    events = server_a.subscribe(room, after_seq=-1)
    try:
        # When the subscription took effect is unknowable from outside, so send until something
        # arrives: it must be one of the new messages, and the rest must follow in order.
        sent: list[int] = []
        first: Any = None
        while first is None:
            sent.append((await server_a.send(member, "new")).message.seq)
            try:
                first = await events.next(timeout=1.0)
            except TimeoutError:
                continue
        assert isinstance(first, messaging_pb2.SubscribeResponse)
        assert first.message.seq in sent and first.message.seq >= 4
        if first.message.seq < sent[-1]:
            assert await events.until(sent[-1]) == list(range(first.message.seq + 1, sent[-1] + 1))
    finally:
        await events.close()


async def test_subscribe_with_too_large_a_gap_answers_reload(
    server_a: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    member = join(fake_rooms, room)
    await asyncio.gather(*(server_a.send(member, f"m{i}") for i in range(RESUME_MAX + 2)))
    for after_seq in (0, RESUME_MAX + 10):
        events = server_a.subscribe(room, after_seq=after_seq)
        try:
            event = await events.next()
            assert isinstance(event, messaging_pb2.SubscribeResponse)
            assert event.WhichOneof("event") == "reload"
            assert event.reload.last_seq == RESUME_MAX + 2
            assert await events.next() is _END
        finally:
            await events.close()


async def test_subscribe_checks_its_arguments(server_a: Messaging) -> None:
    for room_id, after_seq, code in (("", 0, "invalid_room_id"), (new_room(), -2, "invalid_after_seq")):
        events = server_a.subscribe(room_id, after_seq)
        try:
            error = await events.next()
            assert isinstance(error, grpc.aio.AioRpcError)
            assert failure(error)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code)
        finally:
            await events.close()


async def test_redis_outage_loses_nothing(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms, redis_server: Redis, tmp_path: Path
) -> None:
    room = new_room()
    member = join(fake_rooms, room)
    await server_a.send(member, "before the outage")
    events = server_b.subscribe(room, after_seq=0)
    try:
        assert await events.until(1) == [1]
        redis_server.stop()
        try:
            during = [await server_a.send(member, f"during {i}") for i in range(5)]
            assert [r.message.seq for r in during] == [2, 3, 4, 5, 6]
            assert all(r.created for r in during)
            page = await server_a.history(member)
            assert [m.seq for m in page.messages] == [6, 5, 4, 3, 2, 1]
            assert [m.seq for m in (await server_b.after(member, 1)).messages] == [2, 3, 4, 5, 6]
        finally:
            if redis_server.process is None:
                redis_server.start(tmp_path / "redis.log", persist=False)
        # Nothing new is sent yet: what pub/sub missed must arrive on its own.
        assert await events.until(6) == [2, 3, 4, 5, 6]
        after = await server_a.send(member, "after the outage")
        assert await events.message() == after.message
        marker = await server_a.send(member, "marker")
        assert await events.message() == marker.message
        page = await server_b.history(member)
        assert [m.seq for m in page.messages] == list(range(8, 0, -1))
    finally:
        await events.close()


async def test_slow_subscriber_is_told_to_reload(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake, rooms_addr = rooms
    room = new_room()
    member = join(fake, room)
    # Without BDP probing the stream keeps its small initial flow-control window, so a client that
    # stops reading soon stops the server from writing.
    async with (
        messaging_server(
            database_url, redis_url, rooms_addr, subscriber_queue_size=2, **GENEROUS_RATE_LIMIT
        ) as server,
        grpc.aio.insecure_channel(server.address, options=[("grpc.http2.bdp_probe", 0)]) as channel,
    ):
        stub = messaging_pb2_grpc.MessagingServiceStub(channel)
        call = stub.Subscribe(messaging_pb2.SubscribeRequest(room_id=room, after_seq=0))
        first = await server.send(member, "first")
        assert (await asyncio.wait_for(call.read(), EVENT_TIMEOUT)).message == first.message
        for i in range(200):
            last = await server.send(member, "x" * 4000, f"bulk-{i}")

        events: list[messaging_pb2.SubscribeResponse] = []
        while (event := await asyncio.wait_for(call.read(), EVENT_TIMEOUT)) is not grpc.aio.EOF:
            events.append(event)
        *messages, reload = events
        assert reload.WhichOneof("event") == "reload"
        assert reload.reload.last_seq == last.message.seq
        seqs = [event.message.seq for event in messages]
        assert seqs == list(range(2, 2 + len(seqs)))
        assert len(seqs) < 200

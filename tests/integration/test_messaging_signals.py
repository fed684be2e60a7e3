"""Ephemeral room signals through messaging: typing, presence, room updates and changed mutes,
across two messaging servers that share the session's Redis, seen on their Subscribe streams as an
edge would see them.

The servers, tokens and the fake RoomsService (which answers GetRoom, read when a room update is
announced) come from test_messaging_service.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio

from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2
from tests.integration.test_messaging_service import (
    EVENT_TIMEOUT,
    GENEROUS_RATE_LIMIT,
    KID,
    MISSING_ROOM,
    SIGNING_KEY,
    Events,
    FakeRooms,
    Member,
    Messaging,
    failure,
    fake_rooms,
    join,
    messaging_server,
    new_room,
    rooms,
)

__all__ = ["fake_rooms", "rooms"]  # fixtures shared with test_messaging_service.py


def access_token(subject: str) -> str:
    now = int(time.time())
    claims = {
        "typ": "access",
        "iss": "chatpop",
        "aud": "chatpop",
        "sub": subject,
        "knd": "user",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
    }
    return jwt.encode(claims, SIGNING_KEY, algorithm="EdDSA", headers={"kid": KID})


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest_asyncio.fixture(scope="module")
async def server_a(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> AsyncIterator[Messaging]:
    async with messaging_server(database_url, redis_url, rooms[1], **GENEROUS_RATE_LIMIT) as server:
        yield server


@pytest_asyncio.fixture(scope="module")
async def server_b(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> AsyncIterator[Messaging]:
    """A second messaging process on the same Postgres and Redis."""
    async with messaging_server(database_url, redis_url, rooms[1], **GENEROUS_RATE_LIMIT) as server:
        yield server


# --- helpers ----------------------------------------------------------------------------------------


async def typing(server: Messaging, member: Member) -> None:
    await server.stub.SendTyping(
        messaging_pb2.SendTypingRequest(room_id=member.room_id), metadata=member.metadata, timeout=10
    )


async def signal(events: Events, kind: str | None = None) -> messaging_pb2.Signal:
    """The next signal on the stream (of `kind`, skipping other signals); a message fails the test."""
    while True:
        event = await events.next()
        assert isinstance(event, messaging_pb2.SubscribeResponse), f"expected a signal, got {event!r}"
        assert event.WhichOneof("event") == "signal", f"expected a signal, got {event}"
        if kind is None or event.signal.WhichOneof("kind") == kind:
            return event.signal


async def listening(streams: list[Events], poke: Callable[[], Awaitable[None]]) -> None:
    """Poke (send typing) until every stream got a signal: their processes now hear the room's
    signal channel, so nothing published from here on can pass them by."""
    pending = list(streams)
    deadline = time.monotonic() + EVENT_TIMEOUT
    while pending:
        assert time.monotonic() < deadline, "the streams never heard the room's signals"
        await poke()
        still: list[Events] = []
        for events in pending:
            try:
                event = await events.next(timeout=0.5)
            except TimeoutError:
                still.append(events)
                continue
            assert event.WhichOneof("event") == "signal", event
        pending = still
    # Drain the pokes that came after the first.
    for events in streams:
        while True:
            try:
                event = await events.next(timeout=0.3)
            except TimeoutError:
                break
            assert event.signal.WhichOneof("kind") == "typing", event


async def report(
    server: Messaging,
    instance: str,
    room_id: str,
    *,
    joined: list[str] | None = None,
    left: list[str] | None = None,
    count: int,
    complete: bool = False,
    ttl: int = 30,
) -> messaging_pb2.ReportPresenceResponse:
    return await server.stub.ReportPresence(
        messaging_pb2.ReportPresenceRequest(
            instance_id=instance,
            ttl_seconds=ttl,
            rooms=[
                messaging_pb2.PresenceReport(
                    room_id=room_id, joined=joined or [], left=left or [], complete=complete, count=count
                )
            ],
        ),
        timeout=10,
    )


async def presence(server: Messaging, member: Member) -> tuple[set[str], int]:
    response = await server.stub.GetPresence(
        messaging_pb2.GetPresenceRequest(room_id=member.room_id), metadata=member.metadata, timeout=10
    )
    return set(response.online), response.version


def change(sig: messaging_pb2.Signal) -> tuple[set[str], set[str], int]:
    return set(sig.presence.online), set(sig.presence.offline), sig.presence.version


def instance() -> str:
    return f"edge-{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def streams(server_a: Messaging, server_b: Messaging) -> AsyncIterator[Callable[[str], Any]]:
    """Opens Subscribe streams (closed after the test)."""
    opened: list[Events] = []

    def open_stream(room_id: str, server: Messaging) -> Events:
        events = server.subscribe(room_id, after_seq=-1)
        opened.append(events)
        return events

    yield open_stream
    for events in opened:
        await events.close()


# --- typing -----------------------------------------------------------------------------------------


async def test_typing_reaches_the_streams_of_both_processes_and_never_touches_messages(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms, streams: Any
) -> None:
    room = new_room()
    alice = join(fake_rooms, room, "AliceTypes")
    bob = join(fake_rooms, room, "BobReads")
    on_a, on_b = streams(room, server_a), streams(room, server_b)
    await listening([on_a, on_b], lambda: typing(server_b, bob))

    await typing(server_a, alice)
    for events in (on_a, on_b):
        sig = await signal(events)
        assert sig.room_id == room
        assert (sig.typing.participant_id, sig.typing.username) == (alice.participant.id, "AliceTypes")

    # Typing is not a message: the first message still gets seq 1, and streams go on in order.
    sent = await server_b.send(alice, "now it is a message")
    assert sent.message.seq == 1
    for events in (on_a, on_b):
        assert await events.message() == sent.message
    assert [m.seq for m in (await server_a.history(alice)).messages] == [1]


async def test_typing_needs_a_participant_who_may_write(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    room = new_room()
    banned = join(fake_rooms, room, "Banned", banned=True)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await typing(server_a, banned)
    assert failure(raised.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "banned")
    other = join(fake_rooms, new_room())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await server_a.stub.SendTyping(
            messaging_pb2.SendTypingRequest(room_id=room), metadata=other.metadata, timeout=10
        )
    assert failure(raised.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "wrong_room")


# --- changed mutes ----------------------------------------------------------------------------------


async def set_mute(server: Messaging, member: Member, participant_id: str, on: bool) -> bool:
    if on:
        muted = await server.stub.MuteParticipant(
            messaging_pb2.MuteParticipantRequest(room_id=member.room_id, participant_id=participant_id),
            metadata=member.metadata,
            timeout=10,
        )
        return muted.changed
    unmuted = await server.stub.UnmuteParticipant(
        messaging_pb2.UnmuteParticipantRequest(room_id=member.room_id, participant_id=participant_id),
        metadata=member.metadata,
        timeout=10,
    )
    return unmuted.changed


def mutes_of(sig: messaging_pb2.Signal) -> tuple[str, list[str]]:
    return sig.mutes_changed.participant_id, list(sig.mutes_changed.muted_participant_ids)


async def test_a_changed_mute_is_signalled_to_both_processes_with_the_whole_list(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms, streams: Any
) -> None:
    room = new_room()
    alice = join(fake_rooms, room, "AliceMutes")
    bob, cara = join(fake_rooms, room, "BobbyLoud"), join(fake_rooms, room, "CaraLoud")
    dora = join(fake_rooms, room, "DoraQuiet")
    on_a, on_b = streams(room, server_a), streams(room, server_b)
    await listening([on_a, on_b], lambda: typing(server_b, bob))

    assert await set_mute(server_a, alice, bob.participant.id, True)
    assert await set_mute(server_b, alice, cara.participant.id, True)
    for events in (on_a, on_b):
        assert mutes_of(await signal(events)) == (alice.participant.id, [bob.participant.id])
        # The whole list, newest first, whichever process made the change.
        assert mutes_of(await signal(events)) == (
            alice.participant.id,
            [cara.participant.id, bob.participant.id],
        )

    # A call that changes nothing signals nothing: the next signal is the typing sent after it.
    assert not await set_mute(server_a, alice, bob.participant.id, True)
    assert not await set_mute(server_b, alice, dora.participant.id, False)
    await typing(server_a, cara)
    for events in (on_a, on_b):
        assert (await signal(events)).WhichOneof("kind") == "typing"

    assert await set_mute(server_b, alice, bob.participant.id, False)
    for events in (on_a, on_b):
        sig = await signal(events)
        assert sig.room_id == room
        assert mutes_of(sig) == (alice.participant.id, [cara.participant.id])
    # Mutes are no entries of the log: the first message still gets seq 1.
    assert (await server_a.send(bob, "still here")).message.seq == 1


async def test_the_last_mutes_signalled_are_the_ones_committed_under_concurrent_changes(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms, streams: Any
) -> None:
    room = new_room()
    alice = join(fake_rooms, room, "AliceBusy")
    others = [join(fake_rooms, room, f"Other{n}") for n in range(6)]
    on_a = streams(room, server_a)
    await listening([on_a], lambda: typing(server_a, others[0]))

    for round_ in range(3):
        # Both processes change Alice's mutes at once, muting and unmuting the same people.
        changes = [
            set_mute(server, alice, other.participant.id, (n + round_) % 3 != 0)
            for n, other in enumerate(others)
            for server in (server_a, server_b)
        ]
        changed = sum(await asyncio.gather(*changes))
        response = await server_a.stub.ListMutes(
            messaging_pb2.ListMutesRequest(room_id=room), metadata=alice.metadata, timeout=10
        )
        committed = [mute.participant_id for mute in response.mutes]
        signalled: list[str] | None = None
        for _ in range(changed):
            signalled = mutes_of(await signal(on_a, "mutes_changed"))[1]
        if changed:
            assert signalled == committed, round_


async def test_a_flood_of_signals_never_makes_a_slow_stream_reload(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake, rooms_addr = rooms
    room = new_room()
    member = join(fake, room, "Chatterbox")
    async with (
        messaging_server(
            database_url, redis_url, rooms_addr, subscriber_queue_size=3, **GENEROUS_RATE_LIMIT
        ) as server,
        grpc.aio.insecure_channel(server.address, options=[("grpc.http2.bdp_probe", 0)]) as channel,
    ):
        stub = messaging_pb2_grpc.MessagingServiceStub(channel)
        call = stub.Subscribe(messaging_pb2.SubscribeRequest(room_id=room, after_seq=0))
        # Read one event (a typing signal poked until the stream hears the room), then stop reading.
        first = asyncio.create_task(call.read())
        deadline = time.monotonic() + EVENT_TIMEOUT
        while not first.done():
            assert time.monotonic() < deadline, "the stream never heard the room's signals"
            await typing(server, member)
            await asyncio.wait({first}, timeout=0.3)
        assert first.result().WhichOneof("event") == "signal"

        # Far more signals than a stream buffers, while nobody reads it; then three messages.
        await asyncio.gather(*(typing(server, member) for _ in range(600)))
        sent = [await server.send(member, f"m{i}") for i in range(3)]
        try:
            seqs: list[int] = []
            while len(seqs) < 3:
                event = await asyncio.wait_for(call.read(), EVENT_TIMEOUT)
                assert isinstance(event, messaging_pb2.SubscribeResponse), event
                kind = event.WhichOneof("event")
                assert kind != "reload", "signals made the stream reload"
                if kind == "message":
                    seqs.append(event.message.seq)
            assert seqs == [m.message.seq for m in sent] == [1, 2, 3]
        finally:
            call.cancel()


# --- presence ---------------------------------------------------------------------------------------


async def test_presence_is_the_union_of_edges_and_two_tabs_keep_a_person_online(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms, streams: Any
) -> None:
    room = new_room()
    alice = join(fake_rooms, room, "AliceTwoTabs")
    bob = join(fake_rooms, room, "BobOneTab")
    edge_1, edge_2 = instance(), instance()
    on_a, on_b = streams(room, server_a), streams(room, server_b)
    await listening([on_a, on_b], lambda: typing(server_a, bob))
    assert await presence(server_a, alice) == (set(), 0)

    # Alice's first tab, on edge 1 (reported through messaging A).
    assert not (await report(server_a, edge_1, room, joined=[alice.participant.id], count=1)).resync_room_ids
    for events in (on_a, on_b):
        assert change(await signal(events, "presence")) == ({alice.participant.id}, set(), 1)

    # Her second tab and Bob, both on edge 2 (through messaging B): only Bob is new.
    await report(server_b, edge_2, room, joined=[alice.participant.id, bob.participant.id], count=2)
    for events in (on_a, on_b):
        assert change(await signal(events, "presence")) == ({bob.participant.id}, set(), 2)
    for server in (server_a, server_b):
        assert await presence(server, bob) == ({alice.participant.id, bob.participant.id}, 2)

    # Closing the first tab changes nothing: the second one is still open.
    await report(server_b, edge_1, room, left=[alice.participant.id], count=0)
    assert await presence(server_a, alice) == ({alice.participant.id, bob.participant.id}, 2)
    # Reporting the same again is harmless.
    await report(server_a, edge_2, room, joined=[bob.participant.id], count=2)

    # The last tab closes: Alice is offline, and the very next change is this one (version 3).
    await report(server_a, edge_2, room, left=[alice.participant.id], count=1)
    for events in (on_a, on_b):
        assert change(await signal(events, "presence")) == (set(), {alice.participant.id}, 3)
    assert await presence(server_b, bob) == ({bob.participant.id}, 3)

    # Snapshot + changes = a fresh snapshot: replay what the streams said onto the first snapshot.
    await report(server_b, edge_1, room, joined=[alice.participant.id], count=1)
    await report(server_b, edge_2, room, left=[bob.participant.id], count=0)
    online = {bob.participant.id}
    version = 3
    for _ in range(2):
        came, went, step = change(await signal(on_a, "presence"))
        assert step == version + 1
        online = (online | came) - went
        version = step
    assert await presence(server_a, alice) == (online, version) == ({alice.participant.id}, 5)


async def test_a_dead_edges_people_go_offline_when_its_record_expires(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms, streams: Any
) -> None:
    room = new_room()
    carol = join(fake_rooms, room, "CarolOnDying")
    dave = join(fake_rooms, room, "DaveOnLiving")
    erin = join(fake_rooms, room, "ErinOnDying")
    dying, living = instance(), instance()
    on_b = streams(room, server_b)
    await listening([on_b], lambda: typing(server_b, dave))

    # The dying edge reports with a one-second lifetime and then never again (killed).
    await report(server_a, dying, room, joined=[carol.participant.id, erin.participant.id], count=2, ttl=1)
    await report(server_a, living, room, joined=[dave.participant.id], count=1, ttl=30)
    assert change(await signal(on_b, "presence"))[0] == {carol.participant.id, erin.participant.id}
    assert change(await signal(on_b, "presence"))[0] == {dave.participant.id}
    assert (await presence(server_b, dave))[0] == {
        carol.participant.id,
        dave.participant.id,
        erin.participant.id,
    }

    # The living edge keeps refreshing; once the dying one's record is past its time, a refresh
    # drops its people and the room hears it.
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        refreshed = await report(server_b, living, room, count=1)
        assert not refreshed.resync_room_ids
        online, version = await presence(server_a, dave)
        if online == {dave.participant.id}:
            break
        assert time.monotonic() < deadline, "the dead edge's people never went offline"
        await asyncio.sleep(0.2)
    assert change(await signal(on_b, "presence")) == (
        set(),
        {carol.participant.id, erin.participant.id},
        version,
    )


async def test_a_snapshot_alone_drops_a_dead_edge(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    room = new_room()
    frank = join(fake_rooms, room, "FrankAlone")
    await report(server_a, instance(), room, joined=[frank.participant.id], count=1, ttl=1)
    assert await presence(server_a, frank) == ({frank.participant.id}, 1)
    deadline = time.monotonic() + EVENT_TIMEOUT
    while (await presence(server_a, frank))[0]:
        assert time.monotonic() < deadline, "the expired record was never dropped"
        await asyncio.sleep(0.2)
    assert await presence(server_a, frank) == (set(), 2)


async def test_a_record_that_disagrees_asks_for_a_complete_report(
    server_a: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    gina, hank, ivy = (join(fake_rooms, room, name) for name in ("GinaFull", "HankFull", "IvyFull"))
    edge = instance()
    # The edge holds two people but messaging only heard of one (a report was lost).
    answer = await report(server_a, edge, room, joined=[gina.participant.id], count=2)
    assert list(answer.resync_room_ids) == [room]
    answer = await report(
        server_a, edge, room, joined=[gina.participant.id, hank.participant.id], count=2, complete=True
    )
    assert not answer.resync_room_ids
    assert (await presence(server_a, gina))[0] == {gina.participant.id, hank.participant.id}
    # A complete report also removes whoever it no longer names.
    await report(
        server_a, edge, room, joined=[hank.participant.id, ivy.participant.id], count=2, complete=True
    )
    assert (await presence(server_a, gina))[0] == {hank.participant.id, ivy.participant.id}
    # The edge's goodbye: nobody left.
    await report(server_a, edge, room, count=0, complete=True)
    assert (await presence(server_a, gina))[0] == set()


async def test_presence_reports_and_snapshots_check_their_input(
    server_a: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    member = join(fake_rooms, room)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"instance_id": ""}, "invalid_instance_id"),
        ({"instance_id": "has space"}, "invalid_instance_id"),
        ({"ttl_seconds": 3601}, "invalid_ttl_seconds"),
        ({"ttl_seconds": -1}, "invalid_ttl_seconds"),
        ({"rooms": [{"room_id": "", "count": 0}]}, "invalid_room_id"),
        ({"rooms": [{"room_id": room, "count": -1}]}, "invalid_count"),
        ({"rooms": [{"room_id": room, "joined": ["bad id"], "count": 1}]}, "invalid_participant_id"),
        ({"rooms": [{"room_id": room, "count": 0}, {"room_id": room, "count": 0}]}, "duplicate_room"),
        ({"rooms": [{"room_id": f"r{i}", "count": 0} for i in range(501)]}, "too_many_rooms"),
    ]
    for fields, code in cases:
        values: dict[str, Any] = {"instance_id": "edge-ok", "ttl_seconds": 30, "rooms": []} | fields
        request = messaging_pb2.ReportPresenceRequest(
            instance_id=values["instance_id"],
            ttl_seconds=values["ttl_seconds"],
            rooms=[messaging_pb2.PresenceReport(**r) for r in values["rooms"]],
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await server_a.stub.ReportPresence(request, timeout=10)
        assert failure(raised.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code), fields
    # Nothing was recorded by the refused reports.
    assert await presence(server_a, member) == (set(), 0)
    other = join(fake_rooms, new_room())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await server_a.stub.GetPresence(
            messaging_pb2.GetPresenceRequest(room_id=room), metadata=other.metadata, timeout=10
        )
    assert failure(raised.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "wrong_room")


# --- room updates -----------------------------------------------------------------------------------


async def test_only_the_host_announces_a_room_update_and_the_room_comes_from_rooms(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms, streams: Any
) -> None:
    host_subject = str(uuid.uuid4())
    room = fake_rooms.open(host_subject, "Before the change")
    guest = join(fake_rooms, room.id, "GuestWatch")
    on_b = streams(room.id, server_b)
    await listening([on_b], lambda: typing(server_b, guest))

    async def announce(token: str, room_id: str = room.id) -> messaging_pb2.AnnounceRoomUpdateResponse:
        return await server_a.stub.AnnounceRoomUpdate(
            messaging_pb2.AnnounceRoomUpdateRequest(room_id=room_id), metadata=bearer(token), timeout=10
        )

    refusals: list[tuple[str, str, grpc.StatusCode, str]] = [
        (access_token(str(uuid.uuid4())), room.id, grpc.StatusCode.PERMISSION_DENIED, "not_host"),
        (guest.token, room.id, grpc.StatusCode.PERMISSION_DENIED, "not_host"),
        (
            join(fake_rooms, new_room(), is_host=True).token,
            room.id,
            grpc.StatusCode.PERMISSION_DENIED,
            "wrong_room",
        ),
        (access_token(host_subject), MISSING_ROOM, grpc.StatusCode.NOT_FOUND, "room_not_found"),
        ("not-a-token", room.id, grpc.StatusCode.UNAUTHENTICATED, "invalid_token"),
    ]
    for token, room_id, status, code in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await announce(token, room_id)
        assert failure(raised.value)[:2] == (status, code)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await server_a.stub.AnnounceRoomUpdate(
            messaging_pb2.AnnounceRoomUpdateRequest(room_id=room.id), timeout=10
        )
    assert failure(raised.value)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")

    # The host changes the room at rooms, then announces it: clients get rooms' version of it.
    fake_rooms.rooms[room.id].name = "After the change"
    fake_rooms.rooms[room.id].theme = rooms_pb2.THEME_DARK_MODE
    answer = await announce(access_token(host_subject))
    assert answer.room.name == "After the change"
    sig = await signal(on_b, "room_updated")
    assert sig.room_id == room.id
    assert sig.room_updated.room == fake_rooms.rooms[room.id]

    # The host's room token works too; closing shows as closed.
    fake_rooms.rooms[room.id].closed = True
    host_member = join(fake_rooms, room.id, "TheHost", is_host=True)
    await announce(host_member.token)
    assert (await signal(on_b, "room_updated")).room_updated.room.closed

"""What the host's settings do to sending (slow mode, a closed room), and read positions with the
room activity behind "my rooms", over gRPC against a real messaging server, Postgres and Redis.

Rooms is the fake from test_messaging_service.py: tests set a room's state in `fake.rooms`.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from test_messaging_service import (
    GENEROUS_RATE_LIMIT,
    Events,
    FakeRooms,
    failure,
    join,
    messaging_server,
    new_room,
    rooms,
)

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2

__all__ = ["rooms"]  # the module-scoped fake rooms server, shared with test_messaging_service.py


async def test_slow_mode_spaces_out_each_participant_but_never_the_host(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake, rooms_addr = rooms
    room = new_room()
    fake.rooms[room] = rooms_pb2.Room(id=room, slow_mode_seconds=2)
    host = join(fake, room, "TheHost", is_host=True)
    alice, bob = join(fake, room, "Alice"), join(fake, room, "Bobby")
    async with messaging_server(
        database_url, redis_url, rooms_addr, room_policy_cache_ttl=0, **GENEROUS_RATE_LIMIT
    ) as server:
        first = await server.send(alice, "first", "a-1")
        with pytest.raises(grpc.aio.AioRpcError) as waited:
            await server.send(alice, "too soon", "a-2")
        status, code, retry_after = failure(waited.value)
        assert (status, code) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "slow_mode")
        assert retry_after is not None and 1 <= retry_after <= 2
        assert (waited.value.details() or "").startswith("Slow mode is on: one message every 2 seconds.")

        # A retry of the message that went through is still acknowledged; others are not held back
        # by Alice's wait, and the host never waits.
        retried = await server.send(alice, "first", "a-1")
        assert not retried.created and retried.message == first.message
        assert (await server.send(bob, "mine")).created
        for n in range(3):
            assert (await server.send(host, f"host {n}")).created

        await asyncio.sleep(retry_after + 0.1)
        assert (await server.send(alice, "too soon", "a-2")).created
        texts = [m.text for m in (await server.history(alice)).messages]
        assert texts == ["too soon", "host 2", "host 1", "host 0", "mine", "first"]

        # The host turns slow mode off: it applies to the very next send.
        fake.rooms[room] = rooms_pb2.Room(id=room, slow_mode_seconds=0)
        assert (await server.send(alice, "quick one")).created
        assert (await server.send(alice, "quick two")).created


async def test_a_closed_room_takes_no_more_messages_but_keeps_its_history(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake, rooms_addr = rooms
    room = new_room()
    member = join(fake, room, "Member")
    async with messaging_server(
        database_url, redis_url, rooms_addr, room_policy_cache_ttl=0, **GENEROUS_RATE_LIMIT
    ) as server:
        sent = await server.send(member, "before closing", "b-1")
        fake.rooms[room] = rooms_pb2.Room(id=room, closed=True)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await server.send(member, "after closing")
        assert failure(refused.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "room_closed")
        assert refused.value.details() == "This room is closed."
        # A retry of a message sent before the room closed still gets its ack.
        again = await server.send(member, "before closing", "b-1")
        assert not again.created and again.message == sent.message
        page = await server.history(member)
        assert [m.text for m in page.messages] == ["before closing"]


async def test_read_positions_drive_unread_counts(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake, rooms_addr = rooms
    room, quiet = new_room(), new_room()
    me, other = join(fake, room, "Reader"), join(fake, room, "Writer")
    async with messaging_server(database_url, redis_url, rooms_addr, **GENEROUS_RATE_LIMIT) as server:

        async def activity(*refs: tuple[str, str]) -> list[messaging_pb2.RoomActivity]:
            response = await server.stub.GetRoomActivity(
                messaging_pb2.GetRoomActivityRequest(
                    participants=[
                        messaging_pb2.RoomParticipantRef(room_id=r, participant_id=p) for r, p in refs
                    ]
                ),
                timeout=10,
            )
            return list(response.activities)

        async def mark(seq: int) -> int:
            response = await server.stub.MarkRead(
                messaging_pb2.MarkReadRequest(room_id=room, seq=seq), metadata=me.metadata, timeout=10
            )
            return int(response.read_seq)

        for n in range(3):
            await server.send(other, f"from them {n}")
        await server.send(me, "from me")
        newest = await server.send(other, "from them again")

        mine, empty = await activity((room, me.participant.id), (quiet, "nobody"))
        # My own message is never unread to me.
        assert (mine.last_seq, mine.read_seq, mine.unread) == (5, 0, 4)
        assert mine.last_message_at == newest.message.created_at
        assert (empty.room_id, empty.last_seq, empty.unread, empty.HasField("last_message_at")) == (
            quiet,
            0,
            0,
            False,
        )

        assert await mark(3) == 3
        assert (await activity((room, me.participant.id)))[0].unread == 1
        # The position never moves back, and never past the room's newest message.
        assert await mark(1) == 3
        assert await mark(10_000) == 5
        assert (await activity((room, me.participant.id)))[0].unread == 0
        # A host who never joined has no participant: everything counts.
        assert (await activity((room, "")))[0].unread == 5

        # Counting stops at 100, however busy the room.
        await asyncio.gather(*(server.send(other, f"busy {n}") for n in range(105)))
        assert (await activity((room, me.participant.id)))[0].unread == 100

        # Only a room token of that very room marks it read.
        with pytest.raises(grpc.aio.AioRpcError) as wrong_room:
            await server.stub.MarkRead(
                messaging_pb2.MarkReadRequest(room_id=quiet, seq=1), metadata=me.metadata, timeout=10
            )
        assert failure(wrong_room.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "wrong_room")
        with pytest.raises(grpc.aio.AioRpcError) as too_many:
            await activity(*[(new_room(), str(uuid.uuid4())) for _ in range(201)])
        assert failure(too_many.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "too_many_rooms")


async def test_a_lively_chat_is_not_held_back_but_a_flood_is(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    """The default send limit: a quick burst of 20, then about one a second (60 a minute)."""
    fake, rooms_addr = rooms
    room = new_room()
    chatty, flooder = join(fake, room, "Chatty"), join(fake, room, "Flooder")
    async with messaging_server(database_url, redis_url, rooms_addr) as server:
        # Someone in a lively exchange: a message every second or so is never refused.
        for number in range(5):
            assert (await server.send(chatty, f"quick reply {number}")).created
            await asyncio.sleep(0.5)

        async def attempt(number: int) -> str:
            try:
                await server.send(flooder, f"spam {number}")
            except grpc.aio.AioRpcError as exc:
                return failure(exc)[1]
            return "sent"

        outcomes = await asyncio.gather(*(attempt(n) for n in range(40)))
        assert 20 <= outcomes.count("sent") <= 22
        assert outcomes.count("rate_limited") == 40 - outcomes.count("sent")


async def _signal(events: Events) -> messaging_pb2.Signal:
    """The next signal on a stream, past the messages before it."""
    while (event := await events.next()).WhichOneof("event") != "signal":
        pass
    return event.signal


async def test_an_announced_change_applies_to_sends_at_once_in_every_process(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    """Closing or slowing a room is announced; every messaging process that hears it enforces it on
    the next send, without waiting for its cached view of the room to expire."""
    fake, rooms_addr = rooms
    room = new_room()
    host, member = join(fake, room, "RoomHost", is_host=True), join(fake, room, "Member")
    fake.rooms[room] = rooms_pb2.Room(id=room, host_id=host.participant.subject)
    slow_cache = {"room_policy_cache_ttl": 600, **GENEROUS_RATE_LIMIT}
    async with (
        messaging_server(database_url, redis_url, rooms_addr, **slow_cache) as announcer,
        messaging_server(database_url, redis_url, rooms_addr, **slow_cache) as listener,
    ):
        # The listener has a live stream for the room, so it hears the room's signals.
        events = listener.subscribe(room, -1)
        try:
            for server in (announcer, listener):
                assert (await server.send(member, "while it is open")).created
            fake.rooms[room] = rooms_pb2.Room(id=room, host_id=host.participant.subject, slow_mode_seconds=60)
            await announcer.stub.AnnounceRoomUpdate(
                messaging_pb2.AnnounceRoomUpdateRequest(room_id=room), metadata=host.metadata, timeout=10
            )
            await _signal(events)
            # The first message after slow mode came on goes through; the next one waits, whichever
            # process it reaches.
            assert (await listener.send(member, "first since slowing")).created
            for server in (listener, announcer):
                with pytest.raises(grpc.aio.AioRpcError) as slowed:
                    await server.send(member, "too soon")
                assert failure(slowed.value)[1] == "slow_mode"

            fake.rooms[room] = rooms_pb2.Room(id=room, host_id=host.participant.subject, closed=True)
            await announcer.stub.AnnounceRoomUpdate(
                messaging_pb2.AnnounceRoomUpdateRequest(room_id=room), metadata=host.metadata, timeout=10
            )
            await _signal(events)
            for server in (announcer, listener):
                with pytest.raises(grpc.aio.AioRpcError) as closed:
                    await server.send(host, "anyone?")
                assert failure(closed.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "room_closed")
        finally:
            await events.close()

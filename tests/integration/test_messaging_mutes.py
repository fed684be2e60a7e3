"""Personal mutes over gRPC against a real messaging server, Postgres and Redis: a muted participant's
messages leave the muter's history (the page still accounts for their seqs), nobody else's view
changes, and unmuting brings them back.

Rooms is the fake from test_messaging_service.py: tests add participants with `join`.
"""

from __future__ import annotations

import grpc
import pytest
from test_messaging_service import (
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
from chatpop_messaging import mutes

__all__ = ["rooms"]  # the module-scoped fake rooms server, shared with test_messaging_service.py


async def mute(server: Messaging, member: Member, participant_id: str) -> tuple[bool, list[str]]:
    response = await server.stub.MuteParticipant(
        messaging_pb2.MuteParticipantRequest(room_id=member.room_id, participant_id=participant_id),
        metadata=member.metadata,
        timeout=10,
    )
    return response.changed, [m.participant_id for m in response.mutes]


async def unmute(server: Messaging, member: Member, participant_id: str) -> tuple[bool, list[str]]:
    response = await server.stub.UnmuteParticipant(
        messaging_pb2.UnmuteParticipantRequest(room_id=member.room_id, participant_id=participant_id),
        metadata=member.metadata,
        timeout=10,
    )
    return response.changed, [m.participant_id for m in response.mutes]


async def listed(server: Messaging, member: Member) -> list[messaging_pb2.Mute]:
    response = await server.stub.ListMutes(
        messaging_pb2.ListMutesRequest(room_id=member.room_id), metadata=member.metadata, timeout=10
    )
    return list(response.mutes)


async def pages(server: Messaging, member: Member, limit: int) -> tuple[list[int], set[int]]:
    """Every message seq the member's history shows, and every seq its pages account for."""
    shown: list[int] = []
    accounted: set[int] = set()
    before = 0
    while True:
        page = await server.history(member, before_seq=before, limit=limit)
        shown += [m.seq for m in page.messages]
        accounted |= set(range(page.low_seq, (before or page.last_seq + 1)))
        if not page.has_more:
            return sorted(shown), accounted
        before = page.low_seq


async def test_a_muted_participants_messages_leave_the_muters_history_alone(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake, rooms_addr = rooms
    room = new_room()
    host = join(fake, room, "TheHost", is_host=True)
    alice, bob = join(fake, room, "Alice"), join(fake, room, "Bobby")
    async with messaging_server(database_url, redis_url, rooms_addr, **GENEROUS_RATE_LIMIT) as server:
        seqs: dict[str, list[int]] = {"alice": [], "bob": [], "host": []}
        for n in range(6):
            seqs["bob"].append((await server.send(bob, f"bob {n}")).message.seq)
            seqs["alice"].append((await server.send(alice, f"alice {n}")).message.seq)
        seqs["host"].append((await server.send(host, "host pins this")).message.seq)
        bob_pinned = seqs["bob"][0]
        await server.stub.SetPin(
            messaging_pb2.SetPinRequest(room_id=room, target_seq=bob_pinned, pinned=True),
            metadata=host.metadata,
            timeout=10,
        )

        assert await mute(server, alice, bob.participant.id) == (True, [bob.participant.id])
        # Muting again changes nothing; the list names Bob with his username.
        assert await mute(server, alice, bob.participant.id) == (False, [bob.participant.id])
        [entry] = await listed(server, alice)
        assert (entry.participant_id, entry.username) == (bob.participant.id, "Bobby")
        assert entry.created_at.seconds > 0

        # Every page size: Bob's messages are gone for Alice, yet her pages account for every seq.
        for limit in (1, 2, 5, 100):
            shown, accounted = await pages(server, alice, limit)
            assert shown == sorted(seqs["alice"] + seqs["host"]), limit
            last = (await server.history(alice)).last_seq
            assert accounted == set(range(1, last + 1)), limit
        # The host's pin is the room's: it stays on Alice's board, Bob's message and all.
        newest = await server.history(alice)
        assert [pin.message.seq for pin in newest.board.pins] == [bob_pinned]
        assert newest.board.pins[0].message.text == "bob 0"

        # Nobody else's view changes, and nobody else learns of the mute.
        for other in (bob, host):
            shown, _ = await pages(server, other, 100)
            assert shown == sorted(seqs["alice"] + seqs["bob"] + seqs["host"])
            assert await listed(server, other) == []
        # Resume is the room's log as it is: clients hide muted senders' messages by the list.
        resumed = await server.after(alice, 0)
        assert {m.sender_participant_id for m in resumed.messages} >= {bob.participant.id}

        assert await unmute(server, alice, bob.participant.id) == (True, [])
        assert await unmute(server, alice, bob.participant.id) == (False, [])
        shown, _ = await pages(server, alice, 3)
        assert shown == sorted(seqs["alice"] + seqs["bob"] + seqs["host"])


async def test_mutes_are_refused_for_oneself_strangers_and_past_the_cap(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, rooms_addr = rooms
    room, elsewhere = new_room(), new_room()
    alice = join(fake, room, "Alice")
    others = [join(fake, room, f"Other{n}") for n in range(3)]
    outsider = join(fake, elsewhere, "Outsider")
    async with messaging_server(database_url, redis_url, rooms_addr, **GENEROUS_RATE_LIMIT) as server:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mute(server, alice, alice.participant.id)
        assert failure(refused.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "cannot_mute_self")
        for stranger in (outsider.participant.id, "00000000-0000-0000-0000-000000000000"):
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await mute(server, alice, stranger)
            assert failure(missing.value)[:2] == (grpc.StatusCode.NOT_FOUND, "participant_not_found")
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await mute(server, alice, "")
        assert failure(malformed.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_participant_id")
        # A token for another room mutes nothing here.
        with pytest.raises(grpc.aio.AioRpcError) as wrong_room:
            await server.stub.MuteParticipant(
                messaging_pb2.MuteParticipantRequest(room_id=room, participant_id=others[0].participant.id),
                metadata=outsider.metadata,
                timeout=10,
            )
        assert wrong_room.value.code() == grpc.StatusCode.PERMISSION_DENIED

        monkeypatch.setattr(mutes, "MAX_MUTES", 2)
        for other in others[:2]:
            assert (await mute(server, alice, other.participant.id))[0]
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await mute(server, alice, others[2].participant.id)
        assert failure(full.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "too_many_mutes")
        # At the cap, muting who is muted already is still answered, and unmuting makes room.
        assert (await mute(server, alice, others[0].participant.id))[0] is False
        assert (await unmute(server, alice, others[0].participant.id))[0]
        assert (await mute(server, alice, others[2].participant.id))[0]
        assert {m.participant_id for m in await listed(server, alice)} == {
            others[1].participant.id,
            others[2].participant.id,
        }

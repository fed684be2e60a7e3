"""Messaging's participant lookups at rooms: those of one turn of the event loop go in one
GetParticipants call, in order, each answered as GetParticipant would answer it; a participant asked
for twice is looked up once; a rooms without GetParticipants is asked one participant at a time from
then on; rooms being away fails every lookup of the call."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.auth import Principal
from chatpop_common.errors import PermissionDenied, Unavailable
from chatpop_messaging.participants import ParticipantDirectory, ParticipantLookups


def _error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), code.name)


class FakeRooms:
    """Rooms knowing `known` participants ((room, id) → Participant); GetParticipants optional."""

    def __init__(self, known: dict[tuple[str, str], rooms_pb2.Participant], *, batches: bool = True) -> None:
        self.known = known
        self.batches = batches
        self.many: list[list[tuple[str, str]]] = []
        self.single: list[tuple[str, str]] = []
        self.down = False

    async def GetParticipants(self, request: rooms_pb2.GetParticipantsRequest, **_: Any) -> Any:
        if not self.batches:
            raise _error(grpc.StatusCode.UNIMPLEMENTED)
        if self.down:
            raise _error(grpc.StatusCode.UNAVAILABLE)
        keys = [(lookup.room_id, lookup.participant_id) for lookup in request.lookups]
        self.many.append(keys)
        await asyncio.sleep(0)
        results = [
            rooms_pb2.ParticipantLookup(participant=self.known[key])
            if key in self.known
            else rooms_pb2.ParticipantLookup(error_code="participant_not_found")
            for key in keys
        ]
        return rooms_pb2.GetParticipantsResponse(results=results)

    async def GetParticipant(self, request: rooms_pb2.GetParticipantRequest, **_: Any) -> Any:
        key = (request.room_id, request.participant_id)
        self.single.append(key)
        if self.down:
            raise _error(grpc.StatusCode.UNAVAILABLE)
        if key not in self.known:
            raise _error(grpc.StatusCode.NOT_FOUND)
        return rooms_pb2.GetParticipantResponse(participant=self.known[key])


def _people(count: int) -> dict[tuple[str, str], rooms_pb2.Participant]:
    return {
        (f"room-{n % 3}", f"p-{n}"): rooms_pb2.Participant(id=f"p-{n}", room_id=f"room-{n % 3}", version=1)
        for n in range(count)
    }


def _directory(fake: FakeRooms) -> ParticipantDirectory:
    directory = ParticipantDirectory(grpc.aio.insecure_channel("127.0.0.1:9"), ttl=30)
    directory._stub = fake  # type: ignore[assignment]
    directory._lookups = ParticipantLookups(fake)  # type: ignore[arg-type]
    return directory


def _writer(room: str, participant: str) -> Principal:
    return Principal(
        subject="", kind="", token_type="room", room_id=room, participant_id=participant, version=1
    )


async def test_writers_looked_up_together_go_in_one_call_in_order() -> None:
    people = _people(7)
    fake = FakeRooms(people)
    directory = _directory(fake)
    keys = list(people)
    found = await asyncio.gather(*(directory.authorize_writer(_writer(*key), ()) for key in keys))
    assert [(p.room_id, p.id) for p in found] == keys
    assert fake.many == [keys] and fake.single == []
    # Cached now: no more calls.
    await asyncio.gather(*(directory.authorize_writer(_writer(*key), ()) for key in keys))
    assert len(fake.many) == 1
    await directory.close()


async def test_one_call_answers_each_lookup_on_its_own() -> None:
    people = _people(3)
    fake = FakeRooms(people)
    directory = _directory(fake)
    stranger = ("room-0", "nobody")
    results = await asyncio.gather(
        *(directory.authorize_writer(_writer(*key), ()) for key in [*people, stranger, ("room-1", "p-1")]),
        return_exceptions=True,
    )
    assert [r.id for r in results[:3] if isinstance(r, rooms_pb2.Participant)] == ["p-0", "p-1", "p-2"]
    assert isinstance(results[3], PermissionDenied) and results[3].code == "not_a_participant"
    assert isinstance(results[4], rooms_pb2.Participant) and results[4].id == "p-1"
    # The participant asked for twice was looked up once.
    assert fake.many == [[*people, stranger]]
    await directory.close()


async def test_a_rooms_without_getparticipants_is_asked_one_at_a_time() -> None:
    people = _people(4)
    fake = FakeRooms(people, batches=False)
    lookups = ParticipantLookups(fake)  # type: ignore[arg-type]
    first = await asyncio.gather(*(lookups.get(*key) for key in list(people)[:2]))
    assert [p.id for p in first] == ["p-0", "p-1"]
    assert sorted(fake.single) == sorted(list(people)[:2])
    # Not asked again: the next lookups go one at a time from the start.
    fake.batches = True
    await asyncio.gather(*(lookups.get(*key) for key in list(people)[2:]))
    assert fake.many == [] and len(fake.single) == 4
    await lookups.close()


async def test_rooms_away_fails_every_lookup_of_the_call() -> None:
    fake = FakeRooms(_people(3))
    fake.down = True
    directory = _directory(fake)
    results = await asyncio.gather(
        *(directory.authorize_writer(_writer(*key), ()) for key in fake.known), return_exceptions=True
    )
    assert all(isinstance(r, Unavailable) and r.code == "rooms_unavailable" for r in results)
    await directory.close()


async def test_refreshes_due_one_after_another_share_a_call() -> None:
    people = _people(6)
    fake = FakeRooms(people)
    lookups = ParticipantLookups(fake)  # type: ignore[arg-type]
    keys = list(people)
    pending = []
    for key in keys[:5]:
        pending.append(asyncio.ensure_future(lookups.get(*key, background=True)))
        await asyncio.sleep(0.005)  # one send at a time, each in a turn of its own
    assert fake.many == [] and fake.single == []
    # A lookup someone waits for goes at once, and takes the waiting refreshes along.
    urgent = await lookups.get(*keys[5])
    assert urgent.id == "p-5"
    assert [p.id for p in await asyncio.gather(*pending)] == ["p-0", "p-1", "p-2", "p-3", "p-4"]
    assert fake.many == [keys[:6]]
    # Refreshes alone go after the gathering time, together.
    again = [lookups.get(*key, background=True) for key in keys[:3]]
    assert len(await asyncio.gather(*again)) == 3
    assert fake.many[1:] == [keys[:3]]
    await lookups.close()


@pytest.mark.parametrize(("count", "many", "single"), [(1001, [1000], 1), (2500, [1000, 1000, 500], 0)])
async def test_more_lookups_than_one_call_holds_are_split(count: int, many: list[int], single: int) -> None:
    people = _people(count)
    fake = FakeRooms(people)
    lookups = ParticipantLookups(fake)  # type: ignore[arg-type]
    found = await asyncio.gather(*(lookups.get(*key) for key in people))
    assert [p.id for p in found] == [key[1] for key in people]
    # (A lookup alone is a GetParticipant.)
    assert [len(call) for call in fake.many] == many and len(fake.single) == single
    await lookups.close()

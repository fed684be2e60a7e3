"""Messaging's caches of what rooms says (room policies, participants) refreshed ahead of expiry.

An entry past half its TTL is still served at once and one background lookup replaces it, so a busy
room's sends never wait for rooms; an unused entry still expires at its TTL; a lookup that started
before an announced update (or a ban) never brings the older state back; a failed refresh leaves the
entry until it expires.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.auth import Principal
from chatpop_messaging import participants as participants_module
from chatpop_messaging import policies as policies_module
from chatpop_messaging.participants import ParticipantDirectory, ParticipantLookups
from chatpop_messaging.policies import RoomPolicies


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    clock = Clock()
    monkeypatch.setattr(policies_module.time, "monotonic", clock)
    monkeypatch.setattr(participants_module.time, "monotonic", clock)
    # (The event loop's clock stands still too: refreshes do not wait for others here.)
    monkeypatch.setattr(participants_module, "REFRESH_GATHER", 0.0)
    yield clock


class Unreachable(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")


class FakeRooms:
    """GetRoom / GetParticipant answering from `answers` in turn; `gate`, when set, holds each answer."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def _answer(self) -> Any:
        self.calls += 1
        answer = self.answers[min(self.calls, len(self.answers)) - 1]
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def GetRoom(self, request: rooms_pb2.GetRoomRequest, **_: Any) -> rooms_pb2.GetRoomResponse:
        return rooms_pb2.GetRoomResponse(room=await self._answer())

    async def GetParticipant(
        self, request: rooms_pb2.GetParticipantRequest, **_: Any
    ) -> rooms_pb2.GetParticipantResponse:
        return rooms_pb2.GetParticipantResponse(participant=await self._answer())


def room(closed: bool = False, slow: int = 0) -> rooms_pb2.Room:
    return rooms_pb2.Room(id="room-1", closed=closed, slow_mode_seconds=slow)


def policies_with(fake: FakeRooms, ttl: float = 2.0) -> RoomPolicies:
    policies = RoomPolicies(grpc.aio.insecure_channel("127.0.0.1:9"), ttl=ttl)
    policies._stub = fake  # type: ignore[assignment]
    return policies


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_policy_past_half_its_ttl_is_served_and_refreshed_in_the_background(clock: Clock) -> None:
    fake = FakeRooms([room(slow=0), room(slow=30)])
    policies = policies_with(fake)
    assert (await policies.get("room-1")).slow_mode_seconds == 0
    clock.now += 0.9
    assert policies.cached("room-1") is not None
    await settle()
    assert fake.calls == 1  # fresh: no lookup
    clock.now += 0.2  # 1.1 s of 2: past half
    served = policies.cached("room-1")
    assert served is not None and served.slow_mode_seconds == 0  # at once, the entry held
    assert policies.cached("room-1") is not None
    await settle()
    assert fake.calls == 2  # one refresh, however often it was used meanwhile
    clock.now += 1.5  # past the first entry's expiry, within the refreshed one's
    refreshed = policies.cached("room-1")
    assert refreshed is not None and refreshed.slow_mode_seconds == 30
    await policies.close()


async def test_an_unused_policy_still_expires_at_its_ttl(clock: Clock) -> None:
    fake = FakeRooms([room(), room(closed=True)])
    policies = policies_with(fake)
    await policies.get("room-1")
    clock.now += 2.01
    assert policies.cached("room-1") is None
    await settle()
    assert fake.calls == 1  # expired entries are not refreshed: the next use waits for its lookup
    assert (await policies.get("room-1")).closed
    assert fake.calls == 2
    await policies.close()


async def test_a_refresh_started_before_an_announced_update_does_not_undo_it(clock: Clock) -> None:
    fake = FakeRooms([room(closed=False), room(closed=False)])
    policies = policies_with(fake)
    await policies.get("room-1")
    fake.gate = asyncio.Event()
    clock.now += 1.5
    assert policies.cached("room-1") is not None  # starts the refresh, held at rooms
    await settle()
    assert fake.calls == 2
    policies.learn(room(closed=True))  # the host closed the room meanwhile
    fake.gate.set()
    await settle()
    known = policies.cached("room-1")
    assert known is not None and known.closed
    await policies.close()


async def test_a_failed_refresh_keeps_the_entry_until_it_expires(clock: Clock) -> None:
    fake = FakeRooms([room(slow=5), Unreachable(), room(slow=7)])
    policies = policies_with(fake)
    await policies.get("room-1")
    clock.now += 1.5
    assert policies.cached("room-1") is not None
    await settle()
    assert fake.calls == 2
    clock.now += 0.4
    still = policies.cached("room-1")  # within the TTL: served, and refreshed again
    assert still is not None and still.slow_mode_seconds == 5
    await settle()
    assert fake.calls == 3
    clock.now += 1.0
    assert (await policies.get("room-1")).slow_mode_seconds == 7
    await policies.close()


def writer(version: int = 1) -> Principal:
    return Principal(
        subject="", kind="", token_type="room", room_id="room-1", participant_id="p-1", version=version
    )


def participant(**fields: Any) -> rooms_pb2.Participant:
    return rooms_pb2.Participant(id="p-1", room_id="room-1", version=1, **fields)


def directory_with(fake: FakeRooms, ttl: float = 30.0) -> ParticipantDirectory:
    directory = ParticipantDirectory(grpc.aio.insecure_channel("127.0.0.1:9"), ttl=ttl)
    directory._stub = fake  # type: ignore[assignment]
    directory._lookups = ParticipantLookups(fake)  # type: ignore[arg-type]
    return directory


async def test_a_writer_past_half_its_ttl_is_refreshed_in_the_background(clock: Clock) -> None:
    fake = FakeRooms([participant(), participant(banned=True)])
    directory = directory_with(fake)
    await directory.authorize_writer(writer(), ())
    clock.now += 16
    assert directory.cached(writer()) is not None  # served at once
    await settle()
    assert fake.calls == 2
    refreshed = directory.cached(writer())
    assert refreshed is not None and refreshed.banned  # the send path refuses it from now on
    clock.now += 31
    assert directory.cached(writer()) is None
    await directory.close()


async def test_a_refresh_started_before_a_ban_does_not_bring_the_writer_back(clock: Clock) -> None:
    fake = FakeRooms([participant(), participant()])
    directory = directory_with(fake)
    await directory.authorize_writer(writer(), ())
    fake.gate = asyncio.Event()
    clock.now += 20
    assert directory.cached(writer()) is not None
    await settle()
    assert fake.calls == 2
    directory.forget("room-1", "p-1")  # banned while the refresh was at rooms
    fake.gate.set()
    await settle()
    assert directory.cached(writer()) is None  # the next send asks rooms
    await directory.close()


async def test_an_entry_older_than_the_token_is_not_served_nor_refreshed(clock: Clock) -> None:
    fake = FakeRooms([participant()])
    directory = directory_with(fake)
    await directory.authorize_writer(writer(), ())
    clock.now += 20
    assert directory.cached(writer(version=2)) is None
    await settle()
    assert fake.calls == 1
    await directory.close()


async def test_a_writer_whose_refresh_fails_keeps_writing_until_the_entry_expires(clock: Clock) -> None:
    """Rooms restarting while an entry is refreshed: the entry (still within its TTL) keeps answering."""
    fake = FakeRooms([participant(), Unreachable(), participant()])
    directory = directory_with(fake)
    await directory.authorize_writer(writer(), ())
    clock.now += 20
    assert directory.cached(writer()) is not None
    await settle()
    assert fake.calls == 2
    assert directory.cached(writer()) is not None  # the failed refresh left it; this use retries
    await settle()
    assert fake.calls == 3
    clock.now += 11  # past the first entry's TTL, within the refreshed one's
    assert directory.cached(writer()) is not None
    await directory.close()


async def test_a_refresh_that_finds_the_writer_gone_drops_the_entry(clock: Clock) -> None:
    gone = grpc.aio.AioRpcError(
        grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), "no such participant"
    )
    fake = FakeRooms([participant(), gone])
    directory = directory_with(fake)
    await directory.authorize_writer(writer(), ())
    clock.now += 20
    assert directory.cached(writer()) is not None
    await settle()
    assert directory.cached(writer()) is None  # the next send asks rooms and is refused
    await directory.close()

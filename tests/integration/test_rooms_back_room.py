"""The Back Room over gRPC: a host's paid seats and the separate room where host and holders meet.

The real rooms and identity servers run in-process on free ports against the session's Postgres and
Redis. Seats are granted as payments grants them, with payments' own service credential from identity.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from test_rooms_service import (
    Caller,
    Platform,
    _create,
    _error,
    _join,
    identity_server,
    rooms_serving,
    signing_key,
)

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.auth import Principal, TokenVerifier
from chatpop_common.clients import bearer, identity_key_cache
from chatpop_common.service_auth import ServiceCredentials
from tests.integration.identity_server import SERVICE_TOKEN_SECRET

__all__ = ["signing_key"]

PASSWORD = "correct horse battery staple"


@dataclass
class BackRoomPlatform(Platform):
    rooms_addr: str = ""
    payments_md: Sequence[tuple[str, str]] = ()
    messaging_md: Sequence[tuple[str, str]] = ()

    async def account(self) -> Caller:
        response = await self.identity.Register(
            identity_pb2.RegisterRequest(email=f"{uuid.uuid4().hex}@example.com", password=PASSWORD),
            timeout=10,
        )
        return Caller(response.identity.id, response.tokens.access_token)


@pytest_asyncio.fixture(scope="module")
async def platform(database_url: str, redis_url: str, signing_key: Path) -> AsyncIterator[BackRoomPlatform]:
    async with (
        identity_server(database_url, redis_url, signing_key) as identity_addr,
        grpc.aio.insecure_channel(identity_addr) as identity_channel,
        rooms_serving(database_url, redis_url, identity_addr) as rooms_addr,
        grpc.aio.insecure_channel(rooms_addr) as rooms_channel,
    ):
        identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
        payments = ServiceCredentials(identity, "payments", SERVICE_TOKEN_SECRET)
        messaging = ServiceCredentials(identity, "messaging", SERVICE_TOKEN_SECRET)
        yield BackRoomPlatform(
            database_url=database_url,
            redis_url=redis_url,
            identity_addr=identity_addr,
            identity=identity,  # type: ignore[arg-type]
            rooms=rooms_pb2_grpc.RoomsServiceStub(rooms_channel),  # type: ignore[arg-type]
            verifier=TokenVerifier(identity_key_cache(identity_channel)),
            rooms_addr=rooms_addr,
            payments_md=await payments.metadata(),
            messaging_md=await messaging.metadata(),
        )


def _settings(**fields: Any) -> rooms_pb2.BackRoomSettings:
    return rooms_pb2.BackRoomSettings(**fields)


async def _back_room_room(platform: BackRoomPlatform, host: Caller, *, seats: int = 5) -> rooms_pb2.Room:
    return await _create(
        platform, host, back_room=_settings(enabled=True, seat_price_cents=500, seat_limit=seats)
    )


@dataclass
class Member:
    caller: Caller
    participant: rooms_pb2.Participant
    room_token: str

    @property
    def md(self) -> Any:
        return bearer(self.room_token)


async def _member(platform: BackRoomPlatform, room: rooms_pb2.Room, caller: Caller | None = None) -> Member:
    caller = caller or await platform.anonymous()
    joined = await _join(platform, caller, room.code)
    return Member(caller, joined.participant, joined.room_token)


async def _grant(
    platform: BackRoomPlatform,
    room: rooms_pb2.Room,
    member: Member,
    order_id: str | None = None,
    *,
    stub: rooms_pb2_grpc.RoomsServiceAsyncStub | None = None,
) -> rooms_pb2.GrantSeatResponse:
    response: rooms_pb2.GrantSeatResponse = await (stub or platform.rooms).GrantSeat(
        rooms_pb2.GrantSeatRequest(
            order_id=order_id or f"ord_{uuid.uuid4().hex}",
            room_id=room.id,
            participant_id=member.participant.id,
            price_cents=500,
        ),
        metadata=platform.payments_md,
        timeout=10,
    )
    return response


async def _enter(
    platform: BackRoomPlatform, room: rooms_pb2.Room, md: Any
) -> rooms_pb2.EnterBackRoomResponse:
    response: rooms_pb2.EnterBackRoomResponse = await platform.rooms.EnterBackRoom(
        rooms_pb2.EnterBackRoomRequest(room_id=room.id), metadata=md, timeout=10
    )
    return response


async def _seats(platform: BackRoomPlatform, room: rooms_pb2.Room, md: Any) -> rooms_pb2.ListSeatsResponse:
    response: rooms_pb2.ListSeatsResponse = await platform.rooms.ListSeats(
        rooms_pb2.ListSeatsRequest(room_id=room.id), metadata=md, timeout=10
    )
    return response


async def _participant(
    platform: BackRoomPlatform, room_id: str, participant_id: str
) -> rooms_pb2.Participant:
    request = rooms_pb2.GetParticipantRequest(room_id=room_id, participant_id=participant_id)
    response = await platform.rooms.GetParticipant(request, timeout=5)
    # Looked up among others, the same answer (seat_removed included).
    many = await platform.rooms.GetParticipants(
        rooms_pb2.GetParticipantsRequest(
            lookups=[
                rooms_pb2.GetParticipantRequest(room_id=room_id, participant_id=str(uuid.uuid4())),
                request,
            ]
        ),
        timeout=5,
    )
    assert many.results[1].participant == response.participant
    return response.participant


async def _principal(platform: BackRoomPlatform, token: str) -> Principal:
    return await platform.verifier.verify(token)


# --- settings ----------------------------------------------------------------------------------


async def test_a_host_opens_a_back_room_with_its_own_room_and_code(platform: BackRoomPlatform) -> None:
    host = await platform.account()
    room = await _back_room_room(platform, host, seats=3)
    back = room.back_room
    assert (back.enabled, back.seat_price_cents, back.seat_limit, back.seats_taken, back.full) == (
        True,
        500,
        3,
        0,
        False,
    )
    # The host is told the Back Room's id; anyone else reading the room is not.
    assert back.back_room_id
    public = (await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(code=room.code), timeout=5)).room
    assert public.back_room.enabled and public.back_room.seat_limit == 3
    assert public.back_room.back_room_id == ""
    guest = await platform.anonymous()
    as_guest = await platform.rooms.GetRoom(
        rooms_pb2.GetRoomRequest(code=room.code), metadata=guest.md, timeout=5
    )
    assert as_guest.room.back_room.back_room_id == ""

    # The Back Room is a room of its own: same host, the main room as parent, another code.
    inner = (
        await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(room_id=back.back_room_id), timeout=5)
    ).room
    assert inner.parent_room_id == room.id
    assert inner.host_id == room.host_id == host.subject
    assert inner.code and inner.code != room.code
    assert not inner.HasField("back_room")
    assert room.parent_room_id == ""

    # Its code is no room at all to anyone but its members, and JoinRoom never admits anyone, host included.
    for md in ((), guest.md):
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(code=inner.code), metadata=md, timeout=5)
        assert _error(hidden)[:2] == (grpc.StatusCode.NOT_FOUND, "room_not_found")
    for caller in (guest, host):
        with pytest.raises(grpc.aio.AioRpcError) as joined:
            await _join(platform, caller, inner.code)
        assert _error(joined)[:2] == (grpc.StatusCode.NOT_FOUND, "room_not_found")
    as_host = await platform.rooms.GetRoom(
        rooms_pb2.GetRoomRequest(code=inner.code), metadata=host.md, timeout=5
    )
    assert as_host.room.id == back.back_room_id

    # "My rooms" lists the main room only: the Back Room is reached through it.
    mine = await platform.rooms.ListMyRooms(rooms_pb2.ListMyRoomsRequest(), metadata=host.md, timeout=5)
    ids = [entry.room.id for entry in mine.rooms]
    assert room.id in ids and back.back_room_id not in ids


async def test_enabling_later_creates_the_back_room_once(platform: BackRoomPlatform) -> None:
    host = await platform.account()
    room = await _create(platform, host)
    assert not room.HasField("back_room")
    with pytest.raises(grpc.aio.AioRpcError) as incomplete:
        await platform.rooms.UpdateRoom(
            rooms_pb2.UpdateRoomRequest(room_id=room.id, back_room=_settings(enabled=True)),
            metadata=host.md,
            timeout=5,
        )
    assert _error(incomplete)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "back_room_settings_required")

    updated = await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(
            room_id=room.id, back_room=_settings(enabled=True, seat_price_cents=50, seat_limit=1)
        ),
        metadata=host.md,
        timeout=5,
    )
    first_id = updated.room.back_room.back_room_id
    assert first_id and updated.room.back_room.seat_price_cents == 50
    off = await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(room_id=room.id, back_room=_settings(enabled=False)),
        metadata=host.md,
        timeout=5,
    )
    assert not off.room.back_room.enabled and off.room.back_room.back_room_id == first_id
    again = await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(room_id=room.id, back_room=_settings(enabled=True, seat_limit=1000)),
        metadata=host.md,
        timeout=5,
    )
    assert again.room.back_room.enabled and again.room.back_room.back_room_id == first_id
    assert (again.room.back_room.seat_price_cents, again.room.back_room.seat_limit) == (50, 1000)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"enabled": True, "seat_price_cents": 49, "seat_limit": 5}, "invalid_seat_price"),
        ({"enabled": True, "seat_price_cents": 100_001, "seat_limit": 5}, "invalid_seat_price"),
        ({"enabled": True, "seat_price_cents": 500, "seat_limit": 0}, "invalid_seat_limit"),
        ({"enabled": True, "seat_price_cents": 500, "seat_limit": 1001}, "invalid_seat_limit"),
        ({"enabled": True, "seat_limit": 5}, "back_room_settings_required"),
    ],
)
async def test_bad_back_room_settings_are_refused(
    platform: BackRoomPlatform, fields: dict[str, Any], code: str
) -> None:
    host = await platform.account()
    with pytest.raises(grpc.aio.AioRpcError) as created:
        await _create(platform, host, back_room=_settings(**fields))
    assert _error(created)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code)
    room = await _create(platform, host, description="unchanged")
    with pytest.raises(grpc.aio.AioRpcError) as updated:
        await platform.rooms.UpdateRoom(
            rooms_pb2.UpdateRoomRequest(
                room_id=room.id, description="changed", back_room=_settings(**fields)
            ),
            metadata=host.md,
            timeout=5,
        )
    assert _error(updated)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code)
    fetched = await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(room_id=room.id), timeout=5)
    assert fetched.room.description == "unchanged" and not fetched.room.HasField("back_room")


async def test_anonymous_hosts_cannot_sell_seats(platform: BackRoomPlatform) -> None:
    host = await platform.anonymous()
    with pytest.raises(grpc.aio.AioRpcError) as created:
        await _create(platform, host, back_room=_settings(enabled=True, seat_price_cents=500, seat_limit=5))
    assert _error(created)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "anonymous_host")
    room = await _create(platform, host)
    with pytest.raises(grpc.aio.AioRpcError) as updated:
        await platform.rooms.UpdateRoom(
            rooms_pb2.UpdateRoomRequest(room_id=room.id, back_room=_settings(seat_price_cents=500)),
            metadata=host.md,
            timeout=5,
        )
    assert _error(updated)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "anonymous_host")


async def test_the_limit_shrinks_no_lower_than_the_seats_taken_and_prices_change_for_new_buyers(
    platform: BackRoomPlatform,
) -> None:
    host = await platform.account()
    room = await _back_room_room(platform, host, seats=5)
    buyers = [await _member(platform, room) for _ in range(3)]
    for buyer in buyers:
        assert (await _grant(platform, room, buyer)).outcome == rooms_pb2.SEAT_OUTCOME_GRANTED

    with pytest.raises(grpc.aio.AioRpcError) as shrunk:
        await platform.rooms.UpdateRoom(
            rooms_pb2.UpdateRoomRequest(room_id=room.id, back_room=_settings(seat_limit=2)),
            metadata=host.md,
            timeout=5,
        )
    assert _error(shrunk)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "seat_limit_below_taken")
    exact = await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(room_id=room.id, back_room=_settings(seat_limit=3, seat_price_cents=900)),
        metadata=host.md,
        timeout=5,
    )
    assert (exact.room.back_room.seat_limit, exact.room.back_room.seats_taken, exact.room.back_room.full) == (
        3,
        3,
        True,
    )
    # The holders keep the seats they paid for, at the price they paid.
    listed = await _seats(platform, room, host.md)
    assert [seat.participant_id for seat in listed.seats] == [buyer.participant.id for buyer in buyers]
    assert {seat.price_cents for seat in listed.seats} == {500}
    assert listed.back_room.seat_price_cents == 900

    late = await _member(platform, room)
    assert (await _grant(platform, room, late)).outcome == rooms_pb2.SEAT_OUTCOME_FULL


# --- granting seats ------------------------------------------------------------------------------


async def test_concurrent_payments_for_the_last_seats_never_oversell(platform: BackRoomPlatform) -> None:
    host = await platform.account()
    room = await _back_room_room(platform, host, seats=5)
    buyers = [await _member(platform, room) for _ in range(20)]
    channels = [grpc.aio.insecure_channel(platform.rooms_addr) for _ in range(4)]
    try:
        stubs = [rooms_pb2_grpc.RoomsServiceStub(channel) for channel in channels]
        outcomes = await asyncio.gather(
            *(
                _grant(platform, room, buyer, stub=stubs[index % len(stubs)])  # type: ignore[arg-type]
                for index, buyer in enumerate(buyers)
            )
        )
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    granted = [o for o in outcomes if o.outcome == rooms_pb2.SEAT_OUTCOME_GRANTED]
    full = [o for o in outcomes if o.outcome == rooms_pb2.SEAT_OUTCOME_FULL]
    assert (len(granted), len(full)) == (5, 15)
    assert all(o.created for o in outcomes)
    listed = await _seats(platform, room, host.md)
    assert sorted(seat.participant_id for seat in listed.seats) == sorted(
        o.seat.participant_id for o in granted
    )
    assert (listed.back_room.seats_taken, listed.back_room.full) == (5, True)
    public = (await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(room_id=room.id), timeout=5)).room
    assert (public.back_room.seats_taken, public.back_room.full) == (5, True)


async def test_a_retried_order_answers_its_first_outcome(platform: BackRoomPlatform) -> None:
    host = await platform.account()
    room = await _back_room_room(platform, host, seats=1)
    buyer, other = await _member(platform, room), await _member(platform, room)
    first = await _grant(platform, room, buyer, "ord_retry_granted_" + uuid.uuid4().hex)
    assert (first.outcome, first.created, first.seat.participant_id) == (
        rooms_pb2.SEAT_OUTCOME_GRANTED,
        True,
        buyer.participant.id,
    )
    again = await asyncio.gather(*(_grant(platform, room, buyer, first.seat.order_id) for _ in range(3)))
    for retry in again:
        assert (retry.outcome, retry.created) == (rooms_pb2.SEAT_OUTCOME_GRANTED, False)
        assert retry.seat == first.seat
    # Another order of the same holder: already seated (payments refunds it).
    second = await _grant(platform, room, buyer)
    assert (second.outcome, second.created) == (rooms_pb2.SEAT_OUTCOME_ALREADY_HOLDER, True)
    assert not second.HasField("seat")

    full_order = "ord_retry_full_" + uuid.uuid4().hex
    assert (await _grant(platform, room, other, full_order)).outcome == rooms_pb2.SEAT_OUTCOME_FULL
    # A seat frees up later, yet that order stays what it was decided to be (it is being refunded).
    await platform.rooms.RemoveSeat(
        rooms_pb2.RemoveSeatRequest(room_id=room.id, participant_id=buyer.participant.id),
        metadata=host.md,
        timeout=5,
    )
    retried = await _grant(platform, room, other, full_order)
    assert (retried.outcome, retried.created) == (rooms_pb2.SEAT_OUTCOME_FULL, False)
    assert (await _seats(platform, room, host.md)).back_room.seats_taken == 0
    assert (await _grant(platform, room, other)).outcome == rooms_pb2.SEAT_OUTCOME_GRANTED


async def test_only_payments_grants_seats_and_closed_rooms_sell_none(platform: BackRoomPlatform) -> None:
    host = await platform.account()
    room = await _back_room_room(platform, host)
    buyer = await _member(platform, room)
    request = rooms_pb2.GrantSeatRequest(
        order_id="ord_x" + uuid.uuid4().hex,
        room_id=room.id,
        participant_id=buyer.participant.id,
        price_cents=500,
    )
    for md in (buyer.md, host.md, buyer.caller.md, platform.messaging_md):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await platform.rooms.GrantSeat(request, metadata=md, timeout=5)
        assert _error(refused)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "forbidden")
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await platform.rooms.GrantSeat(request, timeout=5)
    assert _error(anonymous)[0] == grpc.StatusCode.UNAUTHENTICATED

    # The host's own seat is the host's chair.
    host_member = await _member(platform, room, host)
    assert (await _grant(platform, room, host_member)).outcome == rooms_pb2.SEAT_OUTCOME_ALREADY_HOLDER
    plain = await _create(platform, host)
    plain_member = await _member(platform, plain)
    assert (await _grant(platform, plain, plain_member)).outcome == rooms_pb2.SEAT_OUTCOME_UNAVAILABLE
    await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(room_id=room.id, back_room=_settings(enabled=False)),
        metadata=host.md,
        timeout=5,
    )
    assert (await _grant(platform, room, buyer)).outcome == rooms_pb2.SEAT_OUTCOME_UNAVAILABLE


# --- entering, removing, banning -----------------------------------------------------------------


async def test_the_host_and_holders_enter_and_nobody_else(platform: BackRoomPlatform) -> None:
    host = await platform.account()
    room = await _back_room_room(platform, host)
    host_member = await _member(platform, room, host)
    holder, stranger = await _member(platform, room), await _member(platform, room)
    await _grant(platform, room, holder)

    entered = await _enter(platform, room, holder.md)
    assert entered.back_room.parent_room_id == room.id and entered.back_room.id == room.back_room.back_room_id
    assert entered.participant.room_id == entered.back_room.id
    assert entered.participant.username == holder.participant.username
    assert entered.participant.subject == holder.caller.subject and not entered.participant.is_host
    token = await _principal(platform, entered.room_token)
    assert (token.room_id, token.participant_id) == (entered.back_room.id, entered.participant.id)
    # Entering again is the same participant with a fresh token.
    assert (await _enter(platform, room, holder.md)).participant.id == entered.participant.id

    hosted = await _enter(platform, room, host_member.md)
    assert hosted.participant.is_host and hosted.participant.username == host_member.participant.username
    # Members read the Back Room by its code; its seats are listed for the host and the holders.
    for md in (host.md, holder.caller.md, bearer(entered.room_token)):
        found = await platform.rooms.GetRoom(
            rooms_pb2.GetRoomRequest(code=entered.back_room.code), metadata=md, timeout=5
        )
        assert found.room.id == entered.back_room.id
    for md in (host.md, holder.md):
        assert [s.username for s in (await _seats(platform, room, md)).seats] == [holder.participant.username]

    with pytest.raises(grpc.aio.AioRpcError) as no_seat:
        await _enter(platform, room, stranger.md)
    assert _error(no_seat)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "no_seat")
    with pytest.raises(grpc.aio.AioRpcError) as no_list:
        await _seats(platform, room, stranger.md)
    assert _error(no_list)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "no_seat")
    with pytest.raises(grpc.aio.AioRpcError) as access_token:
        await _enter(platform, room, holder.caller.md)
    assert _error(access_token)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "wrong_room")
    # A Back Room token is no main-room token: it enters nothing.
    with pytest.raises(grpc.aio.AioRpcError) as inner_token:
        await _enter(platform, room, bearer(entered.room_token))
    assert _error(inner_token)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "wrong_room")
    plain = await _create(platform, host)
    plain_member = await _member(platform, plain, host)
    with pytest.raises(grpc.aio.AioRpcError) as none:
        await _enter(platform, plain, plain_member.md)
    assert _error(none)[:2] == (grpc.StatusCode.NOT_FOUND, "no_back_room")
    # Another room's holder gets nowhere with that seat here.
    other_room = await _back_room_room(platform, host)
    other_holder = await _member(platform, other_room, holder.caller)
    with pytest.raises(grpc.aio.AioRpcError) as elsewhere:
        await _enter(platform, other_room, other_holder.md)
    assert _error(elsewhere)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "no_seat")


async def test_a_removed_holder_loses_the_seat_and_every_back_room_token(platform: BackRoomPlatform) -> None:
    host = await platform.account()
    room = await _back_room_room(platform, host, seats=2)
    holder = await _member(platform, room)
    granted = await _grant(platform, room, holder)
    entered = await _enter(platform, room, holder.md)
    back_id, back_participant = entered.back_room.id, entered.participant.id
    before = await _participant(platform, back_id, back_participant)
    assert not before.seat_removed

    with pytest.raises(grpc.aio.AioRpcError) as not_host:
        await platform.rooms.RemoveSeat(
            rooms_pb2.RemoveSeatRequest(room_id=room.id, participant_id=holder.participant.id),
            metadata=holder.md,
            timeout=5,
        )
    assert _error(not_host)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "not_host")

    removed = await platform.rooms.RemoveSeat(
        rooms_pb2.RemoveSeatRequest(room_id=room.id, participant_id=holder.participant.id, refund=True),
        metadata=host.md,
        timeout=5,
    )
    assert (removed.changed, removed.refund, removed.back_room_participant_id) == (
        True,
        True,
        back_participant,
    )
    assert removed.seat.order_id == granted.seat.order_id
    assert (removed.back_room.seats_taken, removed.back_room.full) == (0, False)

    # Every Back Room token issued before is revoked, and rooms says why.
    after = await _participant(platform, back_id, back_participant)
    token = await _principal(platform, entered.room_token)
    assert after.seat_removed and after.version > token.version == before.version
    # The main-room token still works in the main room, but no longer opens the Back Room.
    with pytest.raises(grpc.aio.AioRpcError) as no_seat:
        await _enter(platform, room, holder.md)
    assert _error(no_seat)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "no_seat")
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await platform.rooms.GetRoom(
            rooms_pb2.GetRoomRequest(code=entered.back_room.code), metadata=holder.caller.md, timeout=5
        )
    assert _error(hidden)[:2] == (grpc.StatusCode.NOT_FOUND, "room_not_found")
    assert (await _seats(platform, room, host.md)).seats == []

    again = await platform.rooms.RemoveSeat(
        rooms_pb2.RemoveSeatRequest(room_id=room.id, participant_id=holder.participant.id),
        metadata=host.md,
        timeout=5,
    )
    assert (again.changed, again.refund) == (False, True)

    # A new seat lets them back in, with a new token; the old one stays revoked.
    await _grant(platform, room, holder)
    back_again = await _enter(platform, room, holder.md)
    assert back_again.participant.id == back_participant
    now = await _participant(platform, back_id, back_participant)
    assert not now.seat_removed
    assert (await _principal(platform, back_again.room_token)).version == now.version > token.version


async def test_a_ban_in_the_main_room_takes_the_seat_without_refund(platform: BackRoomPlatform) -> None:
    host = await platform.account()
    room = await _back_room_room(platform, host, seats=2)
    holder = await _member(platform, room)
    await _grant(platform, room, holder)
    entered = await _enter(platform, room, holder.md)

    banned = await platform.rooms.BanParticipant(
        rooms_pb2.BanParticipantRequest(
            room_id=room.id, participant_id=holder.participant.id, tier=rooms_pb2.BAN_TIER_SESSION
        ),
        metadata=host.md,
        timeout=5,
    )
    assert (banned.back_room_id, banned.back_room_participant_id) == (
        entered.back_room.id,
        entered.participant.id,
    )
    listed = await _seats(platform, room, host.md)
    assert listed.seats == [] and listed.back_room.seats_taken == 0
    inside = await _participant(platform, entered.back_room.id, entered.participant.id)
    assert inside.banned and inside.seat_removed
    assert inside.version > (await _principal(platform, entered.room_token)).version
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _enter(platform, room, holder.md)
    assert _error(refused)[0] in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    # A payment that lands after the ban buys nothing (payments refunds it).
    assert (await _grant(platform, room, holder)).outcome == rooms_pb2.SEAT_OUTCOME_BANNED

    # Lifting the ban brings nobody back into the Back Room without a new seat.
    await platform.rooms.UnbanParticipant(
        rooms_pb2.UnbanParticipantRequest(room_id=room.id, ban_id=banned.ban.id), metadata=host.md, timeout=5
    )
    lifted = await _participant(platform, entered.back_room.id, entered.participant.id)
    assert not lifted.banned and lifted.seat_removed


async def test_closing_the_room_closes_its_back_room(platform: BackRoomPlatform) -> None:
    host = await platform.account()
    room = await _back_room_room(platform, host)
    holder = await _member(platform, room)
    await _grant(platform, room, holder)
    await _enter(platform, room, holder.md)
    closed = await platform.rooms.CloseRoom(
        rooms_pb2.CloseRoomRequest(room_id=room.id), metadata=host.md, timeout=5
    )
    assert closed.room.closed and closed.room.back_room.back_room_id == room.back_room.back_room_id
    inner = await platform.rooms.GetRoom(
        rooms_pb2.GetRoomRequest(room_id=room.back_room.back_room_id), timeout=5
    )
    assert inner.room.closed
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _enter(platform, room, holder.md)
    assert _error(refused)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "room_closed")
    # A payment landing after the close buys nothing (payments refunds it).
    assert (await _grant(platform, room, holder)).outcome == rooms_pb2.SEAT_OUTCOME_UNAVAILABLE

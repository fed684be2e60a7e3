"""Back Room seats paid in test mode through the whole platform (tests/integration/payments_platform.py):
the real identity, rooms, messaging and payments servers and the edge, in-process. A seat is priced
from the room's seat price, granted by rooms only once the payment succeeded, announced live on the
main room, refunded in full when rooms cannot grant it (no seat left, a seat held already, the Back
Room closed), and refunded by the host after a removal; every step is read back through the REST API,
rooms' and messaging's gRPC APIs and payments' tables.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from payments_platform import Member, Platform, key, running_platform
from test_messaging_service import Events
from test_rooms_service import signing_key

from chatpop.messaging.v1 import messaging_pb2
from chatpop.payments.v1 import payments_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.clients import bearer
from chatpop_common.errors import error_details

__all__ = ["signing_key"]

ORDERS = "/api/v1/rooms/{code}/orders"


@pytest_asyncio.fixture(scope="module")
async def platform(database_url: str, redis_url: str, signing_key: Path) -> AsyncIterator[Platform]:
    async with running_platform(database_url, redis_url, signing_key) as running:
        yield running


async def set_back_room(platform: Platform, host: str, room_id: str, **settings: Any) -> rooms_pb2.Room:
    """The host's Back Room settings, set at rooms (seat price, seat limit, on or off)."""
    answer = await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(room_id=room_id, back_room=rooms_pb2.BackRoomSettings(**settings)),
        metadata=bearer(host),
        timeout=10,
    )
    room: rooms_pb2.Room = answer.room
    return room


async def seat_room(
    platform: Platform, *, price: int = 700, seats: int = 3, onboard: bool = True
) -> tuple[str, dict[str, Any]]:
    """A registered host's room selling Back Room seats: (host token, room)."""
    host = await platform.account()
    room = await platform.room(host)
    if onboard:
        await platform.onboard_test_host(host)
    await set_back_room(platform, host, room["id"], enabled=True, seat_price_cents=price, seat_limit=seats)
    return host, room


async def buyer(platform: Platform, code: str) -> tuple[str, Member]:
    """An anonymous buyer in the room, from a network of their own (many buyers start sessions here)."""
    network = ".".join(str(b) for b in (10, *os.urandom(3)))
    body = await platform.call(
        "POST", "/api/v1/auth/anonymous", expect=201, headers={"X-Forwarded-For": network}
    )
    access = str(body["access_token"])
    return access, await platform.join(code, access)


async def seats_of(platform: Platform, host: str, room_id: str) -> rooms_pb2.ListSeatsResponse:
    seats: rooms_pb2.ListSeatsResponse = await platform.rooms.ListSeats(
        rooms_pb2.ListSeatsRequest(room_id=room_id), metadata=bearer(host), timeout=10
    )
    return seats


async def refused(platform: Platform, member: Member, **extra: Any) -> str:
    body = await platform.order(member, {"seat": {}}, expect=409, **extra)
    return str(body["error"]["code"])


async def refund_seat(
    platform: Platform, token: str, room_id: str, order_id: str
) -> payments_pb2.RefundSeatResponse:
    answer: payments_pb2.RefundSeatResponse = await platform.payments.RefundSeat(
        payments_pb2.RefundSeatRequest(room_id=room_id, order_id=order_id), metadata=bearer(token), timeout=10
    )
    return answer


async def refund_refused(platform: Platform, token: str, room_id: str, order_id: str) -> tuple[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await refund_seat(platform, token, room_id, order_id)
    return failed.value.code().name, error_details(failed.value)[0]


async def room_updates(events: Events, seats_taken: int) -> rooms_pb2.Room:
    """The first room update on the stream that says `seats_taken`."""
    while True:
        event = await events.next()
        assert isinstance(event, messaging_pb2.SubscribeResponse), f"the stream ended: {event!r}"
        if event.WhichOneof("event") != "signal" or event.signal.WhichOneof("kind") != "room_updated":
            continue
        room: rooms_pb2.Room = event.signal.room_updated.room
        if room.back_room.seats_taken == seats_taken:
            return room


async def test_a_seat_costs_the_rooms_price_and_is_granted_only_once_paid(platform: Platform) -> None:
    host, room = await seat_room(platform, price=700, seats=3)
    access, fan = await buyer(platform, room["code"])
    _, watcher = await buyer(platform, room["code"])
    events = Events(
        platform.messaging.Subscribe(
            messaging_pb2.SubscribeRequest(room_id=room["id"], after_seq=-1), metadata=bearer(watcher.token)
        )
    )
    try:
        order_key = key()
        created = await platform.order(fan, {"seat": {}}, idempotency_key=order_key)
        order = created["order"]
        assert created["client_secret"] == ""
        assert (order["kind"], order["state"], order["amount_cents"], order["fee_cents"]) == (
            "seat",
            "awaiting_payment",
            700,
            70,
        )
        assert (order["target_seq"], order["pin_id"], order["note"]) == (None, None, "")
        # A price never comes from the client, and a seat has nothing to choose.
        for body in ({"seat": {"price_cents": 1}}, {"seat": {}, "tip": {"amount_cents": 500}}):
            bad = await platform.order(fan, body, expect=422)
            assert bad["error"]["code"] == "invalid_request"

        # Nothing is granted before the payment succeeds, a declined card included.
        declined = await platform.test_confirm(order["id"], access, "decline")
        assert (declined["state"], declined["payment_error"]) == (
            "awaiting_payment",
            "Your card was declined.",
        )
        assert list((await seats_of(platform, host, room["id"])).seats) == []
        assert await platform.ledger(order["id"]) == []

        # A new price applies to later buyers only; the same key answers the first order.
        await set_back_room(platform, host, room["id"], seat_price_cents=900)
        again = await platform.order(fan, {"seat": {}}, expect=200, idempotency_key=order_key)
        assert (again["order"]["id"], again["order"]["amount_cents"]) == (order["id"], 700)

        paid = await platform.test_confirm(order["id"], fan.token)
        assert paid["state"] in ("paid", "fulfilled")
        done = await platform.settle(order["id"], access, "fulfilled")
        assert (done["fulfilled_seq"], done["refund_reason"]) == (None, "")
        seats = await seats_of(platform, host, room["id"])
        assert [(s.participant_id, s.order_id, s.price_cents) for s in seats.seats] == [
            (fan.participant_id, order["id"], 700)
        ]
        assert await platform.ledger(order["id"]) == [("charge", 700), ("fee", 70)]
        fulfil = await platform.delivered(f"fulfil:{order['id']}")
        assert fulfil["topic"] == "fulfil"

        # Everyone in the main room hears that a seat was taken, without asking.
        announced = await room_updates(events, 1)
        assert (announced.id, announced.back_room.seat_limit, announced.back_room.full) == (
            room["id"],
            3,
            False,
        )
        assert announced.back_room.seat_price_cents == 900
    finally:
        await events.close()

    # A holder cannot buy a second seat, nor the host one of their own.
    assert await refused(platform, fan) == "already_seated"
    host_member = await platform.join(room["code"], host)
    assert await refused(platform, host_member) == "already_seated"

    # The next buyer pays the new price.
    _, later = await buyer(platform, room["code"])
    assert (await platform.order(later, {"seat": {}}))["order"]["amount_cents"] == 900

    earnings = await platform.call("GET", "/api/v1/payments/earnings", expect=200, token=host)
    mine = next(r for r in earnings["rooms"] if r["room_id"] == room["id"])
    expected = {"gross_cents": 700, "fee_cents": 70, "net_cents": 630, "refunded_cents": 0, "count": 1}
    assert mine["seats"] == expected and earnings["seats"] == expected
    assert mine["total"] == expected and mine["pins"]["count"] == mine["tips"]["count"] == 0


async def test_a_seat_is_refused_at_order_time_when_it_could_not_be_had(platform: Platform) -> None:
    # No Back Room.
    host = await platform.account()
    plain = await platform.room(host)
    await platform.onboard_test_host(host)
    _, someone = await buyer(platform, plain["code"])
    assert await refused(platform, someone) == "back_room_unavailable"

    # A Back Room turned off.
    await set_back_room(platform, host, plain["id"], enabled=True, seat_price_cents=500, seat_limit=2)
    await set_back_room(platform, host, plain["id"], enabled=False)
    assert await refused(platform, someone) == "back_room_unavailable"

    # A host who cannot receive money.
    _, unpaid = await seat_room(platform, onboard=False)
    _, hopeful = await buyer(platform, unpaid["code"])
    assert await refused(platform, hopeful) == "payments_not_enabled"

    # Every seat taken.
    _, small = await seat_room(platform, price=500, seats=1)
    access, first = await buyer(platform, small["code"])
    order = (await platform.order(first, {"seat": {}}))["order"]
    await platform.test_confirm(order["id"], access)
    await platform.settle(order["id"], access, "fulfilled")
    _, late = await buyer(platform, small["code"])
    assert await refused(platform, late) == "seats_full"
    sales = await platform.sales(small["code"], late.token)
    assert sales["enabled"] is True

    # A closed room.
    closer, closing = await seat_room(platform)
    _, inside = await buyer(platform, closing["code"])
    await platform.rooms.CloseRoom(
        rooms_pb2.CloseRoomRequest(room_id=closing["id"]), metadata=bearer(closer), timeout=10
    )
    code = await platform.error(
        "POST",
        f"/api/v1/rooms/{closing['code']}/orders",
        expect=409,
        template=ORDERS,
        token=inside.token,
        json={"idempotency_key": key(), "seat": {}},
    )
    assert code == "room_closed"


async def test_twenty_payments_for_five_seats_grant_five_and_refund_fifteen_in_full(
    platform: Platform,
) -> None:
    host, room = await seat_room(platform, price=500, seats=5)
    buyers = [await buyer(platform, room["code"]) for _ in range(20)]
    # Every order is made while seats are left; the payments then land at once.
    created = [(await platform.order(member, {"seat": {}}))["order"] for _, member in buyers]
    await asyncio.gather(
        *(
            platform.test_confirm(order["id"], access)
            for order, (access, _) in zip(created, buyers, strict=True)
        )
    )
    settled = await asyncio.gather(
        *(
            platform.settle(order["id"], access, "fulfilled", "refunded")
            for order, (access, _) in zip(created, buyers, strict=True)
        )
    )
    granted = [order for order in settled if order["state"] == "fulfilled"]
    refunded = [order for order in settled if order["state"] == "refunded"]
    assert (len(granted), len(refunded)) == (5, 15)
    for order in refunded:
        assert order["refund_reason"] == "seats_full"
        assert "last seat in the Back Room was taken" in order["refund_message"]
        assert await platform.ledger(order["id"]) == [
            ("charge", 500),
            ("fee", 50),
            ("refund", 500),
            ("fee_refund", 50),
            ("transfer_reversal", 450),
        ]

    seats = await seats_of(platform, host, room["id"])
    assert sorted(s.order_id for s in seats.seats) == sorted(order["id"] for order in granted)
    assert (seats.back_room.seats_taken, seats.back_room.full) == (5, True)
    holders = {member.participant_id for _, member in buyers}
    assert {s.participant_id for s in seats.seats} <= holders

    # The ledger balances: what stays charged is five seats, and the platform keeps five fees.
    sums = await platform.pool.fetchrow(
        """
        SELECT coalesce(sum(e.amount_cents) FILTER (WHERE e.kind = 'charge'), 0)
             - coalesce(sum(e.amount_cents) FILTER (WHERE e.kind = 'refund'), 0) AS kept,
               coalesce(sum(e.amount_cents) FILTER (WHERE e.kind = 'fee'), 0)
             - coalesce(sum(e.amount_cents) FILTER (WHERE e.kind = 'fee_refund'), 0) AS fees,
               coalesce(sum(e.amount_cents) FILTER (WHERE e.kind = 'transfer_reversal'), 0) AS reversed
        FROM payments.ledger_entries e JOIN payments.orders o ON o.id = e.order_id
        WHERE o.room_id = $1
        """,
        uuid.UUID(room["id"]),
    )
    assert (sums["kept"], sums["fees"], sums["reversed"]) == (5 * 500, 5 * 50, 15 * 450)
    earnings = await platform.call("GET", "/api/v1/payments/earnings", expect=200, token=host)
    mine = next(r for r in earnings["rooms"] if r["room_id"] == room["id"])
    assert mine["seats"] == {
        "gross_cents": 2500,
        "fee_cents": 250,
        "net_cents": 2250,
        "refunded_cents": 7500,
        "count": 5,
    }


async def test_a_holder_who_pays_for_a_second_seat_is_refunded(platform: Platform) -> None:
    host, room = await seat_room(platform, seats=3)
    access, fan = await buyer(platform, room["code"])
    # Two orders made before either was paid (two tabs): both pass the check at order time.
    first = (await platform.order(fan, {"seat": {}}))["order"]
    second = (await platform.order(fan, {"seat": {}}))["order"]
    await platform.test_confirm(first["id"], access)
    assert (await platform.settle(first["id"], access, "fulfilled"))["state"] == "fulfilled"
    await platform.test_confirm(second["id"], access)
    twice = await platform.settle(second["id"], access, "refunded")
    assert twice["refund_reason"] == "already_seated"
    assert "already hold a seat" in twice["refund_message"]
    assert await platform.ledger(second["id"]) == [
        ("charge", 700),
        ("fee", 70),
        ("refund", 700),
        ("fee_refund", 70),
        ("transfer_reversal", 630),
    ]
    seats = await seats_of(platform, host, room["id"])
    assert [(s.participant_id, s.order_id) for s in seats.seats] == [(fan.participant_id, first["id"])]


async def test_a_payment_after_the_back_room_closed_is_refunded(platform: Platform) -> None:
    host, room = await seat_room(platform)
    access, fan = await buyer(platform, room["code"])
    order = (await platform.order(fan, {"seat": {}}))["order"]
    await set_back_room(platform, host, room["id"], enabled=False)
    await platform.test_confirm(order["id"], access)
    done = await platform.settle(order["id"], access, "refunded")
    assert done["refund_reason"] == "room_closed"
    assert done["refund_message"].startswith("The Back Room closed before your seat could be granted.")
    assert list((await seats_of(platform, host, room["id"])).seats) == []


async def test_the_host_refunds_a_seat_they_removed_once(platform: Platform) -> None:
    host, room = await seat_room(platform)
    access, fan = await buyer(platform, room["code"])
    order = (await platform.order(fan, {"seat": {}}))["order"]
    # An order not paid yet holds no seat and has nothing to refund.
    assert await refund_refused(platform, host, room["id"], order["id"]) == (
        "FAILED_PRECONDITION",
        "not_refundable",
    )
    await platform.test_confirm(order["id"], access)
    await platform.settle(order["id"], access, "fulfilled")

    # While the seat is held it is not refunded; nobody but the host may ask.
    assert await refund_refused(platform, host, room["id"], order["id"]) == (
        "FAILED_PRECONDITION",
        "seat_held",
    )
    assert await refund_refused(platform, fan.token, room["id"], order["id"]) == (
        "PERMISSION_DENIED",
        "not_host",
    )
    stranger = await platform.account()
    assert await refund_refused(platform, stranger, room["id"], order["id"]) == (
        "NOT_FOUND",
        "order_not_found",
    )

    removed = await platform.rooms.RemoveSeat(
        rooms_pb2.RemoveSeatRequest(room_id=room["id"], participant_id=fan.participant_id, refund=True),
        metadata=bearer(host),
        timeout=10,
    )
    assert (removed.changed, removed.refund, removed.seat.order_id) == (True, True, order["id"])
    # Another room's id does not name this order.
    _, other = await seat_room(platform)
    assert await refund_refused(platform, host, other["id"], order["id"]) == ("NOT_FOUND", "order_not_found")

    host_member = await platform.join(room["code"], host)
    first = await refund_seat(platform, host_member.token, room["id"], order["id"])
    assert first.changed is True
    assert first.order.refund_reason == "seat_removed"
    again = await refund_seat(platform, host, room["id"], order["id"])
    assert again.changed is False
    done = await platform.settle(order["id"], access, "refunded")
    assert (done["refund_reason"], done["refund_message"]) == (
        "seat_removed",
        "The host removed you from the Back Room and refunded your seat in full.",
    )
    assert await platform.ledger(order["id"]) == [
        ("charge", 700),
        ("fee", 70),
        ("refund", 700),
        ("fee_refund", 70),
        ("transfer_reversal", 630),
    ]
    admin = await platform.admin()

    async def audited() -> list[Any]:
        return await platform.audit_events(admin, "payment.seat_refunded", f"order:{order['id']}")

    deadline = asyncio.get_running_loop().time() + 20
    while not (events := await audited()):
        assert asyncio.get_running_loop().time() < deadline, "the seat refund never reached the audit log"
        await asyncio.sleep(0.1)
    assert len(events) == 1
    assert (
        events[0].actor
        == (await platform.call("GET", "/api/v1/auth/me", expect=200, token=host))["identity"]["id"]
    )
    earnings = await platform.call("GET", "/api/v1/payments/earnings", expect=200, token=host)
    mine = next(r for r in earnings["rooms"] if r["room_id"] == room["id"])
    assert mine["seats"] == {
        "gross_cents": 0,
        "fee_cents": 0,
        "net_cents": 0,
        "refunded_cents": 700,
        "count": 0,
    }


async def test_a_buyer_banned_before_their_payment_landed_is_refunded(platform: Platform) -> None:
    host, room = await seat_room(platform)
    access, fan = await buyer(platform, room["code"])
    order = (await platform.order(fan, {"seat": {}}))["order"]
    await platform.call(
        "POST",
        f"/api/v1/rooms/{room['code']}/bans",
        template="/api/v1/rooms/{code}/bans",
        expect=201,
        token=host,
        json={"participant_id": fan.participant_id, "tier": "session"},
    )
    await platform.test_confirm(order["id"], access)
    done = await platform.settle(order["id"], access, "refunded")
    assert done["refund_reason"] == "banned"
    assert "no Back Room seat could be granted" in done["refund_message"]
    assert list((await seats_of(platform, host, room["id"])).seats) == []


async def test_a_room_of_an_anonymous_host_never_sells_seats(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await platform.room(host)
    try:
        await set_back_room(platform, host, room["id"], enabled=True, seat_price_cents=500, seat_limit=2)
    except grpc.aio.AioRpcError as refused_by_rooms:
        # rooms may refuse the Back Room to an anonymous host outright.
        assert refused_by_rooms.code() in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.FAILED_PRECONDITION,
        )
    _, someone = await buyer(platform, room["code"])
    assert await refused(platform, someone) in ("payments_not_enabled", "back_room_unavailable")


async def test_a_seat_bought_and_refunded_through_the_rest_api(platform: Platform) -> None:
    host = await platform.account()
    room = await platform.room(host)
    room_url = f"/api/v1/rooms/{room['code']}"
    settings = {"back_room": {"enabled": True, "seat_price_cents": 1500, "seat_limit": 2}}
    refused_settings = await platform.call(
        "PATCH", room_url, template="/api/v1/rooms/{code}", expect=409, token=host, json=settings
    )
    assert refused_settings["error"]["code"] == "payments_not_enabled"
    await platform.onboard_test_host(host)
    opened = await platform.call(
        "PATCH", room_url, template="/api/v1/rooms/{code}", expect=200, token=host, json=settings
    )
    assert (opened["back_room"]["seats_left"], opened["back_room"]["full"]) == (2, False)

    access, fan = await buyer(platform, room["code"])
    order = (await platform.order(fan, {"seat": {}}))["order"]
    assert order["amount_cents"] == 1500
    await platform.test_confirm(order["id"], access)
    await platform.settle(order["id"], access, "fulfilled")
    seen = await platform.call("GET", room_url, template="/api/v1/rooms/{code}", expect=200, token=fan.token)
    assert (seen["back_room"]["seats_taken"], seen["back_room"]["seats_left"]) == (1, 1)
    entered = await platform.call(
        "POST",
        f"{room_url}/back-room/enter",
        template="/api/v1/rooms/{code}/back-room/enter",
        expect=200,
        token=fan.token,
    )
    assert entered["room_token"]

    removal_url = f"{room_url}/back-room/seats/{fan.participant_id}?refund=true"
    template = "/api/v1/rooms/{code}/back-room/seats/{participant_id}"
    removed = await platform.call("DELETE", removal_url, template=template, expect=200, token=host)
    assert (removed["changed"], removed["refunded"]) == (True, True)
    done = await platform.settle(order["id"], access, "refunded")
    assert done["refund_reason"] == "seat_removed"
    # Sending it again refunds nothing twice.
    again = await platform.call("DELETE", removal_url, template=template, expect=200, token=host)
    assert again["changed"] is False
    assert [kind for kind, _ in await platform.ledger(order["id"])] == [
        "charge",
        "fee",
        "refund",
        "fee_refund",
        "transfer_reversal",
    ]
    after = await platform.call("GET", room_url, template="/api/v1/rooms/{code}", expect=200, token=host)
    assert (after["back_room"]["seats_taken"], after["back_room"]["seats_left"]) == (0, 2)

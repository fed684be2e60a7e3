"""Back Room seats paid at Stripe (the fake Stripe API, real signed webhooks) through the edge: a seat
is granted only once Stripe's webhook says the payment succeeded, and the main room is told a seat
went; concurrent payments for the last seats grant exactly as many seats as there are and refund the
rest in full at Stripe (the host's transfer reversed, the fee given back) with a balanced ledger; a
webhook delivered many times or replayed later grants one seat; a holder who paid twice gets the
second payment back; and the Back Room, a room like any other, resumes exactly after a reconnect.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.e2e.chat import ChatSocket, Frame, bearer
from tests.e2e.conftest import Stack
from tests.e2e.money import (
    Host,
    Person,
    control,
    enter,
    error_code,
    fake_of,
    host_with_room,
    intent_of,
    new_key,
    order,
    order_in,
    pay,
    read_order,
    say,
    stays,
    stripe_objects,
    webhook_event,
)
from tests.fakestripe import FakeStripe

FEE_PERCENT = 10


def _fee(price: int) -> int:
    return price * FEE_PERCENT // 100


async def _seat_room(http: httpx.AsyncClient, fake: FakeStripe, *, price: int, seats: int) -> Host:
    """An onboarded host whose room sells `seats` Back Room seats at `price`."""
    host = await host_with_room(http, fake)
    opened = await http.patch(
        f"/api/v1/rooms/{host.code}",
        json={"back_room": {"enabled": True, "seat_price_cents": price, "seat_limit": seats}},
        headers=bearer(host.access),
    )
    assert opened.status_code == 200, opened.text
    back_room = opened.json()["back_room"]
    assert (back_room["enabled"], back_room["seats_left"], back_room["seat_price_cents"]) == (
        True,
        seats,
        price,
    )
    return host


async def _enter_back_room(http: httpx.AsyncClient, code: str, person: Person) -> httpx.Response:
    return await http.post(f"/api/v1/rooms/{code}/back-room/enter", headers=bearer(person.token))


async def _seats(http: httpx.AsyncClient, host: Host) -> dict[str, Any]:
    listed = await http.get(f"/api/v1/rooms/{host.code}/back-room/seats", headers=bearer(host.access))
    assert listed.status_code == 200, listed.text
    return dict(listed.json())


async def _back_room_of(http: httpx.AsyncClient, code: str) -> dict[str, Any]:
    """The main room's Back Room as anyone reads it."""
    room = await http.get(f"/api/v1/rooms/{code}")
    assert room.status_code == 200, room.text
    return dict(room.json()["back_room"])


async def _seat_order(http: httpx.AsyncClient, host: Host, buyer: Person) -> tuple[str, str]:
    """A seat order at the room's price, not paid yet: its id and its PaymentIntent."""
    created = await order(http, host.code, buyer, {"seat": {}})
    assert (created["order"]["kind"], created["order"]["state"]) == ("seat", "awaiting_payment")
    return str(created["order"]["id"]), intent_of(created)


async def _earned_seats(http: httpx.AsyncClient, host: Host) -> dict[str, Any]:
    answer = await http.get("/api/v1/payments/earnings", headers=bearer(host.access))
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["seats"])


async def _refunded_at_stripe(fake: FakeStripe, intent: str, order_id: str, price: int) -> None:
    """The whole payment went back to the buyer, the host's transfer reversed and the fee refunded."""
    refunds = await stripe_objects(fake, "refunds", payment_intent=intent)
    assert [(r["amount"], r["status"], r["metadata"].get("order_id")) for r in refunds] == [
        (price, "succeeded", order_id)
    ], refunds
    charge = (await stripe_objects(fake, "charges", payment_intent=intent))[0]
    assert (charge["amount_refunded"], charge["refunded"]) == (price, True)
    reversals = await stripe_objects(fake, "transfer_reversals", transfer=charge["transfer"])
    assert [r["amount"] for r in reversals] == [price - _fee(price)]
    application_fee = await control(fake, "object", charge["application_fee"])
    assert (application_fee["amount_refunded"], application_fee["refunded"]) == (_fee(price), True)


def _seat_updates(socket: ChatSocket) -> list[dict[str, Any]]:
    return [f["room"]["back_room"] for f in socket.frames if f["type"] == "room_updated"]


async def test_a_seat_is_granted_only_once_stripes_webhook_says_the_payment_succeeded(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    host = await _seat_room(http, fake, price=900, seats=3)
    buyer = await enter(http, host.code, "EagerEmil")
    watcher = await enter(http, host.code, "WatchingWen")
    main_socket = await ChatSocket.open(stripe_stack.ws_url, host.code, watcher.token)
    try:
        order_id, intent = await _seat_order(http, host, buyer)
        # Stripe holds its webhooks: the money moved at Stripe, but payments has not heard of it.
        await control(fake, "pause")
        paid = await pay(fake, intent)
        assert paid["error"] is None and paid["payment_intent"]["status"] == "succeeded", paid
        await webhook_event(fake, "payment_intent.succeeded", intent)

        async def nothing_granted() -> bool:
            current = await read_order(http, buyer.token, order_id)
            return current["state"] == "awaiting_payment" and not _seat_updates(main_socket)

        await stays(nothing_granted, "a seat granted before Stripe's webhook arrived", seconds=1.5)
        refused = await _enter_back_room(http, host.code, buyer)
        assert error_code(refused) == (403, "no_seat"), refused.text
        assert (await _seats(http, host))["seats"] == []
        assert (await _back_room_of(http, host.code))["seats_left"] == 3

        # The webhook arrives: the seat is granted and the main room told one seat went.
        await control(fake, "resume")
        done = await order_in(http, buyer.token, order_id, "fulfilled")
        assert (done["amount_cents"], done["fee_cents"], done["refund_reason"]) == (900, 90, "")
        update = await main_socket.wait_for(
            lambda f: f["type"] == "room_updated" and f["room"]["back_room"]["seats_left"] == 2, timeout=20
        )
        assert update["room"]["back_room"]["seats_taken"] == 1
        assert update["room"]["back_room"]["back_room_id"] is None  # the watcher holds no seat
        seats = await _seats(http, host)
        assert [(s["participant_id"], s["username"]) for s in seats["seats"]] == [(buyer.id, "EagerEmil")]
        assert (await _back_room_of(http, host.code))["seats_left"] == 2

        # The buyer enters the Back Room and meets the host there.
        entered = await _enter_back_room(http, host.code, buyer)
        assert entered.status_code == 200, entered.text
        back = entered.json()
        assert back["back_room"]["parent_room_id"] == host.room_id
        assert back["participant"]["username"] == "EagerEmil"
        host_entry = await _enter_back_room(http, host.code, host.me)
        assert host_entry.status_code == 200, host_entry.text
        host_socket = await ChatSocket.open(
            stripe_stack.ws_url, back["back_room"]["code"], host_entry.json()["room_token"]
        )
        buyer_socket = await ChatSocket.open(
            stripe_stack.ws_url, back["back_room"]["code"], back["room_token"]
        )
        try:
            sent = await buyer_socket.send("worth every cent")
            assert (await buyer_socket.ack_or_error(sent))["type"] == "ack"
            heard = await host_socket.wait_for(lambda f: f["type"] == "message")
            assert (heard["text"], heard["sender"]["username"]) == ("worth every cent", "EagerEmil")
        finally:
            await asyncio.gather(host_socket.close(), buyer_socket.close())
        # At Stripe: one destination charge to the host, less the fee, never refunded.
        charges = await stripe_objects(fake, "charges", payment_intent=intent)
        assert [(c["amount"], c["amount_refunded"]) for c in charges] == [(900, 0)]
        transfer = await control(fake, "object", charges[0]["transfer"])
        assert (transfer["amount"], transfer["destination"]) == (810, host.account)
    finally:
        await main_socket.close()


async def test_twenty_payments_for_five_seats_grant_five_and_refund_fifteen_in_full(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    price, seats, buyers_count = 700, 5, 20
    host = await _seat_room(http, fake, price=price, seats=seats)
    buyers = list(
        await asyncio.gather(*(enter(http, host.code, f"Racer{n:02d}") for n in range(buyers_count)))
    )
    watcher = await enter(http, host.code, "WatchingWes")
    main_socket = await ChatSocket.open(stripe_stack.ws_url, host.code, watcher.token)
    try:
        await _race(http, fake, host, buyers, main_socket, price=price, seats=seats)
    finally:
        await main_socket.close()


async def _race(
    http: httpx.AsyncClient,
    fake: FakeStripe,
    host: Host,
    buyers: list[Person],
    main_socket: ChatSocket,
    *,
    price: int,
    seats: int,
) -> None:
    """Every buyer orders a seat while seats are left and pays at once; `main_socket` watches the main
    room meanwhile."""
    buyers_count = len(buyers)
    # The race is decided when the payments land.
    orders = list(await asyncio.gather(*(_seat_order(http, host, buyer) for buyer in buyers)))
    paid = await asyncio.gather(*(pay(fake, intent) for _, intent in orders))
    assert all(result["error"] is None for result in paid), paid
    settled = list(
        await asyncio.gather(
            *(
                order_in(http, buyer.token, order_id, "fulfilled", "refunded", timeout=40)
                for buyer, (order_id, _) in zip(buyers, orders, strict=True)
            )
        )
    )
    granted = [o for o in settled if o["state"] == "fulfilled"]
    refunded = [o for o in settled if o["state"] == "refunded"]
    assert (len(granted), len(refunded)) == (seats, buyers_count - seats)
    assert {(o["refund_reason"], bool(o["refund_message"])) for o in refunded} == {("seats_full", True)}

    # The winners hold the seats, and the room is full.
    winners = {o["id"] for o in granted}
    holders = sorted(b.id for b, (order_id, _) in zip(buyers, orders, strict=True) if order_id in winners)
    listed = await _seats(http, host)
    assert sorted(s["participant_id"] for s in listed["seats"]) == holders
    back_room = await _back_room_of(http, host.code)
    assert (back_room["seats_taken"], back_room["seats_left"], back_room["full"]) == (seats, 0, True)
    # The main room's live clients were told the room filled up, and never of more seats than exist.
    await main_socket.wait_for(
        lambda f: f["type"] == "room_updated" and f["room"]["back_room"]["full"] is True, timeout=20
    )
    assert max(u["seats_taken"] for u in _seat_updates(main_socket)) == seats
    for buyer, (order_id, _) in zip(buyers, orders, strict=True):
        entered = await _enter_back_room(http, host.code, buyer)
        if order_id in winners:
            assert entered.status_code == 200, entered.text
        else:
            assert error_code(entered) == (403, "no_seat"), entered.text

    # At Stripe: each loser got all of it back, the transfer reversed and the fee refunded.
    intents = dict(orders)
    for lost in refunded:
        await _refunded_at_stripe(fake, intents[lost["id"]], lost["id"], price)
    for won in granted:
        assert await stripe_objects(fake, "refunds", payment_intent=intents[won["id"]]) == []

    # The money balances: Stripe kept 5 seats' worth, the host earned 5 seats less the fee.
    mine = set(intents.values())
    charges = [c for c in await control(fake, "charges") if c["payment_intent"] in mine]
    assert len(charges) == buyers_count
    assert sum(c["amount"] - c["amount_refunded"] for c in charges) == seats * price
    refunds = [r for r in await control(fake, "refunds") if r["payment_intent"] in mine]
    assert sum(c["amount"] for c in charges) - sum(r["amount"] for r in refunds) == seats * price
    transfers = [await control(fake, "object", c["transfer"]) for c in charges]
    assert sum(t["amount"] - t["amount_reversed"] for t in transfers) == seats * (price - _fee(price))
    fees = [await control(fake, "object", c["application_fee"]) for c in charges]
    assert sum(f["amount"] - f["amount_refunded"] for f in fees) == seats * _fee(price)
    earned = await _earned_seats(http, host)
    assert earned == {
        "gross_cents": seats * price,
        "fee_cents": seats * _fee(price),
        "net_cents": seats * (price - _fee(price)),
        "refunded_cents": (buyers_count - seats) * price,
        "count": seats,
    }


async def test_a_webhook_delivered_ten_times_and_replayed_later_grants_one_seat(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    host = await _seat_room(http, fake, price=800, seats=3)
    buyer = await enter(http, host.code, "OnlyOnce")
    watcher = await enter(http, host.code, "CountingCai")
    main_socket = await ChatSocket.open(stripe_stack.ws_url, host.code, watcher.token)
    try:
        order_id, intent = await _seat_order(http, host, buyer)
        # Every event goes out ten times.
        await control(fake, "chaos", duplicates=9)
        assert (await pay(fake, intent))["error"] is None
        await order_in(http, buyer.token, order_id, "fulfilled")
        await control(fake, "wait_idle", 30.0)
        succeeded = await webhook_event(fake, "payment_intent.succeeded", intent)
        # Later, Stripe sends it again.
        await control(fake, "calm")
        assert await control(fake, "replay", succeeded["id"]) == 1
        await control(fake, "wait_idle", 30.0)

        deliveries = await control(fake, "deliveries", event=succeeded["id"])
        assert [d["outcome"] for d in deliveries] == ["succeeded"] * 11, deliveries
        assert sorted(d["kind"] for d in deliveries) == ["duplicate"] * 9 + ["event", "replay"]

        # One seat, one order, one charge: the main room was never told of more than one seat taken.
        await main_socket.wait_for(
            lambda f: f["type"] == "room_updated" and f["room"]["back_room"]["seats_taken"] == 1
        )

        async def one_seat() -> bool:
            return {u["seats_taken"] for u in _seat_updates(main_socket)} == {1}

        await stays(one_seat, "the main room shown more than one seat taken", seconds=1.0)
        listed = await _seats(http, host)
        assert [s["participant_id"] for s in listed["seats"]] == [buyer.id]
        assert (listed["back_room"]["seats_taken"], listed["back_room"]["seats_left"]) == (1, 2)
        final = await read_order(http, buyer.token, order_id)
        assert (final["state"], final["refund_reason"]) == ("fulfilled", "")
        mine = await http.get("/api/v1/payments/orders", headers=bearer(buyer.token))
        assert mine.status_code == 200, mine.text
        assert [o["id"] for o in mine.json()["orders"]] == [order_id]
        assert await stripe_objects(fake, "refunds", payment_intent=intent) == []
        assert len(await stripe_objects(fake, "charges", payment_intent=intent)) == 1
        earned = await _earned_seats(http, host)
        assert (earned["gross_cents"], earned["fee_cents"], earned["count"]) == (800, 80, 1)
        assert (await _enter_back_room(http, host.code, buyer)).status_code == 200
    finally:
        await main_socket.close()


async def test_a_holder_who_paid_for_a_second_seat_gets_that_payment_back_in_full(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    price = 1100
    host = await _seat_room(http, fake, price=price, seats=4)
    buyer = await enter(http, host.code, "TwiceTess")
    # Two orders made before either was paid (two tabs): both pass the check at order time.
    first_id, first_intent = await _seat_order(http, host, buyer)
    second_id, second_intent = await _seat_order(http, host, buyer)
    assert first_id != second_id
    assert (await pay(fake, first_intent))["error"] is None
    await order_in(http, buyer.token, first_id, "fulfilled")
    # Seated now, a third order is refused outright.
    third = await http.post(
        f"/api/v1/rooms/{host.code}/orders",
        json={"idempotency_key": new_key(), "seat": {}},
        headers=bearer(buyer.token),
    )
    assert error_code(third) == (409, "already_seated"), third.text

    # The second payment lands: no second seat, all of it back.
    assert (await pay(fake, second_intent))["error"] is None
    back = await order_in(http, buyer.token, second_id, "refunded")
    assert (back["refund_reason"], back["amount_cents"]) == ("already_seated", price)
    assert back["refund_message"]
    await _refunded_at_stripe(fake, second_intent, second_id, price)
    assert await stripe_objects(fake, "refunds", payment_intent=first_intent) == []
    assert (await read_order(http, buyer.token, first_id))["state"] == "fulfilled"

    listed = await _seats(http, host)
    assert [s["participant_id"] for s in listed["seats"]] == [buyer.id]
    assert (listed["back_room"]["seats_taken"], listed["back_room"]["seats_left"]) == (1, 3)
    assert (await _enter_back_room(http, host.code, buyer)).status_code == 200
    earned = await _earned_seats(http, host)
    assert earned == {
        "gross_cents": price,
        "fee_cents": _fee(price),
        "net_cents": price - _fee(price),
        "refunded_cents": price,
        "count": 1,
    }


def _messages(frames: list[Frame]) -> list[tuple[int, str]]:
    return [(f["seq"], f["text"]) for f in frames if f["type"] == "message"]


async def test_the_back_room_resumes_exactly_after_a_reconnect(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    host = await _seat_room(http, fake, price=500, seats=2)
    member = await enter(http, host.code, "ResumingRia")
    order_id, intent = await _seat_order(http, host, member)
    assert (await pay(fake, intent))["error"] is None
    await order_in(http, member.token, order_id, "fulfilled")
    entered = await _enter_back_room(http, host.code, member)
    assert entered.status_code == 200, entered.text
    back_code = entered.json()["back_room"]["code"]
    back_member = Person("ResumingRia", entered.json())
    host_entry = await _enter_back_room(http, host.code, host.me)
    assert host_entry.status_code == 200, host_entry.text
    back_host = Person(host.me.username, host_entry.json())

    total, away_at = 40, 10
    socket = await ChatSocket.open(stripe_stack.ws_url, back_code, back_member.token)
    host_socket = await ChatSocket.open(stripe_stack.ws_url, back_code, back_host.token)
    resumed: ChatSocket | None = None

    async def host_talks() -> None:
        for n in range(total):
            sent = await host_socket.send(f"back room line {n}")
            assert (await host_socket.ack_or_error(sent))["type"] == "ack"
            await asyncio.sleep(0.01)

    talking = asyncio.create_task(host_talks())
    try:
        await socket.wait_for_seq(away_at)
        await socket.close()
        before = _messages(socket.frames)
        last_seen = before[-1][0]
        # The host keeps talking while the member is away and while they come back.
        await asyncio.sleep(0.2)
        back = await ChatSocket.open(stripe_stack.ws_url, back_code, back_member.token, after_seq=last_seen)
        resumed = back
        await talking
        await back.wait_for_seq(total)
        # And the member answers once back.
        closing = await say(http, back_code, back_member, "back again")
        await back.wait_for_seq(closing)

        async def nothing_more() -> bool:
            return len(_messages(back.frames)) == closing - last_seen

        await stays(nothing_more, "a message repeated after the resume", seconds=0.5)
        after = _messages(back.frames)
        assert not any(f["type"] == "reload" for f in back.frames)
        combined = before + after
        seqs = [seq for seq, _ in combined]
        assert seqs == list(range(1, closing + 1)), "the resume skipped, repeated or reordered a message"
        assert [text for _, text in combined] == [f"back room line {n}" for n in range(total)] + [
            "back again"
        ]
        # History agrees with what the member was shown.
        page = await http.get(
            f"/api/v1/rooms/{back_code}/messages", params={"limit": 100}, headers=bearer(back_member.token)
        )
        assert page.status_code == 200, page.text
        assert sorted((m["seq"], m["text"]) for m in page.json()["messages"]) == combined
        # The main room saw none of it.
        main = await http.get(f"/api/v1/rooms/{host.code}/messages", headers=bearer(member.token))
        assert all(m["text"] != "back again" for m in main.json()["messages"])
    finally:
        talking.cancel()
        await asyncio.gather(
            socket.close(),
            host_socket.close(),
            *([resumed.close()] if resumed is not None else []),
            return_exceptions=True,
        )

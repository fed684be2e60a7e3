"""Paid pins bought through the edge and paid at Stripe (the fake Stripe API), as a room's clients see
them: a client whose socket stays open, one that resumes after being away, and one reading history.

Nothing is pinned before Stripe's success webhook reaches payments; a declined card pins nothing; of two
outbids paid at once one wins and the other is refunded in full at Stripe; an extension raises the bar
for rivals; a pin whose time is over is gone from history and from what clients are told next.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx

from tests.e2e.chat import bearer
from tests.e2e.conftest import Stack
from tests.e2e.money import (
    Host,
    Person,
    audience,
    control,
    enter,
    error_code,
    fake_of,
    fresh_view,
    host_with_room,
    intent_of,
    order,
    order_in,
    pay,
    read_order,
    sales,
    say,
    stays,
    stripe_objects,
    until,
    webhook_event,
)
from tests.fakestripe import FakeStripe


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def _pinned(
    http: httpx.AsyncClient, fake: FakeStripe, host: Host, buyer: Person, seq: int, tier: int
) -> dict[str, Any]:
    """A pin of message `seq` bought and paid with the test card: the order once fulfilled."""
    created = await order(http, host.code, buyer, {"pin": {"target_seq": seq, "tier_cents": tier}})
    assert (await pay(fake, intent_of(created)))["error"] is None
    return await order_in(http, buyer.token, created["order"]["id"], "fulfilled")


async def _refund_at_stripe(fake: FakeStripe, intent: str, amount: int, fee: int) -> None:
    """The order's payment was refunded in full at Stripe: the whole amount back to the buyer, the
    host's transfer reversed and the platform's fee refunded, asked with the order's own key."""
    refunds = await stripe_objects(fake, "refunds", payment_intent=intent)
    assert [(r["amount"], r["status"]) for r in refunds] == [(amount, "succeeded")], refunds
    asked = [
        r
        for r in await control(fake, "requests", method="POST", path="/v1/refunds")
        if r["params"].get("payment_intent") == intent
    ]
    assert asked, "nobody asked Stripe for the refund"
    assert {r["idempotency_key"] for r in asked} == {f"order:{refunds[0]['metadata']['order_id']}:refund"}
    assert asked[0]["params"]["reverse_transfer"] in (True, "true")
    assert asked[0]["params"]["refund_application_fee"] in (True, "true")
    charge = (await stripe_objects(fake, "charges", payment_intent=intent))[0]
    assert (charge["refunded"], charge["amount_refunded"]) == (True, amount)
    transfer = await control(fake, "object", charge["transfer"])
    assert (transfer["amount"], transfer["amount_reversed"], transfer["reversed"]) == (
        amount - fee,
        amount - fee,
        True,
    )
    application_fee = await control(fake, "object", charge["application_fee"])
    assert (application_fee["amount"], application_fee["amount_refunded"]) == (fee, fee)


async def test_a_pin_appears_only_when_stripes_success_webhook_arrives(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    host = await host_with_room(http, fake)
    async with audience(stripe_stack, http, host.code) as seen:
        buyer = await enter(http, host.code, "BuyerBea")
        seq = await say(http, host.code, buyer, "pin me once I have paid")
        await seen.leave()
        created = await order(http, host.code, buyer, {"pin": {"target_seq": seq, "tier_cents": 500}})
        order_id, intent = created["order"]["id"], intent_of(created)
        assert created["order"]["state"] == "awaiting_payment"

        # Stripe takes the money but holds its webhooks.
        await control(fake, "pause")
        paid = await pay(fake, intent)
        assert (paid["error"], paid["payment_intent"]["status"]) == (None, "succeeded")
        event = await webhook_event(fake, "payment_intent.succeeded", intent)
        assert await control(fake, "deliveries", event=event["id"]) == [], "the webhook went out"

        async def nothing_pinned() -> bool:
            current = await read_order(http, buyer.token, order_id)
            board, _ = await fresh_view(http, host.code, buyer.token)
            return (
                current["state"] == "awaiting_payment"
                and board.pins == []
                and not any(f["type"] == "paid_pin" for f in seen.live_socket.frames)
            )

        await stays(nothing_pinned, "paid at Stripe but not told by its webhook, and pinned anyway")
        assert (await sales(http, host.code, buyer.token))["paid_pins"] == []
        # Nothing was appended for the pin: the next message takes the very next seq.
        assert await say(http, host.code, host.me, "still waiting") == seq + 1

        await control(fake, "resume")
        frame = await seen.live_socket.wait_for(lambda f: f["type"] == "paid_pin", timeout=20)
        pin = frame["paid_pin"]
        assert (pin["id"], pin["target_seq"], pin["amount_cents"], pin["username"]) == (
            order_id,
            seq,
            500,
            "BuyerBea",
        )
        assert pin["message"]["text"] == "pin me once I have paid"
        # A new top pin stands an hour (a 500 tier adds 20 minutes, less than the hour).
        assert _at(pin["expires_at"]) - _at(pin["started_at"]) == timedelta(minutes=60)
        done = await order_in(http, buyer.token, order_id, "fulfilled")
        assert (done["fulfilled_seq"], done["payment_error"]) == (frame["seq"], "")
        delivered = await control(fake, "deliveries", event=event["id"], outcome="succeeded")
        assert delivered, "the pin came without the webhook"

        live, resumed, fresh = await seen.views()
    assert fresh.pinned() == [(order_id, seq, 500, "BuyerBea", pin["expires_at"])]
    assert live.pin_entries == resumed.pin_entries == [frame["seq"]]
    assert fresh.pins_state_seq == frame["seq"]


async def test_a_declined_card_pins_nothing_and_another_card_may_still_pay(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    host = await host_with_room(http, fake)
    async with audience(stripe_stack, http, host.code) as seen:
        buyer = await enter(http, host.code, "BrokeBen")
        seq = await say(http, host.code, buyer, "pin me, if my card allows")
        await seen.leave()
        created = await order(http, host.code, buyer, {"pin": {"target_seq": seq, "tier_cents": 200}})
        order_id, intent = created["order"]["id"], intent_of(created)

        declined = await pay(fake, intent, "pm_card_chargeDeclinedInsufficientFunds")
        assert (declined["error"]["code"], declined["error"]["decline_code"]) == (
            "card_declined",
            "insufficient_funds",
        )

        async def told() -> dict[str, Any] | None:
            current = await read_order(http, buyer.token, order_id)
            return current if current["payment_error"] else None

        current = await until(told, "payment_intent.payment_failed reaching the buyer's order")
        assert (current["state"], current["payment_error"], current["fulfilled_seq"]) == (
            "awaiting_payment",
            "Your card has insufficient funds.",
            None,
        )
        board, last = await fresh_view(http, host.code, buyer.token)
        assert (board.pins, last) == ([], seq)
        assert (await sales(http, host.code, buyer.token))["paid_pins"] == []
        assert await say(http, host.code, host.me, "no pin came of it") == seq + 1
        before = await seen.views()
        assert all(view.pinned() == [] and view.pin_entries == [] for view in before)

        # The buyer tries another card with the same order.
        assert (await pay(fake, intent))["error"] is None
        frame = await seen.live_socket.wait_for(lambda f: f["type"] == "paid_pin", timeout=20)
        done = await order_in(http, buyer.token, order_id, "fulfilled")
        assert (done["payment_error"], done["fulfilled_seq"]) == ("", frame["seq"])
        live, _resumed, fresh = await seen.views()
    assert [(p[0], p[2]) for p in fresh.pinned()] == [(order_id, 200)]
    assert live.pin_entries == [frame["seq"]]


async def test_of_two_outbids_paid_at_once_one_wins_and_the_other_is_refunded_in_full(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    host = await host_with_room(http, fake)
    async with audience(stripe_stack, http, host.code) as seen:
        first = await enter(http, host.code, "FirstFinn")
        bob = await enter(http, host.code, "RacerBob")
        cara = await enter(http, host.code, "RacerCara")
        finn_seq = await say(http, host.code, first, "first!")
        finns = await _pinned(http, fake, host, first, finn_seq, 100)
        bob_seq = await say(http, host.code, bob, "mine on top")
        cara_seq = await say(http, host.code, cara, "no, mine")
        await seen.leave()
        # Both may outbid the top pin (100) with 200 now; both pay at the same moment.
        orders = [
            await order(http, host.code, who, {"pin": {"target_seq": target, "tier_cents": 200}})
            for who, target in ((bob, bob_seq), (cara, cara_seq))
        ]
        results = await asyncio.gather(*(pay(fake, intent_of(created)) for created in orders))
        assert [result["error"] for result in results] == [None, None]
        settled = [
            await order_in(http, who.token, created["order"]["id"], "fulfilled", "refunded")
            for who, created in zip((bob, cara), orders, strict=True)
        ]
        states = sorted(o["state"] for o in settled)
        assert states == ["fulfilled", "refunded"], settled
        winner = next(o for o in settled if o["state"] == "fulfilled")
        loser = next(o for o in settled if o["state"] == "refunded")
        loser_buyer, loser_created = next(
            (who, created)
            for who, created in zip((bob, cara), orders, strict=True)
            if created["order"]["id"] == loser["id"]
        )
        # The loser's own view of the order says why.
        seen_by_loser = await read_order(http, loser_buyer.token, loser["id"])
        assert (seen_by_loser["state"], seen_by_loser["refund_reason"]) == ("refunded", "outbid")
        assert seen_by_loser["refund_message"]
        mine = await http.get("/api/v1/payments/orders", headers=bearer(loser_buyer.token))
        assert [(o["id"], o["state"]) for o in mine.json()["orders"]] == [(loser["id"], "refunded")]
        await _refund_at_stripe(fake, intent_of(loser_created), 200, 20)
        winner_intent = intent_of(next(c for c in orders if c["order"]["id"] == winner["id"]))
        assert await stripe_objects(fake, "refunds", payment_intent=winner_intent) == []

        live, resumed, fresh = await seen.views()
    winner_seq = winner["target_seq"]
    assert [(p[0], p[1], p[2]) for p in fresh.pinned()] == [
        (winner["id"], winner_seq, 200),
        (finns["id"], finn_seq, 100),
    ]
    # Of the two paid outbids, only the winner's is an entry of the room.
    assert live.pin_entries == resumed.pin_entries == [finns["fulfilled_seq"], winner["fulfilled_seq"]]


async def test_an_extension_raises_the_bar_and_a_rival_paid_in_the_race_is_refunded(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    host = await host_with_room(http, fake)
    async with audience(stripe_stack, http, host.code) as seen:
        alice = await enter(http, host.code, "AliceAtTop")
        carol = await enter(http, host.code, "CarolRaces")
        dave = await enter(http, host.code, "DaveLate")
        alice_seq = await say(http, host.code, alice, "keep me up there")
        carol_seq = await say(http, host.code, carol, "or me")
        dave_seq = await say(http, host.code, dave, "me maybe")
        alices = await _pinned(http, fake, host, alice, alice_seq, 500)
        pin_id = alices["id"]
        first_frame = next(f for f in seen.live_socket.frames if f["type"] == "paid_pin")
        assert (await sales(http, host.code, carol.token))["min_pin_cents"] == 1000
        await seen.leave()
        # Carol opens an order that outbids the pin as it stands (500 < 1000)…
        racing = await order(http, host.code, carol, {"pin": {"target_seq": carol_seq, "tier_cents": 1000}})

        # …then Alice, holding the top pin, adds a 500 tier to it: 1000 paid, 20 more minutes.
        extension = await order(http, host.code, alice, {"extension": {"pin_id": pin_id, "tier_cents": 500}})
        assert (extension["order"]["kind"], extension["order"]["pin_id"]) == ("pin_extension", pin_id)
        assert (await pay(fake, intent_of(extension)))["error"] is None
        extended = await order_in(http, alice.token, extension["order"]["id"], "fulfilled")
        frame = await seen.live_socket.wait_for(
            lambda f: f["type"] == "paid_pin" and f["seq"] == extended["fulfilled_seq"]
        )
        assert (frame["paid_pin"]["id"], frame["paid_pin"]["amount_cents"]) == (pin_id, 1000)
        assert _at(frame["paid_pin"]["expires_at"]) - _at(first_frame["paid_pin"]["expires_at"]) == timedelta(
            minutes=20
        )

        # The bar is 1500 now: a 1000 tier, enough before, is refused when ordered.
        offer = await sales(http, host.code, dave.token)
        assert (offer["min_pin_cents"], offer["my_top_pin_id"]) == (1500, "")
        assert (await sales(http, host.code, alice.token))["my_top_pin_id"] == pin_id
        for who, target in ((dave, dave_seq), (carol, carol_seq)):
            refused = await http.post(
                f"/api/v1/rooms/{host.code}/orders",
                json={"idempotency_key": f"late-{who.id}", "pin": {"target_seq": target, "tier_cents": 1000}},
                headers=bearer(who.token),
            )
            assert error_code(refused) == (409, "outbid_required"), refused.text
        not_his = await http.post(
            f"/api/v1/rooms/{host.code}/orders",
            json={"idempotency_key": f"steal-{dave.id}", "extension": {"pin_id": pin_id, "tier_cents": 500}},
            headers=bearer(dave.token),
        )
        assert error_code(not_his) == (409, "not_top_pin"), not_his.text

        # Carol pays the order she opened before the extension: it no longer outbids, and is refunded.
        assert (await pay(fake, intent_of(racing)))["error"] is None
        lost = await order_in(http, carol.token, racing["order"]["id"], "refunded")
        assert (lost["refund_reason"], lost["fulfilled_seq"]) == ("outbid", None)
        await _refund_at_stripe(fake, intent_of(racing), 1000, 100)

        live, resumed, fresh = await seen.views()
    assert fresh.pinned() == [(pin_id, alice_seq, 1000, "AliceAtTop", frame["paid_pin"]["expires_at"])]
    assert live.pin_entries == resumed.pin_entries == [alices["fulfilled_seq"], extended["fulfilled_seq"]]


async def _expire(database_url: str, room_id: str, pin_id: str) -> None:
    """Let the pin's time run out now, as if its hour had passed."""
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "messaging"})
    try:
        changed = await connection.execute(
            "UPDATE paid_pins SET expires_at = clock_timestamp() - interval '1 second'"
            " WHERE room_id = $1 AND id = $2",
            room_id,
            pin_id,
        )
    finally:
        await connection.close()
    assert changed == "UPDATE 1", changed


async def test_a_pin_whose_time_is_over_is_gone_from_history_and_from_what_clients_are_told(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    """A pin stands for an hour at least, longer than a test may wait, so its time is made to run out
    by moving its row's expires_at back: the server decides what is live from that row whenever it
    answers (history's board, what a room sells, the next outbid). Expiry appends no entry; clients
    drop a pin at the expires_at its frame carried, and the next change of paid pins tells every
    client, live or resuming, the live pins without it."""
    http, fake = stripe_client, fake_of(stripe_stack)
    host = await host_with_room(http, fake)
    async with audience(stripe_stack, http, host.code) as seen:
        old = await enter(http, host.code, "OldOlga")
        new = await enter(http, host.code, "NewNed")
        old_seq = await say(http, host.code, old, "my hour")
        new_seq = await say(http, host.code, new, "my turn next")
        olds = await _pinned(http, fake, host, old, old_seq, 100)
        frame = await seen.live_socket.wait_for(lambda f: f["type"] == "paid_pin")
        expires_at = frame["paid_pin"]["expires_at"]
        assert _at(expires_at) - _at(frame["paid_pin"]["started_at"]) == timedelta(minutes=60)
        assert [p["expires_at"] for p in frame["paid_pins"]] == [expires_at]
        # Away holds the pin (and when it ends); the base rate does not outbid it.
        await seen.leave()
        assert (await sales(http, host.code, new.token))["min_pin_cents"] == 200
        early = await http.post(
            f"/api/v1/rooms/{host.code}/orders",
            json={"idempotency_key": f"early-{new.id}", "pin": {"target_seq": new_seq, "tier_cents": 100}},
            headers=bearer(new.token),
        )
        assert error_code(early) == (409, "outbid_required")

        await _expire(stripe_stack.database_url, host.room_id, olds["id"])
        board, last = await fresh_view(http, host.code, new.token)
        assert (board.pins, last) == ([], olds["fulfilled_seq"]), "expiry is no entry, and no pin is live"
        offer = await sales(http, host.code, new.token)
        assert (offer["paid_pins"], offer["min_pin_cents"]) == ([], 100)

        # The base rate pins again; its entry lists the live pins: the expired one is not among them.
        news = await _pinned(http, fake, host, new, new_seq, 100)
        told = await seen.live_socket.wait_for(
            lambda f: f["type"] == "paid_pin" and f["seq"] == news["fulfilled_seq"]
        )
        assert [p["id"] for p in told["paid_pins"]] == [news["id"]]
        live, resumed, fresh = await seen.views()
    assert [(p[0], p[2], p[3]) for p in fresh.pinned()] == [(news["id"], 100, "NewNed")]
    assert olds["id"] not in {p[0] for p in resumed.pinned()}
    assert live.pin_entries == [olds["fulfilled_seq"], news["fulfilled_seq"]]

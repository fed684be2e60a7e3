"""Opening orders through the edge against Stripe (the fake Stripe API): the server sets every price,
whatever a client sends, and a room whose host cannot receive money sells nothing, saying why.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.chat import anonymous, bearer, create_room
from tests.e2e.conftest import Stack
from tests.e2e.money import (
    audience,
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
    sales,
    say,
    stripe_objects,
)


async def test_a_client_cannot_set_a_price_and_stripe_charges_the_tiers_with_the_platforms_fee(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    host = await host_with_room(http, fake)
    async with audience(stripe_stack, http, host.code) as seen:
        buyer = await enter(http, host.code, "BargainBo")
        seq = await say(http, host.code, buyer, "pin me for a cent")
        await seen.leave()
        pin = {"target_seq": seq, "tier_cents": 1000}
        tip = {"amount_cents": 700, "note": "cheap?"}
        priced_by_client: list[dict[str, Any]] = [
            {"pin": {**pin, "amount_cents": 1}},
            {"pin": {**pin, "price": 1}},
            {"pin": pin, "amount_cents": 1},
            {"pin": pin, "price": 1},
            {"pin": pin, "fee_cents": 0},
            {"pin": pin, "currency": "jpy"},
            {"tip": {**tip, "fee_cents": 0}},
            {"tip": tip, "amount_cents": 1},
        ]
        for body in priced_by_client:
            refused = await http.post(
                f"/api/v1/rooms/{host.code}/orders",
                json={"idempotency_key": new_key(), **body},
                headers=bearer(buyer.token),
            )
            assert refused.status_code == 422, (body, refused.text)
        off_the_table = await http.post(
            f"/api/v1/rooms/{host.code}/orders",
            json={"idempotency_key": new_key(), "pin": {**pin, "tier_cents": 150}},
            headers=bearer(buyer.token),
        )
        assert error_code(off_the_table) == (422, "unknown_tier"), off_the_table.text
        assert not [
            intent
            for intent in await stripe_objects(fake, "payment_intents")
            if intent["metadata"].get("room_id") == host.room_id
        ], "a refused order opened a payment"

        pinned = await order(http, host.code, buyer, {"pin": pin})
        tipped = await order(http, host.code, buyer, {"tip": tip})
        for created, amount, fee, kind in ((pinned, 1000, 100, "pin"), (tipped, 700, 70, "tip")):
            mine = created["order"]
            assert (mine["kind"], mine["amount_cents"], mine["fee_cents"], mine["currency"]) == (
                kind,
                amount,
                fee,
                "usd",
            )
            intent = await control(fake, "object", intent_of(created))
            assert (intent["amount"], intent["currency"], intent["application_fee_amount"]) == (
                amount,
                "usd",
                fee,
            )
            assert intent["transfer_data"]["destination"] == host.account
            assert intent["metadata"] == {"order_id": mine["id"], "kind": kind, "room_id": host.room_id}
            assert intent["client_secret"] == created["client_secret"]
        opened = [
            intent
            for intent in await stripe_objects(fake, "payment_intents")
            if intent["metadata"].get("room_id") == host.room_id
        ]
        assert len(opened) == 2, "one PaymentIntent per order, none for the refused ones"

        assert (await pay(fake, intent_of(pinned)))["error"] is None
        done = await order_in(http, buyer.token, pinned["order"]["id"], "fulfilled")
        charge = (await stripe_objects(fake, "charges", payment_intent=intent_of(pinned)))[0]
        transfer = await control(fake, "object", charge["transfer"])
        application_fee = await control(fake, "object", charge["application_fee"])
        assert (charge["amount"], transfer["amount"], transfer["destination"]) == (1000, 900, host.account)
        assert application_fee["amount"] == 100
        frame = await seen.live_socket.wait_for(lambda f: f["type"] == "paid_pin")
        assert (frame["paid_pin"]["amount_cents"], frame["seq"]) == (1000, done["fulfilled_seq"])
        live, resumed, fresh = await seen.views()
    assert [(p[0], p[2]) for p in fresh.pinned()] == [(pinned["order"]["id"], 1000)]
    assert live.pin_entries == resumed.pin_entries == [frame["seq"]]


async def test_rooms_of_hosts_who_cannot_receive_money_sell_nothing_and_say_why(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    # A host who started payout onboarding at Stripe but has not finished it.
    pending = await host_with_room(http, fake, onboard=False, name="PendingPia")
    # A host without an account: an anonymous session.
    anonymous_host = await anonymous(http)
    room = await create_room(http, anonymous_host, name="no account here")
    anon_me = await enter(http, room["code"], "AnonAnna", token=anonymous_host)
    not_yours = await http.post(
        "/api/v1/payments/payout-account/onboarding", json={}, headers=bearer(anonymous_host)
    )
    assert error_code(not_yours) == (403, "account_required"), not_yours.text

    for code, room_id, host_me, told_host in (
        (pending.code, pending.room_id, pending.me, "host_not_onboarded"),
        (room["code"], room["id"], anon_me, "anonymous_host"),
    ):
        async with audience(stripe_stack, http, code) as seen:
            buyer = await enter(http, code, "WouldBuy")
            seq = await say(http, code, buyer, "take my money")
            await seen.leave()
            for token, reason in ((buyer.token, "host_not_onboarded"), (None, "host_not_onboarded")):
                offer = await sales(http, code, token)
                assert (offer["enabled"], offer["disabled_reason"]) == (False, reason), offer
            offer = await sales(http, code, host_me.token)
            assert (offer["enabled"], offer["disabled_reason"]) == (False, told_host), offer
            for item in (
                {"pin": {"target_seq": seq, "tier_cents": 100}},
                {"tip": {"amount_cents": 500, "note": "for you"}},
            ):
                refused = await http.post(
                    f"/api/v1/rooms/{code}/orders",
                    json={"idempotency_key": new_key(), **item},
                    headers=bearer(buyer.token),
                )
                assert error_code(refused) == (409, "payments_not_enabled"), refused.text
            assert not [
                intent
                for intent in await stripe_objects(fake, "payment_intents")
                if intent["metadata"].get("room_id") == room_id
            ]
            assert await say(http, code, host_me, "nothing sold here") == seq + 1
            views = await seen.views()
        assert all(view.shown() == ([], {}) and not view.pin_entries for view in views)

    # Once the pending host finishes onboarding at Stripe, their room sells.
    await control(fake, "complete_onboarding", pending.account)
    refreshed = await http.get(
        "/api/v1/payments/payout-account", params={"refresh": "true"}, headers=bearer(pending.access)
    )
    assert refreshed.json()["account"]["can_receive"] is True
    offer = await sales(http, pending.code)
    assert (offer["enabled"], offer["disabled_reason"]) == (True, "")
    buyer = await enter(http, pending.code, "BuysAtLast")
    created = await order(http, pending.code, buyer, {"tip": {"amount_cents": 500}})
    assert created["order"]["state"] == "awaiting_payment"
    assert (await pay(fake, intent_of(created)))["error"] is None
    await order_in(http, buyer.token, created["order"]["id"], "fulfilled")

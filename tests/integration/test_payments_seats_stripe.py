"""Back Room seats paid at Stripe — the local fake of Stripe's API (tests/fakestripe) with real signed
webhooks — through the whole platform in-process: a seat is granted only when Stripe's webhook says
the payment succeeded, duplicated and replayed webhooks grant one seat, and a payment that lands after
the last seat was taken is refunded at Stripe in full, the host's transfer reversed and the fee given
back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from payments_platform import Member, Platform, running_platform
from test_payments_seats import buyer, seats_of, set_back_room
from test_payments_stripe import _control, _endpoints, _onboarded_host, _payments_env, stripe_platform
from test_rooms_service import signing_key

from tests.fakestripe import FakeStripe

__all__ = ["signing_key", "stripe_platform"]


@pytest_asyncio.fixture(scope="module")
async def platform(
    database_url: str, redis_url: str, signing_key: Path, stripe_platform: FakeStripe
) -> AsyncIterator[Platform]:
    async with running_platform(
        database_url, redis_url, signing_key, payments=_payments_env(stripe_platform, 3600)
    ) as running:
        await _endpoints(stripe_platform, running.base_url)
        yield running


async def _seat_room(
    platform: Platform, fake: FakeStripe, *, price: int, seats: int
) -> tuple[str, dict[str, Any]]:
    host, room, _account = await _onboarded_host(platform, fake)
    await set_back_room(platform, host, room["id"], enabled=True, seat_price_cents=price, seat_limit=seats)
    return host, room


async def _seat_order(platform: Platform, member: Member) -> tuple[dict[str, Any], str]:
    """A seat order and its PaymentIntent, not paid yet."""
    created = await platform.order(member, {"seat": {}})
    assert created["client_secret"].startswith("pi_")
    return created["order"], created["client_secret"].split("_secret_")[0]


async def test_a_seat_is_one_destination_charge_granted_by_the_webhook(
    platform: Platform, stripe_platform: FakeStripe
) -> None:
    host, room = await _seat_room(platform, stripe_platform, price=1200, seats=2)
    access, fan = await buyer(platform, room["code"])
    order, intent_id = await _seat_order(platform, fan)
    intent = next(i for i in await _control(stripe_platform, "payment_intents") if i["id"] == intent_id)
    assert (intent["amount"], intent["application_fee_amount"]) == (1200, 120)
    assert intent["metadata"] == {"order_id": order["id"], "kind": "seat", "room_id": room["id"]}
    assert intent["description"] == "ChatPop Back Room seat"

    # Stripe holds the webhook: the money moved, but nothing is granted until payments hears it.
    await _control(stripe_platform, "pause")
    try:
        paid = await _control(stripe_platform, "pay", intent_id)
        assert paid["error"] is None
        await asyncio.sleep(0.5)
        assert (await platform.get_order(order["id"], access))["state"] == "awaiting_payment"
        assert list((await seats_of(platform, host, room["id"])).seats) == []
    finally:
        await _control(stripe_platform, "resume")
    done = await platform.settle(order["id"], access, "fulfilled")
    assert done["refund_reason"] == ""
    seats = await seats_of(platform, host, room["id"])
    assert [(s.participant_id, s.order_id, s.price_cents) for s in seats.seats] == [
        (fan.participant_id, order["id"], 1200)
    ]
    assert await platform.ledger(order["id"]) == [("charge", 1200), ("fee", 120)]


async def test_duplicated_and_replayed_webhooks_grant_one_seat(
    platform: Platform, stripe_platform: FakeStripe
) -> None:
    host, room = await _seat_room(platform, stripe_platform, price=800, seats=3)
    access, fan = await buyer(platform, room["code"])
    order, intent_id = await _seat_order(platform, fan)
    await _control(stripe_platform, "chaos", duplicates=3)
    try:
        await _control(stripe_platform, "pay", intent_id)
        await platform.settle(order["id"], access, "fulfilled")
        await _control(stripe_platform, "wait_idle")
    finally:
        await _control(stripe_platform, "calm")
    event = next(
        e
        for e in await _control(stripe_platform, "events", "payment_intent.succeeded")
        if e["data"]["object"]["id"] == intent_id
    )
    for _ in range(2):
        await _control(stripe_platform, "replay", event["id"])
    await _control(stripe_platform, "wait_idle")

    deliveries = await _control(stripe_platform, "deliveries", event=event["id"])
    assert sum(1 for d in deliveries if d["outcome"] == "succeeded") >= 4
    succeeded = [e for e in await platform.events_of(order["id"]) if e[0] == "payment_intent.succeeded"]
    assert succeeded == [("payment_intent.succeeded", "webhook", "paid")]
    seats = await seats_of(platform, host, room["id"])
    assert [(s.participant_id, s.order_id) for s in seats.seats] == [(fan.participant_id, order["id"])]
    assert seats.back_room.seats_taken == 1
    assert await platform.ledger(order["id"]) == [("charge", 800), ("fee", 80)]
    assert (await platform.get_order(order["id"], access))["state"] == "fulfilled"


async def test_payments_racing_for_the_last_seats_are_refunded_at_stripe_in_full(
    platform: Platform, stripe_platform: FakeStripe
) -> None:
    host, room = await _seat_room(platform, stripe_platform, price=600, seats=2)
    buyers = [await buyer(platform, room["code"]) for _ in range(6)]
    orders = [await _seat_order(platform, member) for _, member in buyers]
    results = await asyncio.gather(*(_control(stripe_platform, "pay", intent_id) for _, intent_id in orders))
    assert all(result["error"] is None for result in results)
    settled = await asyncio.gather(
        *(
            platform.settle(order["id"], access, "fulfilled", "refunded")
            for (order, _), (access, _) in zip(orders, buyers, strict=True)
        )
    )
    granted = [order for order in settled if order["state"] == "fulfilled"]
    refunded = [order for order in settled if order["state"] == "refunded"]
    assert (len(granted), len(refunded)) == (2, 4)
    assert {order["refund_reason"] for order in refunded} == {"seats_full"}

    intents = {order["id"]: intent_id for order, intent_id in orders}
    stripe_refunds = await _control(stripe_platform, "refunds")
    charges = await _control(stripe_platform, "charges")
    reversals = await _control(stripe_platform, "transfer_reversals")
    for order in refunded:
        intent_id = intents[order["id"]]
        mine = [r for r in stripe_refunds if r["payment_intent"] == intent_id]
        assert [(r["amount"], r["status"]) for r in mine] == [(600, "succeeded")]
        charge = next(c for c in charges if c["payment_intent"] == intent_id)
        assert [r["amount"] for r in reversals if r["transfer"] == charge["transfer"]] == [540]
        assert await platform.ledger(order["id"]) == [
            ("charge", 600),
            ("fee", 60),
            ("refund", 600),
            ("fee_refund", 60),
            ("transfer_reversal", 540),
        ]
    for order in granted:
        assert not [r for r in stripe_refunds if r["payment_intent"] == intents[order["id"]]]
    seats = await seats_of(platform, host, room["id"])
    assert sorted(s.order_id for s in seats.seats) == sorted(order["id"] for order in granted)

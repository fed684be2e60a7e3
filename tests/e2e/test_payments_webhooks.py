"""Stripe's webhooks as they really come, through the edge to payments: the same event many times,
replayed later, out of order, lost for good, or with a signature that must not be believed. A room's
clients (live, resumed, fresh) see each paid pin and tip exactly once, and nothing that Stripe did
not say.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx

from tests.e2e.chat import bearer
from tests.e2e.conftest import Stack
from tests.e2e.money import (
    audience,
    calm_after,
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
    say,
    stays,
    webhook_event,
)

WEBHOOK = "/api/v1/payments/stripe/webhook"


async def test_a_webhook_delivered_ten_times_replayed_and_reordered_pins_and_tips_once(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    host = await host_with_room(http, fake)
    async with audience(stripe_stack, http, host.code) as seen:
        buyer = await enter(http, host.code, "OnceOnly")
        tipper = await enter(http, host.code, "TipsOnce")
        seq = await say(http, host.code, buyer, "pin this, just once")
        await seen.leave()
        # Every event goes out ten times; the events are held, then sent newest first.
        await control(fake, "chaos", duplicates=9, hold=1000, hold_order="reversed")
        pin = await order(http, host.code, buyer, {"pin": {"target_seq": seq, "tier_cents": 500}})
        tip = await order(http, host.code, tipper, {"tip": {"amount_cents": 700, "note": "ten times?"}})
        for created in (pin, tip):
            assert (await pay(fake, intent_of(created)))["error"] is None
        succeeded = [
            await webhook_event(fake, "payment_intent.succeeded", intent_of(created))
            for created in (pin, tip)
        ]
        assert await control(fake, "release_held") >= 6
        pin_done = await order_in(http, buyer.token, pin["order"]["id"], "fulfilled")
        tip_done = await order_in(http, tipper.token, tip["order"]["id"], "fulfilled")
        await control(fake, "wait_idle", 30.0)
        # Later, Stripe sends both again.
        await control(fake, "calm")
        for event in succeeded:
            assert await control(fake, "replay", event["id"]) == 1
        await control(fake, "wait_idle", 30.0)

        for created, event in zip((pin, tip), succeeded, strict=True):
            deliveries = await control(fake, "deliveries", event=event["id"])
            assert [d["outcome"] for d in deliveries] == ["succeeded"] * 11, deliveries
            assert sorted(d["kind"] for d in deliveries) == ["duplicate"] * 9 + ["event", "replay"]
            # The payment's success went out before the PaymentIntent's creation.
            created_event = await webhook_event(fake, "payment_intent.created", intent_of(created))
            records = await control(fake, "deliveries")
            order_sent = [r["event"] for r in records if r["event"] in (event["id"], created_event["id"])]
            assert order_sent.index(event["id"]) < order_sent.index(created_event["id"])

        closing = await say(http, host.code, host.me, "that was all")
        live, resumed, fresh = await seen.views()
    # One message, one pin, one tip, one message: nothing more was appended.
    assert sorted([seq, pin_done["fulfilled_seq"], tip_done["fulfilled_seq"], closing]) == list(
        range(seq, seq + 4)
    )
    for view in (live, resumed):
        assert view.pin_entries == [pin_done["fulfilled_seq"]]
        assert view.tip_entries == [tip_done["fulfilled_seq"]]
    assert fresh.tip_entries == [tip_done["fulfilled_seq"]]
    assert [(p[0], p[2]) for p in fresh.pinned()] == [(pin["order"]["id"], 500)]
    assert fresh.tips == {tip_done["fulfilled_seq"]: ("TipsOnce", 700, "ten times?")}
    # The host earned each once.
    earned = (await http.get("/api/v1/payments/earnings", headers=bearer(host.access))).json()
    assert (earned["pins"]["gross_cents"], earned["pins"]["count"]) == (500, 1)
    assert (earned["tips"]["gross_cents"], earned["tips"]["fee_cents"], earned["tips"]["count"]) == (
        700,
        70,
        1,
    )


async def test_a_success_webhook_lost_for_good_is_found_by_reconciliation(
    reconciling_stripe_stack: Stack,
) -> None:
    stack = reconciling_stripe_stack
    fake = fake_of(stack)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http, calm_after(fake):
        host = await host_with_room(http, fake)
        async with audience(stack, http, host.code) as seen:
            buyer = await enter(http, host.code, "LostAndFound")
            seq = await say(http, host.code, buyer, "pinned, one way or another")
            await seen.leave()
            await control(fake, "chaos", drop_types=["payment_intent.succeeded"])
            created = await order(http, host.code, buyer, {"pin": {"target_seq": seq, "tier_cents": 200}})
            assert (await pay(fake, intent_of(created)))["error"] is None
            event = await webhook_event(fake, "payment_intent.succeeded", intent_of(created))
            frame = await seen.live_socket.wait_for(lambda f: f["type"] == "paid_pin", timeout=20)
            done = await order_in(http, buyer.token, created["order"]["id"], "fulfilled")
            assert done["fulfilled_seq"] == frame["seq"]
            # No webhook ever brought it: Stripe dropped every delivery of the event.
            deliveries = await control(fake, "deliveries", event=event["id"])
            assert deliveries and {d["outcome"] for d in deliveries} == {"dropped"}, deliveries
            live, resumed, fresh = await seen.views()
    assert [(p[0], p[1], p[2]) for p in fresh.pinned()] == [(created["order"]["id"], seq, 200)]
    assert live.pin_entries == resumed.pin_entries == [frame["seq"]]


def _signed(payload: bytes, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


async def test_forged_stale_and_future_signatures_are_refused_and_change_nothing(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    host = await host_with_room(http, fake)
    async with audience(stripe_stack, http, host.code) as seen:
        buyer = await enter(http, host.code, "SignedSam")
        seq = await say(http, host.code, buyer, "pin me, for real")
        await seen.leave()
        created = await order(http, host.code, buyer, {"pin": {"target_seq": seq, "tier_cents": 500}})
        order_id, intent = created["order"]["id"], intent_of(created)

        # Stripe's own deliveries, each signed wrongly: another secret, ten minutes old, ten ahead.
        await control(fake, "set_retry_delays", [0.05])
        await control(fake, "chaos", signature="wrong_secret")
        assert (await pay(fake, intent))["error"] is None
        event = await webhook_event(fake, "payment_intent.succeeded", intent)
        await control(fake, "wait_idle", 10.0)
        for signature in ("stale", "future"):
            await control(fake, "replay", event["id"], signature=signature)
        await control(fake, "wait_idle", 10.0)
        deliveries = await control(fake, "deliveries", event=event["id"])
        assert {d["signature"] for d in deliveries} == {"wrong_secret", "stale", "future"}
        assert {(d["outcome"], d["status"]) for d in deliveries} == {("failed", 400)}, deliveries

        # And anyone else's: Stripe's event sent on by hand, or made up, with such signatures.
        payload = json.dumps(event).encode()
        forged = {**event, "id": f"evt_forged_{order_id.replace('-', '')}"}
        now = int(time.time())
        secret = fake.webhook_secret
        attempts: list[tuple[bytes, str]] = [
            (payload, _signed(payload, "whsec_not_stripes_secret", now)),
            (payload, _signed(payload, secret, now - 600)),
            (payload, _signed(payload, secret, now + 600)),
            (payload, _signed(payload + b" ", secret, now)),
            (json.dumps(forged).encode(), _signed(json.dumps(forged).encode(), "whsec_guess", now)),
            (payload, "t=garbage"),
        ]
        for body, signature in attempts:
            refused = await http.post(
                WEBHOOK,
                content=body,
                headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
            )
            assert error_code(refused) == (400, "invalid_signature"), refused.text
        unsigned = await http.post(WEBHOOK, content=payload, headers={"Content-Type": "application/json"})
        assert error_code(unsigned) == (400, "invalid_signature"), unsigned.text

        async def nothing_changed() -> bool:
            current = await read_order(http, buyer.token, order_id)
            board, last = await fresh_view(http, host.code, buyer.token)
            return (current["state"], board.pins, last) == ("awaiting_payment", [], seq) and not any(
                f["type"] == "paid_pin" for f in seen.live_socket.frames
            )

        await stays(nothing_changed, "a badly signed webhook changed something", seconds=0.5)
        assert await say(http, host.code, host.me, "nothing to see") == seq + 1

        # The same event, properly signed, is believed.
        await control(fake, "calm")
        await control(fake, "replay", event["id"])
        frame = await seen.live_socket.wait_for(lambda f: f["type"] == "paid_pin", timeout=20)
        done = await order_in(http, buyer.token, order_id, "fulfilled")
        assert done["fulfilled_seq"] == frame["seq"] == seq + 2
        live, resumed, fresh = await seen.views()
    assert [(p[0], p[2]) for p in fresh.pinned()] == [(order_id, 500)]
    assert live.pin_entries == resumed.pin_entries == [frame["seq"]]

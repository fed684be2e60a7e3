"""payments against Stripe — a local fake of Stripe's API (tests/fakestripe) with real signed webhooks —
through the whole platform in-process (tests/integration/payments_platform.py): the official stripe
library talks to the fake, the fake's webhooks reach the edge's endpoint, and buyers pay as Stripe.js
would (the fake's control API confirms a PaymentIntent with a test card).

Reconciliation runs rarely here, so what a webhook did is the webhook's (test_payments_reconcile.py
has a platform with frequent rounds).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from payments_platform import Member, Platform, key, running_platform
from test_rooms_service import signing_key

from tests.fakestripe import FakeStripe, FakeStripeServer
from tests.fakestripe.server import DEFAULT_RETRY_DELAYS

__all__ = ["signing_key"]

WEBHOOK = "/api/v1/payments/stripe/webhook"


@pytest.fixture(scope="module")
def stripe_platform(fake_stripe_server: FakeStripeServer) -> Iterator[FakeStripe]:
    """One platform (keys, objects, events) of the fake for this module."""
    fake = fake_stripe_server.new_platform()
    yield fake
    fake.close()


def _payments_env(fake: FakeStripe, reconcile_interval: float) -> dict[str, Any]:
    env = fake.env()
    return {
        "stripe_api_base": env["STRIPE_API_BASE"],
        "stripe_secret_key": env["STRIPE_SECRET_KEY"],
        "stripe_publishable_key": env["STRIPE_PUBLISHABLE_KEY"],
        "stripe_webhook_secret": env["STRIPE_WEBHOOK_SECRET"],
        "reconcile_interval": reconcile_interval,
    }


async def _endpoints(fake: FakeStripe, base_url: str) -> None:
    """Stripe's two webhook endpoints at the edge: the platform's events, and connected accounts'."""
    await asyncio.to_thread(fake.control.add_webhook_endpoint, f"{base_url}{WEBHOOK}")
    await asyncio.to_thread(
        fake.control.add_webhook_endpoint, f"{base_url}{WEBHOOK}", ["account.updated"], connect=True
    )


@pytest_asyncio.fixture(scope="module")
async def platform(
    database_url: str, redis_url: str, signing_key: Path, stripe_platform: FakeStripe
) -> AsyncIterator[Platform]:
    async with running_platform(
        database_url, redis_url, signing_key, payments=_payments_env(stripe_platform, 3600)
    ) as running:
        await _endpoints(stripe_platform, running.base_url)
        yield running


async def _control(fake: FakeStripe, call: str, *args: Any, **kwargs: Any) -> Any:
    """A call of the fake's control API, off the event loop (which serves the webhooks meanwhile)."""
    return await asyncio.to_thread(getattr(fake.control, call), *args, **kwargs)


async def _until(check: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _onboarded_host(platform: Platform, fake: FakeStripe) -> tuple[str, dict[str, Any], str]:
    """A host whose Connect account finished onboarding at Stripe, and their room: (token, room, acct)."""
    host = await platform.account()
    room = await platform.room(host)
    started = await platform.call(
        "POST", "/api/v1/payments/payout-account/onboarding", expect=200, token=host, json={}
    )
    account = started["account"]["stripe_account_id"]
    await _control(fake, "complete_onboarding", account)

    async def can_receive() -> bool:
        body = await platform.call("GET", "/api/v1/payments/payout-account", expect=200, token=host)
        return bool(body["account"]["can_receive"])

    await _until(can_receive, "account.updated never reached payments")
    return host, room, account


def _intent(fake: FakeStripe, intent_id: str) -> dict[str, Any]:
    return next(intent for intent in fake.control.payment_intents() if intent["id"] == intent_id)


async def _buyer(platform: Platform, code: str) -> tuple[str, Member]:
    access = await platform.anonymous()
    return access, await platform.join(code, access)


async def _paid_order(
    platform: Platform, fake: FakeStripe, buyer: Member, item: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """An order paid with the test card at Stripe; (the order when fulfilled, its PaymentIntent)."""
    created = await platform.order(buyer, item)
    intent_id = created["client_secret"].split("_secret_")[0]
    paid = await _control(fake, "pay", intent_id)
    assert paid["error"] is None
    order = await platform.settle(created["order"]["id"], buyer.token, "fulfilled", "refunded")
    return order, intent_id


# --- onboarding ------------------------------------------------------------------------------------


async def test_onboarding_creates_one_express_account_and_learns_its_state(
    platform: Platform, stripe_platform: FakeStripe
) -> None:
    host = await platform.account()
    first = await platform.call(
        "POST", "/api/v1/payments/payout-account/onboarding", expect=200, token=host, json={}
    )
    account = first["account"]["stripe_account_id"]
    assert account.startswith("acct_") and first["account"]["can_receive"] is False
    assert first["onboarding_url"].startswith(f"{stripe_platform.url}/connect/onboarding/{account}")
    # Asking again continues with the same account (a fresh link).
    second = await platform.call(
        "POST", "/api/v1/payments/payout-account/onboarding", expect=200, token=host, json={}
    )
    assert second["account"]["stripe_account_id"] == account
    assert second["onboarding_url"] != first["onboarding_url"]
    created = [
        request
        for request in await _control(stripe_platform, "requests", method="POST", path="/v1/accounts")
        if request["path"] == "/v1/accounts"
    ]
    mine = [r for r in created if r["params"].get("metadata", {}).get("identity_id")]
    assert mine and all(r["params"]["type"] == "express" for r in mine)
    assert any(r["idempotency_key"].startswith("payout_account:") for r in mine)
    accounts = [a for a in await _control(stripe_platform, "accounts") if a["id"] == account]
    assert len(accounts) == 1
    links = await _control(stripe_platform, "requests", method="POST", path="/v1/account_links")
    assert links[-1]["params"]["return_url"] == "https://chat.example.test/payouts?returned=1"
    assert links[-1]["params"]["type"] == "account_onboarding"

    # Not in test mode: the stand-in onboarding is refused.
    refused = await platform.call(
        "POST", "/api/v1/payments/payout-account/test-complete", expect=409, token=host
    )
    assert refused["error"]["code"] == "not_test_mode"

    await _control(stripe_platform, "complete_onboarding", account, payouts_enabled=False)

    async def charges_enabled() -> dict[str, Any] | None:
        body = await platform.call("GET", "/api/v1/payments/payout-account", expect=200, token=host)
        return body["account"] if body["account"]["charges_enabled"] else None

    learned = await _until(charges_enabled, "account.updated never reached payments")
    assert (learned["can_receive"], learned["payouts_enabled"], learned["details_submitted"]) == (
        True,
        False,
        True,
    )
    # Refreshing asks Stripe directly.
    await _control(stripe_platform, "complete_onboarding", account)
    await _control(stripe_platform, "pause")
    try:
        refreshed = await platform.call(
            "GET", "/api/v1/payments/payout-account?refresh=true", expect=200, token=host
        )
    finally:
        await _control(stripe_platform, "resume")
    assert refreshed["account"]["payouts_enabled"] is True


# --- paying ----------------------------------------------------------------------------------------


async def test_a_paid_pin_is_one_destination_charge_confirmed_by_webhook(
    platform: Platform, stripe_platform: FakeStripe
) -> None:
    _, room, account = await _onboarded_host(platform, stripe_platform)
    access, buyer = await _buyer(platform, room["code"])
    seq = await platform.say(buyer, "pin this one")
    config = await platform.call("GET", "/api/v1/payments/config", expect=200)
    assert (config["mode"], config["publishable_key"]) == ("stripe", stripe_platform.publishable_key)
    assert (await platform.sales(room["code"], buyer.token))["mode"] == "stripe"

    order_key = key()
    created = await platform.order(
        buyer, {"pin": {"target_seq": seq, "tier_cents": 1000}}, idempotency_key=order_key
    )
    order = created["order"]
    assert (order["state"], order["amount_cents"], order["fee_cents"], order["test_mode"]) == (
        "awaiting_payment",
        1000,
        100,
        False,
    )
    intent_id = created["client_secret"].split("_secret_")[0]
    intent = await asyncio.to_thread(_intent, stripe_platform, intent_id)
    assert intent["client_secret"] == created["client_secret"]
    assert (intent["amount"], intent["currency"], intent["application_fee_amount"]) == (1000, "usd", 100)
    assert intent["transfer_data"]["destination"] == account
    assert intent["metadata"] == {"order_id": order["id"], "kind": "pin", "room_id": room["id"]}
    requests = await _control(stripe_platform, "requests", method="POST", path="/v1/payment_intents")
    assert [r["idempotency_key"] for r in requests if r["path"] == "/v1/payment_intents"][-1] == (
        f"order:{order['id']}:payment_intent"
    )
    # A retry answers the same order and the same PaymentIntent's secret.
    again = await platform.order(
        buyer, {"pin": {"target_seq": seq, "tier_cents": 1000}}, expect=200, idempotency_key=order_key
    )
    assert (again["order"]["id"], again["client_secret"]) == (order["id"], created["client_secret"])
    stand_in = await platform.call(
        "POST",
        f"/api/v1/payments/orders/{order['id']}/test-confirm",
        template="/api/v1/payments/orders/{order_id}/test-confirm",
        expect=409,
        token=access,
        json={"outcome": "succeed"},
    )
    assert stand_in["error"]["code"] == "not_test_mode"

    declined = await _control(stripe_platform, "pay", intent_id, "pm_card_chargeDeclined")
    assert declined["error"]["code"] == "card_declined"

    async def declined_seen() -> dict[str, Any] | None:
        current = await platform.get_order(order["id"], access)
        return current if current["payment_error"] else None

    current = await _until(declined_seen, "payment_intent.payment_failed never reached payments")
    assert current["state"] == "awaiting_payment"

    assert (await _control(stripe_platform, "pay", intent_id))["error"] is None
    done = await platform.settle(order["id"], access, "fulfilled")
    assert done["payment_error"] == "" and done["fulfilled_seq"] is not None
    assert await platform.ledger(order["id"]) == [("charge", 1000), ("fee", 100)]
    events = await platform.events_of(order["id"])
    assert ("payment_intent.payment_failed", "webhook", "payment_error") in events
    assert ("payment_intent.succeeded", "webhook", "paid") in events
    pins = (await platform.sales(room["code"], buyer.token))["paid_pins"]
    assert [(p["id"], p["amount_cents"]) for p in pins] == [(order["id"], 1000)]


async def test_stripe_failing_while_an_order_opens_is_mended_by_the_same_key(
    platform: Platform, stripe_platform: FakeStripe
) -> None:
    _, room, _ = await _onboarded_host(platform, stripe_platform)
    _, buyer = await _buyer(platform, room["code"])
    order_key = key()
    # Stripe cannot be reached at all: the order is stored, its payment not opened yet.
    await _control(
        stripe_platform,
        "fail_next",
        10,
        status=500,
        method="POST",
        path="/v1/payment_intents",
        should_retry=False,
    )
    failed = await platform.order(
        buyer, {"tip": {"amount_cents": 700}}, expect=503, idempotency_key=order_key
    )
    assert failed["error"]["code"] == "service_unavailable"
    stored = await platform.pool.fetchrow(
        "SELECT id, state, stripe_payment_intent_id FROM payments.orders WHERE idempotency_key = $1",
        order_key,
    )
    assert (stored["state"], stored["stripe_payment_intent_id"]) == ("created", None)
    await _control(stripe_platform, "clear_faults")
    # Then Stripe creates the PaymentIntent but its answer is lost: the same key reaches the same one.
    await _control(
        stripe_platform,
        "fail_next",
        1,
        status=500,
        method="POST",
        path="/v1/payment_intents",
        after=True,
        should_retry=False,
    )
    opened = await platform.order(
        buyer, {"tip": {"amount_cents": 700}}, expect=200, idempotency_key=order_key
    )
    await _control(stripe_platform, "clear_faults")
    assert opened["order"]["id"] == str(stored["id"])
    assert opened["order"]["state"] == "awaiting_payment" and opened["client_secret"]
    intents = [
        intent
        for intent in await _control(stripe_platform, "payment_intents")
        if intent["metadata"].get("order_id") == opened["order"]["id"]
    ]
    keys = {
        r["idempotency_key"]
        for r in await _control(stripe_platform, "requests", method="POST", path="/v1/payment_intents")
        if r["path"] == "/v1/payment_intents"
        and r["params"].get("metadata", {}).get("order_id") == opened["order"]["id"]
    }
    assert keys == {f"order:{opened['order']['id']}:payment_intent"}
    assert len(intents) == 1, "one order, one PaymentIntent"


# --- webhooks --------------------------------------------------------------------------------------


def _signed(payload: bytes, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


async def test_the_webhook_takes_only_recent_signed_events_and_each_once(
    platform: Platform, stripe_platform: FakeStripe
) -> None:
    event = {
        "id": f"evt_{key()}",
        "object": "event",
        "type": "customer.created",
        "created": int(time.time()),
        "data": {"object": {"id": "cus_1", "object": "customer"}},
    }
    payload = json.dumps(event).encode()
    secret = stripe_platform.webhook_secret
    now = int(time.time())

    async def post(signature: str, body: bytes = payload, expect: int = 200) -> Any:
        return await platform.call(
            "POST",
            WEBHOOK,
            expect=expect,
            content=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
        )

    for bad in (
        _signed(payload, secret, now + 120),  # signed in the future
        _signed(payload, secret, now - 600),  # too old
        _signed(payload, "whsec_someone_else", now),
        _signed(payload + b" ", secret, now),  # the body was changed
        "",
    ):
        refused = await post(bad, expect=400)
        assert refused["error"]["code"] == "invalid_signature"
    assert (
        await platform.pool.fetchval("SELECT count(*) FROM payments.stripe_events WHERE id = $1", event["id"])
        == 0
    )

    first = await post(_signed(payload, secret, now))
    assert first == {"received": True, "event_id": event["id"], "duplicate": False}
    again = await post(_signed(payload, secret, now + 1))
    assert again["duplicate"] is True
    row = await platform.pool.fetchrow(
        "SELECT type, source, handled, outcome FROM payments.stripe_events WHERE id = $1", event["id"]
    )
    assert tuple(row) == ("customer.created", "webhook", False, "ignored")


async def test_duplicated_and_reordered_deliveries_change_nothing_twice(
    platform: Platform, stripe_platform: FakeStripe
) -> None:
    _, room, _ = await _onboarded_host(platform, stripe_platform)
    access, buyer = await _buyer(platform, room["code"])
    await _control(stripe_platform, "chaos", duplicates=2, hold=3, hold_order="reversed")
    try:
        created = await platform.order(buyer, {"tip": {"amount_cents": 1500, "note": "twice?"}})
        intent_id = created["client_secret"].split("_secret_")[0]
        await _control(stripe_platform, "pay", intent_id)
        await _control(stripe_platform, "release_held")
        done = await platform.settle(created["order"]["id"], access, "fulfilled")
        await _control(stripe_platform, "wait_idle")
    finally:
        await _control(stripe_platform, "calm")
    assert await platform.ledger(done["id"]) == [("charge", 1500), ("fee", 150)]
    succeeded = [e for e in await platform.events_of(done["id"]) if e[0] == "payment_intent.succeeded"]
    assert succeeded == [("payment_intent.succeeded", "webhook", "paid")]
    deliveries = await _control(stripe_platform, "deliveries", type="payment_intent.succeeded")
    assert sum(1 for d in deliveries if d["outcome"] == "succeeded") >= 2


async def test_a_webhook_signed_in_the_future_is_refused_until_stripe_sends_it_properly(
    platform: Platform, stripe_platform: FakeStripe
) -> None:
    _, room, _ = await _onboarded_host(platform, stripe_platform)
    access, buyer = await _buyer(platform, room["code"])
    created = await platform.order(buyer, {"tip": {"amount_cents": 200}})
    intent_id = created["client_secret"].split("_secret_")[0]
    await _control(stripe_platform, "chaos", signature="future", signature_skew=600)
    # Stripe gives up after one quick retry here (it keeps trying for days).
    await _control(stripe_platform, "set_retry_delays", [0.05])
    try:
        await _control(stripe_platform, "pay", intent_id)
        await _control(stripe_platform, "wait_idle", 10.0)
    finally:
        await _control(stripe_platform, "calm")
        await _control(stripe_platform, "set_retry_delays", DEFAULT_RETRY_DELAYS)
    assert (await platform.get_order(created["order"]["id"], access))["state"] == "awaiting_payment"
    refused = await _control(stripe_platform, "deliveries", type="payment_intent.succeeded", outcome="failed")
    assert any(d["status"] == 400 for d in refused)
    event = next(
        e
        for e in await _control(stripe_platform, "events", "payment_intent.succeeded")
        if e["data"]["object"]["id"] == intent_id
    )
    await _control(stripe_platform, "replay", event["id"])
    await platform.settle(created["order"]["id"], access, "fulfilled")


# --- refunds and disputes ----------------------------------------------------------------------------


async def test_an_admin_refund_reverses_the_transfer_and_the_fee(
    platform: Platform, stripe_platform: FakeStripe
) -> None:
    _, room, _ = await _onboarded_host(platform, stripe_platform)
    access, buyer = await _buyer(platform, room["code"])
    order, intent_id = await _paid_order(platform, stripe_platform, buyer, {"tip": {"amount_cents": 2000}})
    admin = await platform.admin()
    refund = await platform.call(
        "POST",
        f"/api/v1/admin/orders/{order['id']}/refund",
        template="/api/v1/admin/orders/{order_id}/refund",
        expect=200,
        token=admin,
        json={"reason": "Asked by the buyer"},
    )
    assert refund["changed"] is True
    refunded = await platform.settle(order["id"], access, "refunded")
    assert refunded["refund_reason"] == "admin"
    stripe_refunds = [
        r for r in await _control(stripe_platform, "refunds") if r["payment_intent"] == intent_id
    ]
    assert len(stripe_refunds) == 1 and stripe_refunds[0]["status"] == "succeeded"
    assert stripe_refunds[0]["amount"] == 2000 and stripe_refunds[0]["metadata"]["order_id"] == order["id"]
    requests = await _control(stripe_platform, "requests", method="POST", path="/v1/refunds")
    mine = [r for r in requests if r["params"].get("payment_intent") == intent_id]
    assert mine[0]["idempotency_key"] == f"order:{order['id']}:refund"
    assert mine[0]["params"]["reverse_transfer"] in (True, "true")
    assert mine[0]["params"]["refund_application_fee"] in (True, "true")
    charge = next(c for c in await _control(stripe_platform, "charges") if c["payment_intent"] == intent_id)
    reversals = [
        r
        for r in await _control(stripe_platform, "transfer_reversals")
        if r["transfer"] == charge["transfer"]
    ]
    assert [r["amount"] for r in reversals] == [1800]
    assert await platform.ledger(order["id"]) == [
        ("charge", 2000),
        ("fee", 200),
        ("refund", 2000),
        ("fee_refund", 200),
        ("transfer_reversal", 1800),
    ]
    # Stripe's own refund events arrive later and change nothing.
    await _control(stripe_platform, "wait_idle")
    assert len(await platform.ledger(order["id"])) == 5


async def test_a_refund_stripe_settles_later_completes_by_webhook(
    platform: Platform, stripe_platform: FakeStripe
) -> None:
    _, room, _ = await _onboarded_host(platform, stripe_platform)
    alice_access, alice = await _buyer(platform, room["code"])
    bob_access, bob = await _buyer(platform, room["code"])
    seq = await platform.say(alice, "race")
    first = await platform.order(alice, {"pin": {"target_seq": seq, "tier_cents": 500}})
    second = await platform.order(bob, {"pin": {"target_seq": seq, "tier_cents": 500}})
    await _control(stripe_platform, "set_refunds_pending", True)
    try:
        await _control(stripe_platform, "pay", first["client_secret"].split("_secret_")[0])
        await platform.settle(first["order"]["id"], alice_access, "fulfilled")
        await _control(stripe_platform, "pay", second["client_secret"].split("_secret_")[0])
        refunding = await platform.settle(second["order"]["id"], bob_access, "refunding")
        assert refunding["refund_reason"] == "outbid"

        async def refund_asked() -> str | None:
            row = await platform.pool.fetchrow(
                "SELECT stripe_refund_id FROM payments.orders WHERE id = $1::uuid", second["order"]["id"]
            )
            return row["stripe_refund_id"] if row else None

        refund_id = await _until(refund_asked, "the refund was never asked of Stripe")
        assert (await platform.get_order(second["order"]["id"], bob_access))["state"] == "refunding"
        await _control(stripe_platform, "settle_refund", refund_id)
    finally:
        await _control(stripe_platform, "set_refunds_pending", False)
    refunded = await platform.settle(second["order"]["id"], bob_access, "refunded")
    assert refunded["refund_reason"] == "outbid"
    kinds = [kind for kind, _ in await platform.ledger(second["order"]["id"])]
    assert kinds == ["charge", "fee", "refund", "fee_refund", "transfer_reversal"]


async def test_a_dispute_is_recorded_in_the_ledger_and_the_audit_log(
    platform: Platform, stripe_platform: FakeStripe
) -> None:
    _, room, _ = await _onboarded_host(platform, stripe_platform)
    _, buyer = await _buyer(platform, room["code"])
    order, intent_id = await _paid_order(platform, stripe_platform, buyer, {"tip": {"amount_cents": 900}})
    dispute = await _control(stripe_platform, "create_dispute", payment_intent=intent_id)

    async def disputed() -> bool:
        return ("dispute", 900) in await platform.ledger(order["id"])

    await _until(disputed, "charge.dispute.created never reached payments")
    admin = await platform.admin()

    async def audited() -> list[Any]:
        return await platform.audit_events(admin, "payment.dispute_created", f"order:{order['id']}")

    events = await _until(audited, "payment.dispute_created never reached the audit log")
    assert len(events) == 1 and f'"dispute_id":"{dispute["id"]}"' in events[0].details_json

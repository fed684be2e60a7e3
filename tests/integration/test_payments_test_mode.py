"""payments in test mode through the whole platform: the real identity, rooms, messaging and payments
servers and the edge, in-process (tests/integration/payments_platform.py). An order is priced by the
server, paid with the test mode's stand-in (the same event handling as Stripe's webhooks), fulfilled by
messaging through payments' outbox, or refunded when messaging refuses it; every step is read back
through the REST API and in payments' tables.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from payments_platform import Member, Platform, key, running_platform
from prometheus_client.parser import text_string_to_metric_families
from test_rooms_service import signing_key

from chatpop.messaging.v1 import messaging_pb2
from chatpop_payments.states import TRANSITIONS, State

__all__ = ["signing_key"]


@pytest_asyncio.fixture(scope="module")
async def platform(database_url: str, redis_url: str, signing_key: Path) -> AsyncIterator[Platform]:
    async with running_platform(database_url, redis_url, signing_key) as running:
        yield running


async def _selling_room(platform: Platform) -> tuple[str, dict[str, Any]]:
    """A registered host's room whose host finished (test) onboarding: (host token, room)."""
    host = await platform.account()
    room = await platform.room(host)
    await platform.onboard_test_host(host)
    return host, room


async def _buyer(platform: Platform, code: str) -> tuple[str, Member]:
    access = await platform.anonymous()
    return access, await platform.join(code, access)


async def _entry(platform: Platform, member: Member, seq: int) -> messaging_pb2.Message:
    page = await platform.messaging.ListMessagesAfter(
        messaging_pb2.ListMessagesAfterRequest(room_id=member.room_id, after_seq=seq - 1, limit=1),
        metadata=(("authorization", f"Bearer {member.token}"),),
        timeout=10,
    )
    assert page.messages and page.messages[0].seq == seq
    entry: messaging_pb2.Message = page.messages[0]
    return entry


async def _metric(platform: Platform, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(platform.payments_metrics, timeout=10)).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def test_a_room_sells_only_once_its_host_can_receive_money(platform: Platform) -> None:
    host = await platform.account()
    room = await platform.room(host)
    _, buyer = await _buyer(platform, room["code"])

    before = await platform.sales(room["code"])
    assert (before["enabled"], before["disabled_reason"], before["mode"]) == (
        False,
        "host_not_onboarded",
        "test",
    )
    assert before["pin_tiers"][:3] == [
        {"amount_cents": 100, "minutes": 10},
        {"amount_cents": 200, "minutes": 15},
        {"amount_cents": 500, "minutes": 20},
    ]
    assert (before["tip_presets_cents"], before["tip_min_cents"], before["tip_max_cents"]) == (
        [100, 200, 500, 1000],
        100,
        50_000,
    )
    # Without a room token nothing is said about the room's pins.
    assert (before["paid_pins"], before["min_pin_cents"], before["my_top_pin_id"]) == ([], None, "")
    refused = await platform.order(buyer, {"tip": {"amount_cents": 500}}, expect=409)
    assert refused["error"]["code"] == "payments_not_enabled"
    assert await platform.call("GET", "/api/v1/payments/payout-account", expect=200, token=host) == {
        "account": None
    }

    account = await platform.onboard_test_host(host)
    assert account["stripe_account_id"].startswith("acct_test_")
    assert (account["charges_enabled"], account["payouts_enabled"], account["test_mode"]) == (
        True,
        True,
        True,
    )
    after = await platform.sales(room["code"], buyer.token)
    assert (after["enabled"], after["disabled_reason"]) == (True, "")
    assert (after["paid_pins"], after["min_pin_cents"], after["my_top_pin_id"]) == ([], 100, "")
    read = await platform.call("GET", "/api/v1/payments/payout-account?refresh=true", expect=200, token=host)
    assert read["account"]["can_receive"] is True
    config = await platform.call("GET", "/api/v1/payments/config", expect=200)
    assert config == {"mode": "test", "currency": "usd", "publishable_key": "", "platform_fee_percent": 10}


async def test_anonymous_hosts_never_sell(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await platform.room(host)
    host_member = await platform.join(room["code"], host)
    for path in (
        "/api/v1/payments/payout-account/onboarding",
        "/api/v1/payments/payout-account/test-complete",
    ):
        body = await platform.call(
            "POST", path, expect=403, token=host, json={} if "onboarding" in path else None
        )
        assert body["error"]["code"] == "account_required"
    mine = await platform.sales(room["code"], host_member.token)
    assert (mine["enabled"], mine["disabled_reason"]) == (False, "anonymous_host")
    _, someone = await _buyer(platform, room["code"])
    theirs = await platform.sales(room["code"], someone.token)
    assert (theirs["enabled"], theirs["disabled_reason"]) == (False, "host_not_onboarded")


async def test_a_tip_is_priced_paid_fulfilled_and_earned(platform: Platform) -> None:
    host, room = await _selling_room(platform)
    access, buyer = await _buyer(platform, room["code"])
    order_key = key()
    created = await platform.order(
        buyer, {"tip": {"amount_cents": 300, "note": "  Great stream!  "}}, idempotency_key=order_key
    )
    order = created["order"]
    assert created["client_secret"] == ""
    assert (order["kind"], order["state"], order["amount_cents"], order["fee_cents"]) == (
        "tip",
        "awaiting_payment",
        300,
        30,
    )
    assert (order["note"], order["test_mode"], order["room_id"]) == ("Great stream!", True, room["id"])

    # The same key answers the same order; the same key for something else is refused.
    again = await platform.order(
        buyer, {"tip": {"amount_cents": 300, "note": "Great stream!"}}, expect=200, idempotency_key=order_key
    )
    assert again["order"]["id"] == order["id"]
    reused = await platform.order(
        buyer, {"tip": {"amount_cents": 400}}, expect=409, idempotency_key=order_key
    )
    assert reused["error"]["code"] == "idempotency_key_reused"
    # A price never comes from the client.
    priced = await platform.order(buyer, {"tip": {"amount_cents": 300}, "amount_cents": 1}, expect=422)
    assert priced["error"]["code"] == "invalid_request"

    declined = await platform.test_confirm(order["id"], access, "decline")
    assert (declined["state"], declined["payment_error"]) == ("awaiting_payment", "Your card was declined.")
    paid = await platform.test_confirm(order["id"], buyer.token)
    assert paid["state"] in ("paid", "fulfilled") and paid["payment_error"] == ""
    done = await platform.settle(order["id"], access, "fulfilled")
    assert done["fulfilled_seq"] is not None

    entry = await _entry(platform, buyer, done["fulfilled_seq"])
    assert entry.kind == messaging_pb2.ENTRY_KIND_TIP
    assert (entry.tip.order_id, entry.tip.amount_cents, entry.tip.currency, entry.tip.note) == (
        order["id"],
        300,
        "usd",
        "Great stream!",
    )
    assert entry.sender_participant_id == buyer.participant_id

    assert await platform.ledger(order["id"]) == [("charge", 300), ("fee", 30)]
    assert await platform.events_of(order["id"]) == [
        ("payment_intent.payment_failed", "test", "payment_error"),
        ("payment_intent.succeeded", "test", "paid"),
    ]
    fulfil = await platform.delivered(f"fulfil:{order['id']}")
    assert fulfil["topic"] == "fulfil"
    # Paying again changes nothing: the order is past it.
    assert (await platform.test_confirm(order["id"], access))["state"] == "fulfilled"
    assert await platform.ledger(order["id"]) == [("charge", 300), ("fee", 30)]

    earnings = await platform.call("GET", "/api/v1/payments/earnings", expect=200, token=host)
    assert earnings["tips"] == {
        "gross_cents": 300,
        "fee_cents": 30,
        "net_cents": 270,
        "refunded_cents": 0,
        "count": 1,
    }
    assert earnings["pins"]["count"] == 0 and earnings["total"]["net_cents"] == 270
    assert [(r["room_id"], r["room_code"], r["room_name"]) for r in earnings["rooms"]] == [
        (room["id"], room["code"], "Money room")
    ]

    mine = await platform.call("GET", "/api/v1/payments/orders?limit=5", expect=200, token=access)
    assert [o["id"] for o in mine["orders"]] == [order["id"]] and mine["has_more"] is False
    stranger = await platform.anonymous()
    assert (
        await platform.error(
            "GET",
            f"/api/v1/payments/orders/{order['id']}",
            expect=404,
            template="/api/v1/payments/orders/{order_id}",
            token=stranger,
        )
        == "order_not_found"
    )
    assert (
        await _metric(
            platform,
            "chatpop_payments_events_total",
            type="payment_intent.succeeded",
            outcome="paid",
            source="test",
        )
        >= 1
    )
    # Observed by the fulfilment after its commit: a moment after the order reads fulfilled.
    deadline = time.monotonic() + 10
    while await _metric(platform, "chatpop_payments_fulfilment_seconds_count", kind="tip") < 1:
        assert time.monotonic() < deadline, "the tip's fulfilment was never timed"
        await asyncio.sleep(0.05)


async def test_two_buyers_outbid_at_once_one_wins_and_the_other_is_refunded(platform: Platform) -> None:
    _, room = await _selling_room(platform)
    alice_access, alice = await _buyer(platform, room["code"])
    bob_access, bob = await _buyer(platform, room["code"])
    seq = await platform.say(alice, "pin me")

    # Both pass the check when ordering (nothing is pinned yet); messaging decides when they are paid.
    first = (await platform.order(alice, {"pin": {"target_seq": seq, "tier_cents": 200}}))["order"]
    second = (await platform.order(bob, {"pin": {"target_seq": seq, "tier_cents": 200}}))["order"]
    assert (first["kind"], first["target_seq"], first["amount_cents"], first["fee_cents"]) == (
        "pin",
        seq,
        200,
        20,
    )
    await platform.test_confirm(first["id"], alice_access)
    won = await platform.settle(first["id"], alice_access, "fulfilled")
    await platform.test_confirm(second["id"], bob_access)
    lost = await platform.settle(second["id"], bob_access, "refunded")
    assert lost["refund_reason"] == "outbid" and "refunded in full" in lost["refund_message"]
    assert lost["fulfilled_seq"] is None
    assert await platform.ledger(second["id"]) == [
        ("charge", 200),
        ("fee", 20),
        ("refund", 200),
        ("fee_refund", 20),
        ("transfer_reversal", 180),
    ]
    refund = await platform.delivered(f"refund:{second['id']}")
    assert refund["topic"] == "refund"

    entry = await _entry(platform, alice, won["fulfilled_seq"])
    assert entry.kind == messaging_pb2.ENTRY_KIND_PAID_PIN and entry.paid_pin.id == first["id"]
    sales = await platform.sales(room["code"], alice.token)
    assert [(p["id"], p["target_seq"], p["amount_cents"]) for p in sales["paid_pins"]] == [
        (first["id"], seq, 200)
    ]
    assert (sales["my_top_pin_id"], sales["min_pin_cents"]) == (first["id"], 500)

    # Now a new pin must outbid the top one, and only its buyer may extend it.
    outbid = await platform.order(bob, {"pin": {"target_seq": seq, "tier_cents": 200}}, expect=409)
    assert outbid["error"]["code"] == "outbid_required"
    not_top = await platform.order(bob, {"extension": {"pin_id": first["id"], "tier_cents": 100}}, expect=409)
    assert not_top["error"]["code"] == "not_top_pin"
    unknown = await platform.order(bob, {"pin": {"target_seq": seq, "tier_cents": 300}}, expect=422)
    assert unknown["error"]["code"] == "unknown_tier"
    extension = (await platform.order(alice, {"extension": {"pin_id": first["id"], "tier_cents": 100}}))[
        "order"
    ]
    assert (extension["kind"], extension["pin_id"]) == ("pin_extension", first["id"])
    await platform.test_confirm(extension["id"], alice_access)
    await platform.settle(extension["id"], alice_access, "fulfilled")
    extended = await platform.sales(room["code"], bob.token)
    assert [(p["id"], p["amount_cents"]) for p in extended["paid_pins"]] == [(first["id"], 300)]
    assert (extended["my_top_pin_id"], extended["min_pin_cents"]) == ("", 500)


async def test_a_pin_on_a_message_that_is_gone_is_refunded(platform: Platform) -> None:
    _, room = await _selling_room(platform)
    access, buyer = await _buyer(platform, room["code"])
    seq = await platform.say(buyer, "soon gone")
    order = (await platform.order(buyer, {"pin": {"target_seq": seq, "tier_cents": 100}}))["order"]
    await platform.call(
        "DELETE",
        f"/api/v1/rooms/{room['code']}/messages/{seq}",
        template="/api/v1/rooms/{code}/messages/{seq}",
        expect=200,
        token=buyer.token,
    )
    await platform.test_confirm(order["id"], access)
    refunded = await platform.settle(order["id"], access, "refunded")
    assert refunded["refund_reason"] == "message_gone"


async def test_an_admin_refund_reverses_the_ledger_and_is_audited(platform: Platform) -> None:
    _, room = await _selling_room(platform)
    access, buyer = await _buyer(platform, room["code"])
    order = (await platform.order(buyer, {"tip": {"amount_cents": 1000}}))["order"]
    url = f"/api/v1/admin/orders/{order['id']}/refund"
    template = "/api/v1/admin/orders/{order_id}/refund"
    admin = await platform.admin()
    unpaid = await platform.error(
        "POST", url, expect=409, template=template, token=admin, json={"reason": "test"}
    )
    assert unpaid == "not_refundable"
    await platform.test_confirm(order["id"], access)
    await platform.settle(order["id"], access, "fulfilled")

    refused = await platform.error(
        "POST", url, expect=403, template=template, token=access, json={"reason": "mine"}
    )
    assert refused == "admin_required"
    first = await platform.call(
        "POST", url, expect=200, template=template, token=admin, json={"reason": "Chargeback risk"}
    )
    assert first["changed"] is True and first["order"]["state"] in ("refunding", "refunded")
    again = await platform.call(
        "POST", url, expect=200, template=template, token=admin, json={"reason": "again"}
    )
    assert again["changed"] is False
    refunded = await platform.settle(order["id"], access, "refunded")
    assert (refunded["refund_reason"], refunded["refund_message"]) == (
        "admin",
        "ChatPop refunded this payment in full.",
    )
    assert await platform.ledger(order["id"]) == [
        ("charge", 1000),
        ("fee", 100),
        ("refund", 1000),
        ("fee_refund", 100),
        ("transfer_reversal", 900),
    ]

    deadline = time.monotonic() + 20
    while not (events := await platform.audit_events(admin, "payment.refunded", f"order:{order['id']}")):
        assert time.monotonic() < deadline, "payment.refunded never reached the audit log"
        await asyncio.sleep(0.1)
    assert len(events) == 1 and events[0].room_id == room["id"]
    assert '"reason":"Chargeback risk"' in events[0].details_json


async def test_the_test_mode_has_no_webhook_and_strangers_cannot_pay_for_others(platform: Platform) -> None:
    _, room = await _selling_room(platform)
    access, buyer = await _buyer(platform, room["code"])
    order = (await platform.order(buyer, {"tip": {"amount_cents": 100}}))["order"]
    stranger = await platform.anonymous()
    code = await platform.error(
        "POST",
        f"/api/v1/payments/orders/{order['id']}/test-confirm",
        template="/api/v1/payments/orders/{order_id}/test-confirm",
        expect=404,
        token=stranger,
        json={"outcome": "succeed"},
    )
    assert code == "order_not_found"
    assert (await platform.get_order(order["id"], access))["state"] == "awaiting_payment"
    webhook = await platform.error(
        "POST",
        "/api/v1/payments/stripe/webhook",
        expect=409,
        template="/api/v1/payments/stripe/webhook",
        content=b'{"id": "evt_1"}',
        headers={"Stripe-Signature": "t=1,v1=00"},
    )
    assert webhook == "not_stripe_mode"


# --- the ledger's rules, in the database itself -----------------------------------------------------


async def _insert_order(conn: asyncpg.Connection, state: str) -> uuid.UUID:
    order_id = uuid.uuid4()
    someone = uuid.uuid4()
    await conn.execute(
        "INSERT INTO payments.orders (id, kind, state, room_id, buyer_participant_id, buyer_identity_id,"
        " host_identity_id, idempotency_key, amount_cents, fee_cents, currency, test_mode)"
        " VALUES ($1, 'tip', $2, $3, $3, $3, $3, $4, 500, 50, 'usd', true)",
        order_id,
        state,
        someone,
        uuid.uuid4().hex,
    )
    return order_id


async def test_the_database_moves_orders_only_forward_and_keeps_the_ledger(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for current, target in itertools.product(State, State):
            transaction = conn.transaction()
            await transaction.start()
            try:
                order_id = await _insert_order(conn, current.value)
                allowed = current == target or (current, target) in TRANSITIONS
                if allowed:
                    await conn.execute(
                        "UPDATE payments.orders SET state = $2 WHERE id = $1", order_id, target.value
                    )
                else:
                    with pytest.raises(asyncpg.CheckViolationError, match="cannot move"):
                        await conn.execute(
                            "UPDATE payments.orders SET state = $2 WHERE id = $1", order_id, target.value
                        )
            finally:
                await transaction.rollback()

        async with conn.transaction():
            order_id = await _insert_order(conn, "paid")
            with pytest.raises(asyncpg.CheckViolationError, match="never change"):
                async with conn.transaction():
                    await conn.execute("UPDATE payments.orders SET amount_cents = 1 WHERE id = $1", order_id)
            with pytest.raises(asyncpg.CheckViolationError, match="kept"):
                async with conn.transaction():
                    await conn.execute("DELETE FROM payments.orders WHERE id = $1", order_id)
            await conn.execute(
                "INSERT INTO payments.ledger_entries (order_id, kind, amount_cents, currency, source)"
                " VALUES ($1, 'charge', 500, 'usd', 'pi_x')",
                order_id,
            )
            with pytest.raises(asyncpg.UniqueViolationError):
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO payments.ledger_entries (order_id, kind, amount_cents, currency, source)"
                        " VALUES ($1, 'charge', 500, 'usd', 'pi_x')",
                        order_id,
                    )
            with pytest.raises(asyncpg.CheckViolationError, match="never changed"):
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE payments.ledger_entries SET amount_cents = 1 WHERE order_id = $1", order_id
                    )
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.close()


class _Rollback(Exception):
    """Leaves the test's rows behind no transaction."""

"""Tips paid at Stripe (the fake Stripe API) through the edge: a tip is an event of the room that live,
resumed and fresh clients see alike, and an admin's refund of it gives the money back at Stripe
(the host's transfer reversed, the platform's fee refunded) and is in the audit log.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.admin_cli import new_admin
from tests.e2e.chat import bearer
from tests.e2e.conftest import Stack
from tests.e2e.money import (
    audience,
    control,
    enter,
    error_code,
    fake_of,
    host_with_room,
    intent_of,
    order,
    order_in,
    pay,
    stripe_objects,
    until,
)


async def _earnings(http: httpx.AsyncClient, access: str) -> dict[str, Any]:
    answer = await http.get("/api/v1/payments/earnings", headers=bearer(access))
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["tips"])


async def test_a_tip_is_a_room_event_and_an_admins_refund_reverses_it_at_stripe_and_is_audited(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    admin = await new_admin(http, stripe_stack, "tip-refunder")
    host = await host_with_room(http, fake)
    async with audience(stripe_stack, http, host.code) as seen:
        tipper = await enter(http, host.code, "TipperTia")
        await seen.leave()
        created = await order(http, host.code, tipper, {"tip": {"amount_cents": 1500, "note": "great room!"}})
        tip_id, intent = created["order"]["id"], intent_of(created)
        assert (created["order"]["kind"], created["order"]["fee_cents"]) == ("tip", 150)
        assert (await pay(fake, intent))["error"] is None
        frame = await seen.live_socket.wait_for(lambda f: f["type"] == "tip", timeout=20)
        assert (frame["kind"], frame["text"], frame["sender"]["username"]) == ("tip", "", "TipperTia")
        assert frame["tip"] == {
            "order_id": tip_id,
            "amount_cents": 1500,
            "currency": "usd",
            "note": "great room!",
        }
        done = await order_in(http, tipper.token, tip_id, "fulfilled")
        assert done["fulfilled_seq"] in (None, frame["seq"])
        live, resumed, fresh = await seen.views()
        assert fresh.tips == {frame["seq"]: ("TipperTia", 1500, "great room!")}
        assert live.tip_entries == resumed.tip_entries == fresh.tip_entries == [frame["seq"]]
    earned = await _earnings(http, host.access)
    assert (earned["gross_cents"], earned["fee_cents"], earned["net_cents"], earned["count"]) == (
        1500,
        150,
        1350,
        1,
    )

    # Only an admin may refund it.
    path = f"/api/v1/admin/orders/{tip_id}/refund"
    by_host = await http.post(path, json={"reason": "mine to give back"}, headers=bearer(host.access))
    assert error_code(by_host) == (403, "admin_required"), by_host.text
    refunded = await http.post(path, json={"reason": "The tipper asked for it back"}, headers=bearer(admin))
    assert refunded.status_code == 200, refunded.text
    assert (refunded.json()["changed"], refunded.json()["order"]["refund_reason"]) == (True, "admin")
    again = await http.post(path, json={"reason": "again"}, headers=bearer(admin))
    assert again.status_code == 200 and again.json()["changed"] is False, again.text
    back = await order_in(http, tipper.token, tip_id, "refunded")
    assert back["refund_reason"] == "admin" and back["refund_message"]

    # At Stripe: all of it back to the tipper, the host's share taken back, the fee refunded.
    refunds = await stripe_objects(fake, "refunds", payment_intent=intent)
    assert [(r["amount"], r["status"], r["metadata"]["order_id"]) for r in refunds] == [
        (1500, "succeeded", tip_id)
    ]
    asked = [
        r
        for r in await control(fake, "requests", method="POST", path="/v1/refunds")
        if r["params"].get("payment_intent") == intent
    ]
    assert {r["idempotency_key"] for r in asked} == {f"order:{tip_id}:refund"}
    assert asked[0]["params"]["reverse_transfer"] in (True, "true")
    assert asked[0]["params"]["refund_application_fee"] in (True, "true")
    charge = (await stripe_objects(fake, "charges", payment_intent=intent))[0]
    reversals = await stripe_objects(fake, "transfer_reversals", transfer=charge["transfer"])
    assert [r["amount"] for r in reversals] == [1350]
    application_fee = await control(fake, "object", charge["application_fee"])
    assert (application_fee["amount_refunded"], application_fee["refunded"]) == (150, True)

    async def audited() -> list[dict[str, Any]]:
        page = await http.get(
            "/api/v1/admin/audit",
            params={"kind": "payment.refunded", "target": f"order:{tip_id}"},
            headers=bearer(admin),
        )
        assert page.status_code == 200, page.text
        return list(page.json()["events"])

    events = await until(audited, "payment.refunded in the audit log")
    me = (await http.get("/api/v1/auth/me", headers=bearer(admin))).json()["identity"]
    assert len(events) == 1, events
    event = events[0]
    assert (event["actor"], event["room_id"]) == (me["id"], host.room_id)
    details = event["details"]
    assert (details["reason"], details["amount_cents"], details["kind"]) == (
        "The tipper asked for it back",
        1500,
        "tip",
    )
    earned = await _earnings(http, host.access)
    assert (earned["gross_cents"], earned["net_cents"], earned["refunded_cents"], earned["count"]) == (
        0,
        0,
        1500,
        0,
    )

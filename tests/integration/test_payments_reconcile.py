"""Reconciliation against a fake Stripe (tests/fakestripe): a webhook lost for good is applied anyway,
from Stripe's list of recent events, through the same handling. The platform in-process
(tests/integration/payments_platform.py) reconciles every half second here.
"""

from __future__ import annotations

import time
from pathlib import Path

from payments_platform import running_platform
from test_payments_stripe import _buyer, _control, _endpoints, _onboarded_host, _payments_env
from test_rooms_service import signing_key

from tests.fakestripe import FakeStripe

__all__ = ["signing_key"]


async def test_reconciliation_applies_a_webhook_lost_for_good(
    database_url: str, redis_url: str, signing_key: Path, fake_stripe: FakeStripe
) -> None:
    async with running_platform(
        database_url, redis_url, signing_key, payments=_payments_env(fake_stripe, 0.5)
    ) as platform:
        await _endpoints(fake_stripe, platform.base_url)
        _, room, _ = await _onboarded_host(platform, fake_stripe)
        access, buyer = await _buyer(platform, room["code"])
        await _control(fake_stripe, "chaos", drop_types=["payment_intent.succeeded"])
        created = await platform.order(buyer, {"tip": {"amount_cents": 400}})
        await _control(fake_stripe, "pay", created["client_secret"].split("_secret_")[0])
        done = await platform.settle(created["order"]["id"], access, "fulfilled")
        dropped = await _control(fake_stripe, "deliveries", type="payment_intent.succeeded")
        assert dropped and all(d["outcome"] == "dropped" for d in dropped)
        events = await platform.events_of(done["id"])
        assert ("payment_intent.succeeded", "reconcile", "paid") in events
        cursor = await platform.pool.fetchval("SELECT cursor FROM payments.stripe_sync WHERE name = 'events'")
        assert cursor is not None and cursor >= int(time.time()) - 120

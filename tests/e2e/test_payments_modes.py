"""The platform's two payment modes as processes: test mode by default, and Stripe (the fake Stripe
API) with its webhooks reaching payments through the edge."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx

from tests.e2e.conftest import Stack


async def test_the_platform_runs_payments_in_test_mode_by_default(client: httpx.AsyncClient) -> None:
    config = (await client.get("/api/v1/payments/config")).json()
    assert config == {"mode": "test", "currency": "usd", "publishable_key": "", "platform_fee_percent": 10}


async def test_a_stripe_platform_talks_to_the_fake_and_hears_its_webhooks(stripe_stack: Stack) -> None:
    fake = stripe_stack.stripe
    assert fake is not None
    async with httpx.AsyncClient(base_url=stripe_stack.base_url, timeout=10) as http:
        config = (await http.get("/api/v1/payments/config")).json()
        assert (config["mode"], config["publishable_key"]) == ("stripe", fake.publishable_key)
        email = f"host-{uuid.uuid4().hex[:10]}@example.com"
        registered = await http.post(
            "/api/v1/auth/register", json={"email": email, "password": "a long passphrase"}
        )
        token = registered.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        started = await http.post("/api/v1/payments/payout-account/onboarding", json={}, headers=headers)
        assert started.status_code == 200, started.text
        account = started.json()["account"]["stripe_account_id"]
        assert account in {a["id"] for a in await asyncio.to_thread(fake.control.accounts)}
        await asyncio.to_thread(fake.control.complete_onboarding, account)
        deadline = time.monotonic() + 20
        while True:
            body = (await http.get("/api/v1/payments/payout-account", headers=headers)).json()
            if body["account"]["can_receive"]:
                break
            assert time.monotonic() < deadline, "account.updated never reached payments through the edge"
            await asyncio.sleep(0.1)

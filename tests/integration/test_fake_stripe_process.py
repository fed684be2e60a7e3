"""The fake Stripe API as a process of its own (`python -m tests.fakestripe`), as a payments service
started by the e2e harness would reach it: fixed keys, STRIPE_API_BASE, a known webhook secret."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe

from chatpop_common.devstack import free_port
from tests.fakestripe import FakeStripe, WebhookReceiver, attach

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fake_stripe_process() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakestripe",
            "--port",
            str(free_port()),
            "--secret-key",
            "sk_test_chatpop_e2e",
            "--publishable-key",
            "pk_test_chatpop_e2e",
            "--webhook-secret",
            "whsec_chatpop_e2e",
            "--retry-delays",
            "0.05,0.1",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    shown = json.loads(process.stdout.readline())
    yield process, shown
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)


def test_the_process_serves_the_platform_it_was_given(
    fake_stripe_process: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    _, shown = fake_stripe_process
    assert shown["secret_key"] == "sk_test_chatpop_e2e" and shown["webhook_secret"] == "whsec_chatpop_e2e"
    platform: FakeStripe = attach(shown["url"], "sk_test_chatpop_e2e")
    assert platform.env() == {
        "STRIPE_API_BASE": shown["url"],
        "STRIPE_SECRET_KEY": "sk_test_chatpop_e2e",
        "STRIPE_PUBLISHABLE_KEY": "pk_test_chatpop_e2e",
        "STRIPE_WEBHOOK_SECRET": "whsec_chatpop_e2e",
    }
    with WebhookReceiver() as receiver:
        platform.control.add_webhook_endpoint(receiver.url, ["payment_intent.succeeded"])
        client = stripe.StripeClient(
            platform.env()["STRIPE_SECRET_KEY"], base_addresses={"api": shown["url"]}
        )
        intent = client.v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
        platform.control.pay(intent.id)
        (delivery,) = receiver.wait_for(1)
        event = stripe.Webhook.construct_event(delivery.body, delivery.signature, "whsec_chatpop_e2e")
        assert event.type == "payment_intent.succeeded" and event.data.object.id == intent.id
    platform.close()


def test_the_process_stops_on_sigterm(
    fake_stripe_process: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    process, _ = fake_stripe_process
    process.terminate()
    assert process.wait(timeout=10) == 0

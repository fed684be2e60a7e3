"""Webhooks from the fake Stripe API, received by a small HTTP server in the test and checked with the
official library's `stripe.Webhook.construct_event`; the chaos controls, each seen at the receiver."""

from __future__ import annotations

import random
import time

import pytest
import stripe

from tests.fakestripe import FakeStripe, WebhookReceiver


def _pay(fake_stripe: FakeStripe) -> str:
    """One paid intent: payment_intent.created, charge.succeeded, payment_intent.succeeded."""
    intent = fake_stripe.client().v1.payment_intents.create(
        params={"amount": 500, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    return intent.id


def _verify(fake_stripe: FakeStripe, delivery: object, secret: str | None = None) -> stripe.Event:
    return stripe.Webhook.construct_event(
        delivery.body,  # type: ignore[attr-defined]
        delivery.signature,  # type: ignore[attr-defined]
        secret or fake_stripe.webhook_secret,
    )


@pytest.fixture(autouse=True)
def quick_retries(fake_stripe: FakeStripe) -> None:
    fake_stripe.control.set_retry_delays([0.05, 0.1, 0.2])


def test_each_event_is_delivered_signed_as_stripe_signs(
    fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver
) -> None:
    endpoint = fake_stripe.control.add_webhook_endpoint(webhook_receiver.url)
    assert endpoint["secret"] == fake_stripe.webhook_secret
    intent = _pay(fake_stripe)
    fake_stripe.control.wait_idle()
    events = [_verify(fake_stripe, delivery) for delivery in webhook_receiver.received]
    assert [event.type for event in events] == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
    ]
    assert events[-1].data.object.id == intent and events[-1].data.object.status == "succeeded"
    assert [event.id for event in events] == [event["id"] for event in fake_stripe.control.events()]
    first = webhook_receiver.received[0]
    assert first.headers["Content-Type"].startswith("application/json")
    assert first.headers["User-Agent"].startswith("Stripe/")
    records = fake_stripe.control.deliveries(endpoint=endpoint["id"])
    assert [(r["outcome"], r["status"], r["attempt"], r["kind"]) for r in records] == [
        ("succeeded", 200, 1, "event")
    ] * 3


def test_an_endpoint_made_through_the_api_has_its_own_secret_and_events(
    fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver
) -> None:
    client = fake_stripe.client()
    endpoint = client.v1.webhook_endpoints.create(
        params={"url": webhook_receiver.url, "enabled_events": ["payment_intent.succeeded"]}
    )
    assert endpoint.id.startswith("we_") and endpoint.secret.startswith("whsec_")
    assert "secret" not in client.v1.webhook_endpoints.retrieve(endpoint.id)
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [endpoint.id]
    _pay(fake_stripe)
    fake_stripe.control.wait_idle()
    (delivery,) = webhook_receiver.received
    assert _verify(fake_stripe, delivery, endpoint.secret).type == "payment_intent.succeeded"
    with pytest.raises(stripe.SignatureVerificationError):
        _verify(fake_stripe, delivery, fake_stripe.webhook_secret)

    client.v1.webhook_endpoints.update(endpoint.id, params={"disabled": True})
    _pay(fake_stripe)
    client.v1.webhook_endpoints.delete(endpoint.id)
    fake_stripe.control.wait_idle()
    assert len(webhook_receiver.received) == 1


def test_a_wrong_secret_or_a_stale_timestamp_is_refused(
    fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver
) -> None:
    fake_stripe.control.add_webhook_endpoint(webhook_receiver.url, ["payment_intent.created"])
    client = fake_stripe.client()
    for signature in ("wrong_secret", "stale", "future", "valid"):
        fake_stripe.control.chaos(signature=signature)
        client.v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    fake_stripe.control.wait_idle()
    wrong, stale, future, valid = webhook_receiver.wait_for(4)
    with pytest.raises(stripe.SignatureVerificationError, match="No signatures found matching"):
        _verify(fake_stripe, wrong)
    with pytest.raises(stripe.SignatureVerificationError, match="Timestamp outside the tolerance zone"):
        _verify(fake_stripe, stale)
    stamp = int(future.signature.split(",")[0].removeprefix("t="))
    assert stamp > time.time() + 300  # the library accepts it; a receiver must refuse it itself
    assert _verify(fake_stripe, valid).type == "payment_intent.created"
    assert [r["signature"] for r in fake_stripe.control.deliveries()] == [
        "wrong_secret",
        "stale",
        "future",
        "valid",
    ]


def test_failed_deliveries_are_retried_with_backoff_and_signed_afresh(
    fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver
) -> None:
    fake_stripe.control.add_webhook_endpoint(webhook_receiver.url, ["payment_intent.created"])
    webhook_receiver.answer(500, 503)
    fake_stripe.client().v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    deliveries = webhook_receiver.wait_for(3)
    fake_stripe.control.wait_idle()
    assert len({_verify(fake_stripe, d).id for d in deliveries}) == 1
    assert deliveries[1].at - deliveries[0].at >= 0.05 and deliveries[2].at - deliveries[1].at >= 0.1
    records = fake_stripe.control.deliveries()
    assert [(r["attempt"], r["status"], r["outcome"]) for r in records] == [
        (1, 500, "failed"),
        (2, 503, "failed"),
        (3, 200, "succeeded"),
    ]
    assert fake_stripe.control.events()[0]["pending_webhooks"] == 0


def test_unreachable_endpoints_are_retried_then_given_up(fake_stripe: FakeStripe) -> None:
    with WebhookReceiver() as gone:
        url = gone.url
    fake_stripe.control.add_webhook_endpoint(url, ["payment_intent.created"])
    fake_stripe.client().v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    fake_stripe.control.wait_idle()
    records = fake_stripe.control.deliveries()
    assert [r["attempt"] for r in records] == [1, 2, 3, 4]
    assert all(r["outcome"] == "failed" and r["status"] is None and r["error"] for r in records)
    assert fake_stripe.control.events()[0]["pending_webhooks"] == 1


def test_duplicates(fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver) -> None:
    fake_stripe.control.add_webhook_endpoint(webhook_receiver.url)
    fake_stripe.control.chaos(duplicates=2)
    _pay(fake_stripe)
    fake_stripe.control.wait_idle()
    ids = [event["id"] for event in webhook_receiver.events()]
    assert len(ids) == 9 and len(set(ids)) == 3
    assert all(ids.count(event_id) == 3 for event_id in ids)
    for delivery in webhook_receiver.received:
        _verify(fake_stripe, delivery)
    kinds = [r["kind"] for r in fake_stripe.control.deliveries()]
    assert kinds.count("event") == 3 and kinds.count("duplicate") == 6


def test_a_held_batch_is_delivered_reversed_or_shuffled(
    fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver
) -> None:
    fake_stripe.control.add_webhook_endpoint(webhook_receiver.url)
    fake_stripe.control.chaos(hold=3, hold_order="reversed")
    _pay(fake_stripe)
    fake_stripe.control.wait_idle()
    assert [event["type"] for event in webhook_receiver.events()] == [
        "payment_intent.succeeded",
        "charge.succeeded",
        "payment_intent.created",
    ]

    fake_stripe.control.chaos(hold=3, hold_order="shuffled", seed=7)
    _pay(fake_stripe)
    fake_stripe.control.wait_idle()
    in_order = [event["id"] for event in fake_stripe.control.events()[3:]]
    expected = list(in_order)
    random.Random(7).shuffle(expected)
    assert [event["id"] for event in webhook_receiver.events()[3:]] == expected

    fake_stripe.control.chaos(hold=5, hold_order="reversed")
    _pay(fake_stripe)
    assert fake_stripe.control.webhook_status()["endpoints"][0]["held"] == 3
    assert fake_stripe.control.release_held() == 3
    fake_stripe.control.wait_idle()
    assert webhook_receiver.events()[6]["type"] == "payment_intent.succeeded"


def test_delay(fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver) -> None:
    fake_stripe.control.add_webhook_endpoint(webhook_receiver.url, ["payment_intent.created"])
    fake_stripe.control.chaos(delay=1.0)
    before = time.time()
    fake_stripe.client().v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    (delivery,) = webhook_receiver.wait_for(1)
    assert delivery.at - before >= 1.0


def test_drop_next_and_drop_types_lose_events_for_good(
    fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver
) -> None:
    fake_stripe.control.add_webhook_endpoint(webhook_receiver.url)
    fake_stripe.control.chaos(drop_next=1, drop_types=["payment_intent.succeeded"])
    intent = _pay(fake_stripe)
    _pay(fake_stripe)
    fake_stripe.control.wait_idle()
    assert [event["type"] for event in webhook_receiver.events()] == [
        "charge.succeeded",
        "payment_intent.created",
        "charge.succeeded",
    ]
    dropped = fake_stripe.control.deliveries(outcome="dropped")
    assert [(r["type"], r["reason"]) for r in dropped] == [
        ("payment_intent.created", "drop_next"),
        ("payment_intent.succeeded", "drop_types"),
        ("payment_intent.succeeded", "drop_types"),
    ]
    # The event a webhook never brought is still in the event log, as reconciliation reads it.
    listed = fake_stripe.client().v1.events.list(params={"type": "payment_intent.succeeded"})
    assert intent in {event.data.object.id for event in listed.data}


def test_replay_sends_the_same_event_with_a_fresh_signature(
    fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver
) -> None:
    fake_stripe.control.add_webhook_endpoint(webhook_receiver.url, ["payment_intent.succeeded"])
    _pay(fake_stripe)
    fake_stripe.control.wait_idle()
    (original,) = webhook_receiver.received
    event_id = original.event["id"]
    time.sleep(1.1)
    assert fake_stripe.control.replay(event_id) == 1
    assert fake_stripe.control.replay(event_id, signature="stale") == 1
    fake_stripe.control.wait_idle()
    _, replayed, stale = webhook_receiver.received
    assert _verify(fake_stripe, replayed).id == event_id
    assert replayed.event["data"] == original.event["data"] and replayed.signature != original.signature
    with pytest.raises(stripe.SignatureVerificationError):
        _verify(fake_stripe, stale)
    assert [r["kind"] for r in fake_stripe.control.deliveries()] == ["event", "replay", "replay"]


def test_pause_and_resume(fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver) -> None:
    fake_stripe.control.add_webhook_endpoint(webhook_receiver.url)
    fake_stripe.control.pause()
    _pay(fake_stripe)
    status = fake_stripe.control.wait_idle()
    assert webhook_receiver.received == []
    assert status["endpoints"][0]["queued"] == 3 and status["endpoints"][0]["paused"] is True
    fake_stripe.control.resume()
    fake_stripe.control.wait_idle()
    assert [event["id"] for event in webhook_receiver.events()] == [
        e["id"] for e in fake_stripe.control.events()
    ]


def test_chaos_for_one_endpoint_leaves_the_others_alone(
    fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver
) -> None:
    with WebhookReceiver() as calm_receiver:
        noisy = fake_stripe.control.add_webhook_endpoint(webhook_receiver.url, ["payment_intent.created"])
        fake_stripe.control.add_webhook_endpoint(calm_receiver.url, ["payment_intent.created"])
        fake_stripe.control.chaos(noisy["id"], duplicates=1)
        fake_stripe.client().v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
        fake_stripe.control.wait_idle()
        assert len(webhook_receiver.received) == 2 and len(calm_receiver.received) == 1
        fake_stripe.control.calm()
        fake_stripe.client().v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
        fake_stripe.control.wait_idle()
        assert len(webhook_receiver.received) == 3 and len(calm_receiver.received) == 2

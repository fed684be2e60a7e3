"""The fake Stripe API through the official library: the event log, its filters and paging."""

from __future__ import annotations

import contextlib

import pytest
import stripe

from tests.fakestripe import FakeStripe


def _pay(client: stripe.StripeClient, card: str = "pm_card_visa") -> str:
    intent = client.v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    with contextlib.suppress(stripe.CardError):
        client.v1.payment_intents.confirm(intent.id, params={"payment_method": card})
    return intent.id


def _intents(events: list[stripe.Event]) -> set[str]:
    """The intents the events are about (a charge's event names its intent)."""
    return {event.data.object.to_dict().get("payment_intent") or event.data.object.id for event in events}


def test_events_page_newest_first(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    for _ in range(4):
        _pay(client)  # 3 events each
    everything = [event["id"] for event in reversed(fake_stripe.control.events())]
    first = client.v1.events.list(params={"limit": 5})
    assert first.object == "list" and first.url == "/v1/events" and first.has_more is True
    assert [event.id for event in first.data] == everything[:5]
    second = client.v1.events.list(params={"limit": 5, "starting_after": first.data[-1].id})
    assert [event.id for event in second.data] == everything[5:10]
    back = client.v1.events.list(params={"limit": 3, "ending_before": second.data[0].id})
    assert [event.id for event in back.data] == everything[2:5] and back.has_more is True
    assert [event.id for event in client.v1.events.list(params={"limit": 5}).auto_paging_iter()] == everything
    event = client.v1.events.retrieve(everything[0])
    assert event.object == "event" and event.livemode is False and event.api_version
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.list(params={"limit": 0})


def test_events_filter_by_type_and_types(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    paid = _pay(client)
    declined = _pay(client, "pm_card_chargeDeclined")
    succeeded = client.v1.events.list(params={"type": "payment_intent.succeeded"})
    assert [event.data.object.id for event in succeeded.data] == [paid]
    money = client.v1.events.list(
        params={"types": ["payment_intent.succeeded", "payment_intent.payment_failed"]}
    )
    assert [event.data.object.id for event in money.data] == [declined, paid]
    charges = client.v1.events.list(params={"type": "charge.*"})
    assert [event.type for event in charges.data] == ["charge.failed", "charge.succeeded"]


def test_events_filter_by_created(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    _pay(client)
    start = fake_stripe.control.events()[0]["created"]
    fake_stripe.control.advance_clock(120)
    later = _pay(client)
    recent = client.v1.events.list(params={"created": {"gte": start + 60}, "limit": 100})
    assert _intents(recent.data) == {later} and len(recent.data) == 3
    early = client.v1.events.list(params={"created": {"lt": start + 60}, "limit": 100})
    assert len(early.data) == 3 and later not in _intents(early.data)
    # The first payment's two requests may fall on both sides of a second's turn: the events of that
    # second exactly, whichever they are.
    of_start = [event["id"] for event in reversed(fake_stripe.control.events()) if event["created"] == start]
    exact = client.v1.events.list(params={"created": start, "limit": 100})
    assert [event.id for event in exact.data] == of_start and of_start
    iterated = client.v1.events.list(
        params={"created": {"gte": start}, "types": ["payment_intent.succeeded"], "limit": 1}
    ).auto_paging_iter()
    assert len(list(iterated)) == 2


def test_each_event_records_the_request_that_caused_it(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    intent = client.v1.payment_intents.create(
        params={"amount": 500, "currency": "usd"}, options={"idempotency_key": "order:1:payment_intent"}
    )
    created = client.v1.events.list(params={"type": "payment_intent.created"}).data[0]
    assert created.data.object.id == intent.id
    assert created.request.idempotency_key == "order:1:payment_intent"
    assert created.request.id == intent.last_response.request_id

"""The fake Stripe API through the official library: Connect Express accounts, links and onboarding."""

from __future__ import annotations

import httpx
import pytest
import stripe

from tests.fakestripe import FakeStripe, WebhookReceiver


def _new_account(fake_stripe: FakeStripe) -> stripe.Account:
    return fake_stripe.client().v1.accounts.create(
        params={
            "type": "express",
            "country": "US",
            "email": "host@example.com",
            "capabilities": {"card_payments": {"requested": True}, "transfers": {"requested": True}},
            "metadata": {"user_id": "u_1"},
        }
    )


def test_an_express_account_starts_unable_to_take_charges(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    account = _new_account(fake_stripe)
    assert account.id.startswith("acct_") and account.object == "account" and account.type == "express"
    assert (account.charges_enabled, account.payouts_enabled, account.details_submitted) == (
        False,
        False,
        False,
    )
    assert account.capabilities.to_dict() == {"card_payments": "inactive", "transfers": "inactive"}
    assert account.requirements.currently_due
    assert client.v1.accounts.retrieve(account.id).email == "host@example.com"
    updated = client.v1.accounts.update(account.id, params={"metadata": {"room": "r1"}})
    assert updated.metadata.to_dict() == {"user_id": "u_1", "room": "r1"}
    assert [a.id for a in client.v1.accounts.list().data] == [account.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.accounts.retrieve("acct_nobody")


def test_onboarding_through_the_link_sends_account_updated(
    fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver
) -> None:
    client = fake_stripe.client()
    fake_stripe.control.add_webhook_endpoint(webhook_receiver.url, ["account.updated"], connect=True)
    account = _new_account(fake_stripe)
    link = client.v1.account_links.create(
        params={
            "account": account.id,
            "refresh_url": "https://chatpop.test/payouts/refresh",
            "return_url": "https://chatpop.test/payouts/done",
            "type": "account_onboarding",
        }
    )
    assert link.object == "account_link" and link.expires_at > link.created
    assert link.url.startswith(f"{fake_stripe.url}/connect/onboarding/{account.id}")

    page = httpx.get(link.url)
    assert page.status_code == 200 and "Finish onboarding" in page.text
    token = link.url.split("link=")[1]
    done = httpx.post(f"{fake_stripe.url}/connect/onboarding/{account.id}/finish", data={"link": token})
    assert done.status_code == 303 and done.headers["location"] == "https://chatpop.test/payouts/done"
    used = httpx.get(link.url)
    assert used.status_code == 302 and used.headers["location"] == "https://chatpop.test/payouts/refresh"

    onboarded = client.v1.accounts.retrieve(account.id)
    assert (onboarded.charges_enabled, onboarded.payouts_enabled, onboarded.details_submitted) == (
        True,
        True,
        True,
    )
    assert onboarded.capabilities.transfers == "active"

    fake_stripe.control.wait_idle()
    (delivery,) = webhook_receiver.received
    event = stripe.Webhook.construct_event(delivery.body, delivery.signature, fake_stripe.webhook_secret)
    assert event.type == "account.updated" and event.account == account.id
    assert event.data.object.charges_enabled is True
    assert event.data.previous_attributes.charges_enabled is False


def test_connected_account_events_are_listed_on_behalf_of_the_account(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    account = _new_account(fake_stripe)
    fake_stripe.control.complete_onboarding(account.id, payouts_enabled=False)
    own = client.v1.events.list(params={"type": "account.updated"})
    assert own.data == []
    theirs = client.v1.events.list(params={"type": "account.updated"}, options={"stripe_account": account.id})
    (event,) = theirs.data
    assert event.account == account.id
    assert event.data.object.charges_enabled is True and event.data.object.payouts_enabled is False
    assert client.v1.events.retrieve(event.id, options={"stripe_account": account.id}).id == event.id
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.retrieve(event.id)


def test_a_platform_endpoint_does_not_get_connected_account_events(
    fake_stripe: FakeStripe, webhook_receiver: WebhookReceiver
) -> None:
    fake_stripe.control.add_webhook_endpoint(webhook_receiver.url)
    account = _new_account(fake_stripe)
    fake_stripe.control.complete_onboarding(account.id)
    fake_stripe.client().v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    fake_stripe.control.wait_idle()
    assert [event["type"] for event in webhook_receiver.events()] == ["payment_intent.created"]

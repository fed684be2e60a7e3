"""The fake Stripe API through the official library: PaymentIntents, test cards, keys and idempotency."""

from __future__ import annotations

import httpx
import pytest
import stripe

from tests.fakestripe import FakeStripe, FakeStripeServer


def _intent_params(destination: str, amount: int = 1000, fee: int = 100) -> dict[str, object]:
    return {
        "amount": amount,
        "currency": "usd",
        "metadata": {"order_id": "ord_1", "kind": "pin", "room_id": "room_1"},
        "application_fee_amount": fee,
        "transfer_data": {"destination": destination},
        "automatic_payment_methods": {"enabled": True},
        "description": "Paid pin",
    }


def test_a_destination_charge_pays_the_host_less_the_fee(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    host = fake_stripe.onboarded_account()
    intent = client.v1.payment_intents.create(params=_intent_params(host, 1500, 150))  # type: ignore[arg-type]
    assert intent.id.startswith("pi_") and intent.object == "payment_intent"
    assert intent.status == "requires_payment_method" and intent.livemode is False
    assert intent.client_secret.startswith(intent.id + "_secret_")
    assert intent.metadata.to_dict() == {"order_id": "ord_1", "kind": "pin", "room_id": "room_1"}
    assert intent.transfer_data.destination == host and intent.application_fee_amount == 150

    paid = client.v1.payment_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"})
    assert paid.status == "succeeded" and paid.amount_received == 1500
    assert paid.latest_charge.startswith("ch_")
    charge = client.v1.charges.retrieve(paid.latest_charge)
    assert charge.status == "succeeded" and charge.payment_intent == intent.id
    assert charge.metadata["order_id"] == "ord_1"
    transfer = client.v1.transfers.retrieve(charge.transfer)
    assert transfer.id.startswith("tr_")
    assert (transfer.amount, transfer.destination, transfer.source_transaction) == (1350, host, charge.id)
    types = [event["type"] for event in fake_stripe.control.events()]
    assert types[-4:] == [
        "charge.succeeded",
        "payment_intent.succeeded",
        "transfer.created",
        "application_fee.created",
    ]


def test_expand_replaces_an_id_by_its_object(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    intent = client.v1.payment_intents.create(
        params={"amount": 700, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    expanded = client.v1.payment_intents.retrieve(intent.id, params={"expand": ["latest_charge"]})
    assert expanded.latest_charge.object == "charge"
    assert expanded.latest_charge.payment_method_details.card.last4 == "4242"


@pytest.mark.parametrize(
    ("card", "code", "decline_code"),
    [
        ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_visa_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
    ],
)
def test_a_declined_card_is_a_card_error_and_the_buyer_may_try_again(
    fake_stripe: FakeStripe, card: str, code: str, decline_code: str
) -> None:
    client = fake_stripe.client()
    intent = client.v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    with pytest.raises(stripe.CardError) as declined:
        client.v1.payment_intents.confirm(intent.id, params={"payment_method": card})
    error = declined.value
    assert error.http_status == 402 and error.code == code
    assert error.json_body["error"]["type"] == "card_error"
    assert error.json_body["error"]["decline_code"] == decline_code
    assert error.error.payment_intent.status == "requires_payment_method"
    failed = client.v1.payment_intents.retrieve(intent.id)
    assert failed.last_payment_error.decline_code == decline_code
    assert [e["type"] for e in fake_stripe.control.events()][-2:] == [
        "charge.failed",
        "payment_intent.payment_failed",
    ]

    assert (
        client.v1.payment_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"}).status
        == "succeeded"
    )


def test_the_buyer_pays_with_the_publishable_key_and_client_secret(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    intent = client.v1.payment_intents.create(
        params={"amount": 900, "currency": "usd", "metadata": {"a": "b"}}
    )
    buyer = stripe.StripeClient(fake_stripe.publishable_key, base_addresses={"api": fake_stripe.url})
    seen = buyer.v1.payment_intents.retrieve(intent.id, params={"client_secret": intent.client_secret})
    assert seen.status == "requires_payment_method" and "metadata" not in seen
    with pytest.raises(stripe.InvalidRequestError) as wrong:
        buyer.v1.payment_intents.retrieve(intent.id, params={"client_secret": intent.id + "_secret_nope"})
    assert wrong.value.param == "client_secret"
    with pytest.raises(stripe.AuthenticationError):
        buyer.v1.payment_intents.list()

    paid = fake_stripe.control.pay(intent.id, "pm_card_visa")
    assert paid["error"] is None and paid["payment_intent"]["status"] == "succeeded"
    declined = fake_stripe.control.pay(
        client.v1.payment_intents.create(params={"amount": 900, "currency": "usd"}).id,
        "pm_card_chargeDeclinedInsufficientFunds",
    )
    assert declined["error"]["decline_code"] == "insufficient_funds"
    assert declined["payment_intent"]["status"] == "requires_payment_method"


def test_module_level_configuration_works_too(
    fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stripe, "api_key", fake_stripe.secret_key)
    monkeypatch.setattr(stripe, "api_base", fake_stripe.url)
    intent = stripe.PaymentIntent.create(amount=1200, currency="usd", metadata={"order_id": "x"})
    confirmed = stripe.PaymentIntent.confirm(intent.id, payment_method="pm_card_visa")
    assert confirmed.status == "succeeded"
    assert stripe.PaymentIntent.retrieve(intent.id).latest_charge == confirmed.latest_charge
    canceled = stripe.PaymentIntent.cancel(stripe.PaymentIntent.create(amount=600, currency="usd").id)
    assert canceled.status == "canceled"


async def test_the_async_client_over_httpx(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client(http_client=stripe.HTTPXClient())
    intent = await client.v1.payment_intents.create_async(params={"amount": 800, "currency": "eur"})
    confirmed = await client.v1.payment_intents.confirm_async(
        intent.id, params={"payment_method": "pm_card_visa"}
    )
    assert confirmed.status == "succeeded" and confirmed.currency == "eur"


def test_idempotency_keys_replay_or_refuse_like_stripe(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    host = fake_stripe.onboarded_account()
    params = _intent_params(host)
    key = {"idempotency_key": "order:ord_1:payment_intent"}
    first = client.v1.payment_intents.create(params=params, options=key)  # type: ignore[arg-type]
    again = client.v1.payment_intents.create(params=params, options=key)  # type: ignore[arg-type]
    assert again.id == first.id and again.client_secret == first.client_secret
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert len(fake_stripe.control.payment_intents()) == 1

    with pytest.raises(stripe.IdempotencyError) as mismatch:
        client.v1.payment_intents.create(params={**params, "amount": 2000}, options=key)  # type: ignore[arg-type]
    assert mismatch.value.http_status == 400
    assert mismatch.value.json_body["error"]["type"] == "idempotency_error"
    with pytest.raises(stripe.IdempotencyError):
        client.v1.refunds.create(params={"payment_intent": first.id}, options=key)

    posts = fake_stripe.control.requests(path="/v1/payment_intents", method="POST")
    assert [post.get("replayed", False) for post in posts[:2]] == [False, True]


def test_idempotency_keys_belong_to_one_api_key(
    fake_stripe: FakeStripe, fake_stripe_server: FakeStripeServer
) -> None:
    other = fake_stripe_server.new_platform()
    key = {"idempotency_key": "same-key"}
    mine = fake_stripe.client().v1.payment_intents.create(
        params={"amount": 500, "currency": "usd"}, options=key
    )
    theirs = other.client().v1.payment_intents.create(params={"amount": 900, "currency": "usd"}, options=key)
    assert mine.id != theirs.id and theirs.amount == 900
    with pytest.raises(stripe.InvalidRequestError):
        other.client().v1.payment_intents.retrieve(mine.id)
    other.close()


def test_idempotency_replays_a_decline_exactly(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    intent = client.v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    options = {"idempotency_key": "confirm-1"}
    errors = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as declined:
            client.v1.payment_intents.confirm(
                intent.id, params={"payment_method": "pm_card_chargeDeclined"}, options=options
            )
        errors.append(declined.value)
    assert errors[0].json_body == errors[1].json_body
    assert errors[1].headers["Idempotent-Replayed"] == "true"
    assert len(fake_stripe.control.charges()) == 1


def test_keys_are_checked_and_errors_have_stripes_shape(fake_stripe: FakeStripe) -> None:
    wrong = stripe.StripeClient("sk_test_not_a_key_of_this_fake", base_addresses={"api": fake_stripe.url})
    with pytest.raises(stripe.AuthenticationError) as refused:
        wrong.v1.payment_intents.list()
    assert refused.value.http_status == 401
    assert refused.value.json_body["error"]["type"] == "invalid_request_error"
    assert "Invalid API Key provided" in refused.value.json_body["error"]["message"]
    response = httpx.get(f"{fake_stripe.url}/v1/payment_intents")
    assert response.status_code == 401 and "did not provide an API key" in response.json()["error"]["message"]
    basic = httpx.get(f"{fake_stripe.url}/v1/payment_intents", auth=(fake_stripe.secret_key, ""))
    assert basic.status_code == 200 and basic.json()["object"] == "list"

    client = fake_stripe.client()
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.payment_intents.create(params={"amount": 500, "currency": "usd", "colour": "red"})  # type: ignore[typeddict-unknown-key]
    assert unknown.value.param == "colour" and "unknown parameter" in unknown.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as small:
        client.v1.payment_intents.create(params={"amount": 10, "currency": "usd"})
    assert (small.value.code, small.value.param) == ("amount_too_small", "amount")
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.payment_intents.retrieve("pi_missing")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as no_destination:
        client.v1.payment_intents.create(
            params={"amount": 500, "currency": "usd", "application_fee_amount": 50}
        )
    assert no_destination.value.param == "application_fee_amount"


def test_a_destination_must_be_onboarded(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    account = client.v1.accounts.create(
        params={"type": "express", "capabilities": {"transfers": {"requested": True}}}
    )
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.create(params=_intent_params(account.id))  # type: ignore[arg-type]
    assert refused.value.code == "insufficient_capabilities_for_transfer"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.payment_intents.create(params=_intent_params("acct_nobody"))  # type: ignore[arg-type]
    assert unknown.value.param == "transfer_data[destination]"


def test_cancel_only_before_success(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    intent = client.v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    canceled = client.v1.payment_intents.cancel(intent.id, params={"cancellation_reason": "abandoned"})
    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "abandoned")
    assert fake_stripe.control.events()[-1]["type"] == "payment_intent.canceled"
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.payment_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"})
    assert again.value.code == "payment_intent_unexpected_state"
    paid = client.v1.payment_intents.create(
        params={"amount": 500, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    with pytest.raises(stripe.InvalidRequestError) as late:
        client.v1.payment_intents.cancel(paid.id)
    assert "status of succeeded" in late.value.user_message


def test_intents_list_newest_first_with_created_filters(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    old = client.v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    fake_stripe.control.advance_clock(100)
    new = client.v1.payment_intents.create(params={"amount": 600, "currency": "usd"})
    listed = client.v1.payment_intents.list()
    assert [intent.id for intent in listed.data] == [new.id, old.id] and listed.url == "/v1/payment_intents"
    recent = client.v1.payment_intents.list(params={"created": {"gte": new.created}})
    assert [intent.id for intent in recent.data] == [new.id]
    older = client.v1.payment_intents.list(params={"created": {"lt": new.created}})
    assert [intent.id for intent in older.data] == [old.id]


def test_a_lost_answer_is_replayed_by_the_librarys_retry(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client(max_network_retries=2)
    fake_stripe.control.fail_next(1, path="/v1/payment_intents", method="POST", after=True, should_retry=True)
    intent = client.v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    assert len(fake_stripe.control.payment_intents()) == 1
    requests = fake_stripe.control.requests(path="/v1/payment_intents", method="POST")
    assert [(r["status"], r.get("replayed", False)) for r in requests] == [(500, False), (200, True)]
    assert requests[0]["idempotency_key"] == requests[1]["idempotency_key"]
    assert intent.id == fake_stripe.control.payment_intents()[0]["id"]

    fake_stripe.control.fail_next(3, status=503, should_retry=False)
    with pytest.raises(stripe.APIError):
        client.v1.payment_intents.retrieve(intent.id)


def test_raw_form_bodies_in_bracket_notation(fake_stripe: FakeStripe) -> None:
    host = fake_stripe.onboarded_account()
    body = (
        "amount=1000&currency=usd&metadata[order_id]=ord_7&metadata[kind]=tip"
        f"&transfer_data[destination]={host}&application_fee_amount=100"
        "&payment_method_types[]=card&payment_method=pm_card_visa&confirm=true"
        "&expand[]=latest_charge"
    )
    response = httpx.post(
        f"{fake_stripe.url}/v1/payment_intents",
        content=body,
        headers={
            "Authorization": f"Bearer {fake_stripe.secret_key}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code == 200 and response.headers["Request-Id"].startswith("req_")
    intent = response.json()
    assert intent["metadata"] == {"order_id": "ord_7", "kind": "tip"}
    assert intent["payment_method_types"] == ["card"] and intent["automatic_payment_methods"] is None
    assert intent["latest_charge"]["object"] == "charge"
    assert intent["latest_charge"]["transfer_data"]["destination"] == host

"""The fake Stripe API through the official library: refunds, transfer reversals, fee refunds, disputes."""

from __future__ import annotations

import pytest
import stripe

from tests.fakestripe import FakeStripe


def _paid_destination_charge(
    fake_stripe: FakeStripe, amount: int = 1000, fee: int = 100
) -> stripe.PaymentIntent:
    host = fake_stripe.onboarded_account()
    return fake_stripe.client().v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "usd",
            "application_fee_amount": fee,
            "transfer_data": {"destination": host},
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"order_id": "ord_9"},
        }
    )


def test_a_full_refund_reverses_the_transfer_and_refunds_the_fee(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    intent = _paid_destination_charge(fake_stripe, 1000, 100)
    refund = client.v1.refunds.create(
        params={
            "payment_intent": intent.id,
            "reverse_transfer": True,
            "refund_application_fee": True,
            "reason": "requested_by_customer",
            "metadata": {"order_id": "ord_9"},
        },
        options={"idempotency_key": "order:ord_9:refund"},
    )
    assert refund.id.startswith("re_") and refund.object == "refund"
    assert (refund.amount, refund.status, refund.payment_intent) == (1000, "succeeded", intent.id)
    assert refund.charge == intent.latest_charge and refund.metadata["order_id"] == "ord_9"

    reversal = fake_stripe.control.object(refund.transfer_reversal)
    assert reversal["object"] == "transfer_reversal" and reversal["amount"] == 900
    assert reversal["source_refund"] == refund.id
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert charge.refunded is True and charge.amount_refunded == 1000
    transfer = client.v1.transfers.retrieve(charge.transfer)
    assert transfer.reversed is True and transfer.amount_reversed == 900
    assert [r.id for r in client.v1.transfers.reversals.list(transfer.id).data] == [reversal["id"]]
    fee = client.v1.application_fees.retrieve(charge.application_fee)
    assert fee.refunded is True and fee.amount_refunded == 100
    types = [event["type"] for event in fake_stripe.control.events()]
    assert types[-4:] == [
        "refund.created",
        "charge.refunded",
        "transfer.reversed",
        "application_fee.refunded",
    ]
    assert client.v1.refunds.retrieve(refund.id).id == refund.id

    again = client.v1.refunds.create(
        params={
            "payment_intent": intent.id,
            "reverse_transfer": True,
            "refund_application_fee": True,
            "reason": "requested_by_customer",
            "metadata": {"order_id": "ord_9"},
        },
        options={"idempotency_key": "order:ord_9:refund"},
    )
    assert again.id == refund.id and len(fake_stripe.control.refunds()) == 1
    with pytest.raises(stripe.InvalidRequestError) as twice:
        client.v1.refunds.create(params={"payment_intent": intent.id})
    assert twice.value.code == "charge_already_refunded"


def test_partial_refunds_reverse_in_proportion_and_refuse_more_than_is_left(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    intent = _paid_destination_charge(fake_stripe, 1000, 100)
    first = client.v1.refunds.create(
        params={
            "payment_intent": intent.id,
            "amount": 400,
            "reverse_transfer": True,
            "refund_application_fee": True,
        }
    )
    assert fake_stripe.control.object(first.transfer_reversal)["amount"] == 360
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 601})
    assert (too_much.value.http_status, too_much.value.code, too_much.value.param) == (
        400,
        "amount_too_large",
        "amount",
    )
    assert "greater than unrefunded amount" in too_much.value.user_message
    rest = client.v1.refunds.create(
        params={"charge": intent.latest_charge, "reverse_transfer": True, "refund_application_fee": True}
    )
    assert rest.amount == 600
    assert fake_stripe.control.object(rest.transfer_reversal)["amount"] == 540
    fees = fake_stripe.control.application_fees()
    assert fees[0]["amount_refunded"] == 100 and fees[0]["refunded"] is True
    listed = client.v1.refunds.list(params={"payment_intent": intent.id})
    assert [refund.id for refund in listed.data] == [rest.id, first.id]


def test_a_refund_without_reverse_transfer_leaves_the_transfer(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    intent = _paid_destination_charge(fake_stripe)
    refund = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 300})
    assert refund.transfer_reversal is None
    assert fake_stripe.control.transfers()[0]["amount_reversed"] == 0


def test_refunds_of_what_was_not_paid_are_refused(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    unpaid = client.v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"payment_intent": unpaid.id})
    assert refused.value.param == "payment_intent"
    with pytest.raises(stripe.InvalidRequestError) as neither:
        client.v1.refunds.create(params={"amount": 100})
    assert "payment_intent or charge" in neither.value.user_message


def test_pending_refunds_settle_later_with_refund_updated(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    intent = _paid_destination_charge(fake_stripe)
    fake_stripe.control.set_refunds_pending()
    refund = client.v1.refunds.create(params={"payment_intent": intent.id, "reverse_transfer": True})
    assert refund.status == "pending"
    assert fake_stripe.control.events()[-1]["type"] != "charge.refunded"
    fake_stripe.control.settle_refund(refund.id, "succeeded")
    assert client.v1.refunds.retrieve(refund.id).status == "succeeded"
    updated = fake_stripe.control.events("refund.updated")[-1]
    assert updated["data"]["object"]["status"] == "succeeded"
    assert updated["data"]["previous_attributes"] == {"status": "pending"}
    assert fake_stripe.control.events()[-1]["type"] == "charge.refunded"

    other = _paid_destination_charge(fake_stripe)
    failing = client.v1.refunds.create(params={"payment_intent": other.id, "amount": 200})
    fake_stripe.control.settle_refund(failing.id, "failed")
    assert [event["type"] for event in fake_stripe.control.events()][-2:] == [
        "refund.updated",
        "refund.failed",
    ]
    assert client.v1.charges.retrieve(other.latest_charge).amount_refunded == 0


def test_refund_metadata_updates_send_refund_updated(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    intent = _paid_destination_charge(fake_stripe)
    refund = client.v1.refunds.create(params={"payment_intent": intent.id})
    client.v1.refunds.update(refund.id, params={"metadata": {"note": "outbid"}})
    event = fake_stripe.control.events()[-1]
    assert event["type"] == "refund.updated" and event["data"]["object"]["metadata"] == {"note": "outbid"}


def test_disputes_from_the_control_api_and_the_dispute_test_card(fake_stripe: FakeStripe) -> None:
    client = fake_stripe.client()
    intent = _paid_destination_charge(fake_stripe)
    dispute = fake_stripe.control.create_dispute(payment_intent=intent.id, reason="fraudulent")
    assert dispute["id"].startswith("dp_") and dispute["charge"] == intent.latest_charge
    assert dispute["status"] == "needs_response" and dispute["amount"] == 1000
    event = fake_stripe.control.events()[-1]
    assert event["type"] == "charge.dispute.created" and event["data"]["object"]["id"] == dispute["id"]
    assert client.v1.charges.retrieve(intent.latest_charge).disputed is True
    assert client.v1.disputes.retrieve(dispute["id"]).payment_intent == intent.id
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"payment_intent": intent.id})
    assert refused.value.code == "charge_disputed"

    disputed = client.v1.payment_intents.create(
        params={"amount": 700, "currency": "usd", "payment_method": "pm_card_createDispute", "confirm": True}
    )
    assert disputed.status == "succeeded"
    assert [event["type"] for event in fake_stripe.control.events()][-3:] == [
        "charge.succeeded",
        "payment_intent.succeeded",
        "charge.dispute.created",
    ]

"""Refunds of a charge, with the transfer reversal and application-fee refund a Connect platform asks for.

A refund succeeds at once, as card refunds do in Stripe's test mode; a platform set to pending refunds
(control `refunds_pending`) gets `pending` ones that the control API settles later, so the
`refund.updated` path can be exercised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.fakestripe.errors import invalid_request
from tests.fakestripe.events import Ctx
from tests.fakestripe.forms import param_bool, param_int, param_metadata, param_str, refuse_unknown
from tests.fakestripe.listing import PAGING, created_filter, page
from tests.fakestripe.payments import money
from tests.fakestripe.store import new_id

REASONS = (None, "duplicate", "fraudulent", "requested_by_customer")
_PARAMS = [
    "payment_intent",
    "charge",
    "amount",
    "reason",
    "metadata",
    "reverse_transfer",
    "refund_application_fee",
    "instructions_email",
]


def _charge_to_refund(ctx: Ctx, params: Mapping[str, Any]) -> dict[str, Any]:
    platform = ctx.platform
    intent_id = param_str(params, "payment_intent")
    charge_id = param_str(params, "charge")
    if intent_id is None and charge_id is None:
        raise invalid_request(
            "One of the following params should be provided for this request: payment_intent or charge."
        )
    if intent_id is not None:
        intent = platform.get(intent_id, param="payment_intent")
        if intent["object"] != "payment_intent" or intent["status"] != "succeeded":
            raise invalid_request(
                "This PaymentIntent does not have a successful charge to refund.", param="payment_intent"
            )
        charge = platform.get(intent["latest_charge"])
        if charge_id is not None and charge_id != charge["id"]:
            raise invalid_request(
                f"The charge {charge_id} does not belong to the PaymentIntent {intent_id}.", param="charge"
            )
        return charge
    assert charge_id is not None
    charge = platform.get(charge_id, param="charge")
    if charge["object"] != "charge" or charge["status"] != "succeeded":
        raise invalid_request(
            f"Charge {charge_id} has not succeeded, so it cannot be refunded.", param="charge"
        )
    return charge


def _share(part: int, whole: int, of: int, left: int, last: bool) -> int:
    """The part of `of` that refunding `part` of `whole` moves back; all that is left on the last refund."""
    return left if last else min(left, round(part * of / whole))


def create_refund(ctx: Ctx, params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, _PARAMS)
    platform = ctx.platform
    charge = _charge_to_refund(ctx, params)
    if charge["disputed"]:
        raise invalid_request(
            f"Charge {charge['id']} has been charged back; cannot issue a refund.", code="charge_disputed"
        )
    remaining = charge["amount"] - charge["amount_refunded"]
    if remaining <= 0:
        raise invalid_request(
            f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded"
        )
    amount = param_int(params, "amount")
    if amount is None:
        amount = remaining
    if amount <= 0:
        raise invalid_request("Invalid positive integer", param="amount")
    if amount > remaining:
        currency = charge["currency"]
        raise invalid_request(
            f"Refund amount ({money(amount, currency)}) is greater than unrefunded amount on charge "
            f"({money(remaining, currency)})",
            param="amount",
            code="amount_too_large",
        )
    reason = param_str(params, "reason")
    if reason not in REASONS:
        raise invalid_request(
            "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer", param="reason"
        )
    reverse = param_bool(params, "reverse_transfer")
    refund_fee = param_bool(params, "refund_application_fee")
    pending = platform.refunds_pending
    refund: dict[str, Any] = {
        "id": new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": new_id("txn"),
        "charge": charge["id"],
        "created": platform.now(),
        "currency": charge["currency"],
        "destination_details": {"card": {"type": "refund"}, "type": "card"},
        "failure_reason": None,
        "metadata": param_metadata(params),
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "pending" if pending else "succeeded",
        "transfer_reversal": None,
    }
    platform.add("refunds", refund)
    previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] == charge["amount"]
    last = charge["refunded"]
    ctx.emit("refund.created", refund)
    if not pending:
        ctx.emit("charge.refunded", charge, previous=previous)
    if reverse and charge["transfer"]:
        _reverse_transfer(ctx, charge, refund, amount, last)
    if refund_fee and charge["application_fee"]:
        _refund_fee(ctx, charge, amount, last)
    return refund


def _reverse_transfer(
    ctx: Ctx, charge: dict[str, Any], refund: dict[str, Any], amount: int, last: bool
) -> None:
    transfer = ctx.platform.get(charge["transfer"])
    left = transfer["amount"] - transfer["amount_reversed"]
    share = _share(amount, charge["amount"], transfer["amount"], left, last)
    if share <= 0:
        return
    reversal = {
        "id": new_id("trr"),
        "object": "transfer_reversal",
        "amount": share,
        "balance_transaction": new_id("txn"),
        "created": ctx.platform.now(),
        "currency": transfer["currency"],
        "destination_payment_refund": new_id("pyr"),
        "metadata": {},
        "source_refund": refund["id"],
        "transfer": transfer["id"],
    }
    ctx.platform.add("transfer_reversals", reversal)
    refund["transfer_reversal"] = reversal["id"]
    previous = {"amount_reversed": transfer["amount_reversed"], "reversed": transfer["reversed"]}
    transfer["amount_reversed"] += share
    transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
    transfer["reversals"]["data"].insert(0, reversal)
    transfer["reversals"]["total_count"] += 1
    ctx.emit("transfer.reversed", transfer, previous=previous)


def _refund_fee(ctx: Ctx, charge: dict[str, Any], amount: int, last: bool) -> None:
    fee = ctx.platform.get(charge["application_fee"])
    left = fee["amount"] - fee["amount_refunded"]
    share = _share(amount, charge["amount"], fee["amount"], left, last)
    if share <= 0:
        return
    fee_refund = {
        "id": new_id("fr"),
        "object": "fee_refund",
        "amount": share,
        "balance_transaction": new_id("txn"),
        "created": ctx.platform.now(),
        "currency": fee["currency"],
        "fee": fee["id"],
        "metadata": {},
    }
    ctx.platform.add("fee_refunds", fee_refund)
    previous = {"amount_refunded": fee["amount_refunded"], "refunded": fee["refunded"]}
    fee["amount_refunded"] += share
    fee["refunded"] = fee["amount_refunded"] == fee["amount"]
    fee["refunds"]["data"].insert(0, fee_refund)
    fee["refunds"]["total_count"] += 1
    ctx.emit("application_fee.refunded", fee, previous=previous)


def update_refund(ctx: Ctx, refund: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, ["metadata"])
    metadata = param_metadata(params, refund["metadata"])
    if metadata != refund["metadata"]:
        previous = {"metadata": refund["metadata"]}
        refund["metadata"] = metadata
        ctx.emit("refund.updated", refund, previous=previous)
    return refund


def settle_refund(ctx: Ctx, refund: dict[str, Any], status: str) -> dict[str, Any]:
    """A pending refund succeeds or fails, as the card network answers."""
    if refund["status"] != "pending":
        raise invalid_request(f"Refund {refund['id']} is {refund['status']}, not pending.")
    if status not in ("succeeded", "failed"):
        raise invalid_request("status must be succeeded or failed", param="status")
    charge = ctx.platform.get(refund["charge"])
    refund["status"] = status
    ctx.emit("refund.updated", refund, previous={"status": "pending"})
    if status == "succeeded":
        ctx.emit("charge.refunded", charge)
        return refund
    refund["failure_reason"] = "expired_or_canceled_card"
    charge["amount_refunded"] -= refund["amount"]
    charge["refunded"] = False
    ctx.emit("refund.failed", refund)
    return refund


def list_refunds(ctx: Ctx, params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, ["payment_intent", "charge", "created", *PAGING])
    items = ctx.platform.newest_first("refunds")
    for name in ("payment_intent", "charge"):
        wanted = param_str(params, name)
        if wanted is not None:
            items = [item for item in items if item[name] == wanted]
    return page(created_filter(params, items), params, "/v1/refunds", "refund")

"""PaymentIntents and what paying one makes: the charge, and for a destination charge the platform's
application fee and the transfer of the rest to the connected account; disputes of a charge."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tests.fakestripe.cards import CARDS, CardBehaviour
from tests.fakestripe.errors import StripeApiError, invalid_request, no_such, unexpected_state
from tests.fakestripe.events import Ctx
from tests.fakestripe.forms import (
    param_bool,
    param_dict,
    param_int,
    param_list,
    param_metadata,
    param_str,
    refuse_unknown,
)
from tests.fakestripe.listing import PAGING, created_filter, page
from tests.fakestripe.store import new_id, snapshot, token

MIN_AMOUNT = 50
MAX_AMOUNT = 99_999_999
CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
CONFIRMABLE = ("requires_payment_method", "requires_confirmation")
# The fields Stripe.js sees when it retrieves an intent with a publishable key and its client secret.
PUBLIC_FIELDS = [
    "id",
    "object",
    "amount",
    "amount_details",
    "automatic_payment_methods",
    "canceled_at",
    "cancellation_reason",
    "capture_method",
    "client_secret",
    "confirmation_method",
    "created",
    "currency",
    "description",
    "last_payment_error",
    "livemode",
    "next_action",
    "payment_method",
    "payment_method_types",
    "processing",
    "receipt_email",
    "setup_future_usage",
    "shipping",
    "status",
]
_CREATE_PARAMS = [
    "amount",
    "currency",
    "metadata",
    "description",
    "application_fee_amount",
    "transfer_data",
    "transfer_data[destination]",
    "automatic_payment_methods",
    "automatic_payment_methods[enabled]",
    "automatic_payment_methods[allow_redirects]",
    "payment_method_types",
    "payment_method",
    "confirm",
    "receipt_email",
    "transfer_group",
    "statement_descriptor_suffix",
    "return_url",
]
_CURRENCY = re.compile(r"^[a-z]{3}$")


def money(cents: int, currency: str) -> str:
    return f"${cents / 100:.2f}" if currency == "usd" else f"{cents / 100:.2f} {currency}"


def create_intent(ctx: Ctx, params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, _CREATE_PARAMS)
    platform = ctx.platform
    amount = param_int(params, "amount", required=True)
    assert amount is not None
    currency = (param_str(params, "currency", required=True) or "").lower()
    if not _CURRENCY.match(currency):
        raise invalid_request(f"Invalid currency: {currency}.", param="currency")
    if amount < MIN_AMOUNT:
        raise invalid_request(
            f"Amount must be at least {money(MIN_AMOUNT, currency)}", param="amount", code="amount_too_small"
        )
    if amount > MAX_AMOUNT:
        raise invalid_request(
            f"Amount must be no more than {money(MAX_AMOUNT, currency)}",
            param="amount",
            code="amount_too_large",
        )
    automatic = param_dict(params, "automatic_payment_methods")
    types = param_list(params, "payment_method_types")
    if automatic and types:
        raise invalid_request(
            "You may only specify one of these parameters: automatic_payment_methods, payment_method_types.",
            param="automatic_payment_methods",
        )
    destination = param_str(param_dict(params, "transfer_data"), "destination")
    if "transfer_data" in params and destination is None:
        raise invalid_request(
            "Missing required param: transfer_data[destination].",
            param="transfer_data[destination]",
            code="parameter_missing",
        )
    fee = param_int(params, "application_fee_amount")
    if fee is not None:
        if destination is None:
            raise invalid_request(
                "Can only apply an application_fee_amount when the PaymentIntent is attempting a direct "
                "payment (using an OAuth key or Stripe-Account header) or destination payment (using "
                "`transfer_data[destination]`).",
                param="application_fee_amount",
            )
        if not 0 <= fee <= amount:
            raise invalid_request(
                "The application fee amount must be between 0 and the amount of the PaymentIntent.",
                param="application_fee_amount",
            )
    if destination is not None:
        account = platform.collection("accounts").get(destination)
        if account is None:
            raise invalid_request(
                f"No such destination: '{destination}'",
                param="transfer_data[destination]",
                code="resource_missing",
            )
        if account["capabilities"].get("transfers") != "active":
            raise invalid_request(
                "Your destination account needs to have at least one of the following capabilities "
                "enabled: transfers, crypto_transfers, legacy_payments",
                param="transfer_data[destination]",
                code="insufficient_capabilities_for_transfer",
            )
    intent_id = new_id("pi")
    intent: dict[str, Any] = {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": fee,
        "automatic_payment_methods": None
        if types
        else {
            "allow_redirects": param_str(automatic, "allow_redirects") or "always",
            "enabled": param_bool(automatic, "enabled", default=True),
        },
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": f"{intent_id}_secret_{token(25)}",
        "confirmation_method": "automatic",
        "created": platform.now(),
        "currency": currency,
        "customer": None,
        "description": param_str(params, "description"),
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": param_metadata(params),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": types or ["card"],
        "processing": None,
        "receipt_email": param_str(params, "receipt_email"),
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": param_str(params, "statement_descriptor_suffix"),
        "status": "requires_payment_method",
        "transfer_data": {"destination": destination} if destination else None,
        "transfer_group": param_str(params, "transfer_group"),
    }
    if types and "card" not in types:
        raise invalid_request(
            "The fake Stripe API supports card payments only.", param="payment_method_types"
        )
    method = param_str(params, "payment_method")
    if method is not None:
        intent["payment_method"] = _payment_method(ctx, method)["id"]
        intent["status"] = "requires_confirmation"
    platform.add("payment_intents", intent)
    ctx.emit("payment_intent.created", intent)
    if param_bool(params, "confirm"):
        return confirm(ctx, intent, None)
    return intent


def list_intents(ctx: Ctx, params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, ["created", "customer", *PAGING])
    items = created_filter(params, ctx.platform.newest_first("payment_intents"))
    return page(items, params, "/v1/payment_intents", "payment_intent")


def public_view(intent: Mapping[str, Any]) -> dict[str, Any]:
    return {name: intent[name] for name in PUBLIC_FIELDS}


def check_client_secret(intent: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    secret = param_str(params, "client_secret", required=True)
    if secret != intent["client_secret"]:
        raise invalid_request(
            "The client_secret provided does not match the client_secret associated with the PaymentIntent.",
            param="client_secret",
        )


def _payment_method(ctx: Ctx, reference: str) -> dict[str, Any]:
    """The PaymentMethod a test id (`pm_card_visa`) or an earlier PaymentMethod's id names."""
    existing = ctx.platform.collection("payment_methods").get(reference)
    if existing is not None:
        return existing
    card = CARDS.get(reference)
    if card is None:
        raise no_such("PaymentMethod", reference, param="payment_method")
    method = {
        "id": new_id("pm"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {"address": None, "email": None, "name": None, "phone": None},
        "card": {
            "brand": card.brand,
            "country": "US",
            "exp_month": 12,
            "exp_year": 2034,
            "funding": "credit",
            "last4": card.last4,
        },
        "created": ctx.platform.now(),
        "customer": None,
        "livemode": False,
        "metadata": {},
        "type": "card",
        "_test_card": reference,
    }
    return ctx.platform.add("payment_methods", method)


def card_of(method: Mapping[str, Any]) -> CardBehaviour:
    return CARDS[method["_test_card"]]


def confirm(ctx: Ctx, intent: dict[str, Any], method_ref: str | None) -> dict[str, Any]:
    if intent["status"] not in CONFIRMABLE:
        raise unexpected_state(
            _state_message("confirm", intent["status"])
            if intent["status"] != "succeeded"
            else "You cannot confirm this PaymentIntent because it has already succeeded after being "
            "previously confirmed."
        )
    reference = method_ref or intent["payment_method"]
    if reference is None:
        raise unexpected_state(
            "You cannot confirm this PaymentIntent because it's missing a payment method. You can either "
            "update the PaymentIntent with a payment method and then confirm it again, or confirm it again "
            "directly with a payment method."
        )
    method = _payment_method(ctx, reference)
    card = card_of(method)
    charge = _charge(ctx, intent, method, card)
    intent["latest_charge"] = charge["id"]
    if card.decline_code is not None:
        return _decline(ctx, intent, method, charge, card)
    intent.update(status="succeeded", amount_received=intent["amount"], payment_method=method["id"])
    intent["last_payment_error"] = None
    destination = (intent["transfer_data"] or {}).get("destination")
    if destination:
        _pay_destination(ctx, intent, charge, destination)
    ctx.emit("charge.succeeded", charge)
    ctx.emit("payment_intent.succeeded", intent)
    if charge["transfer"]:
        ctx.emit("transfer.created", ctx.platform.get(charge["transfer"]))
    if charge["application_fee"]:
        ctx.emit("application_fee.created", ctx.platform.get(charge["application_fee"]))
    if card.disputed:
        create_dispute(ctx, charge, reason="fraudulent", amount=None)
    return intent


def _state_message(action: str, status: str) -> str:
    allowed = ", ".join(CANCELABLE if action == "cancel" else CONFIRMABLE)
    return (
        f"You cannot {action} this PaymentIntent because it has a status of {status}. Only a PaymentIntent "
        f"with one of the following statuses may be {action}ed: {allowed}."
    )


def _charge(ctx: Ctx, intent: dict[str, Any], method: dict[str, Any], card: CardBehaviour) -> dict[str, Any]:
    succeeded = card.decline_code is None
    charge: dict[str, Any] = {
        "id": new_id("ch"),
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": intent["amount"] if succeeded else 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": intent["application_fee_amount"] if succeeded else None,
        "balance_transaction": new_id("txn") if succeeded else None,
        "billing_details": method["billing_details"],
        "captured": succeeded,
        "created": ctx.platform.now(),
        "currency": intent["currency"],
        "customer": None,
        "description": intent["description"],
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None if succeeded else card.code,
        "failure_message": None if succeeded else card.message,
        "fraud_details": {},
        "livemode": False,
        "metadata": dict(intent["metadata"]),
        "on_behalf_of": None,
        "outcome": {
            "network_status": "approved_by_network" if succeeded else "declined_by_network",
            "reason": card.decline_code,
            "risk_level": "normal",
            "seller_message": "Payment complete."
            if succeeded
            else "The bank did not return any further details with this decline.",
            "type": "authorized" if succeeded else "issuer_declined",
        },
        "paid": succeeded,
        "payment_intent": intent["id"],
        "payment_method": method["id"],
        "payment_method_details": {"card": dict(method["card"]), "type": "card"},
        "receipt_email": intent["receipt_email"],
        "receipt_url": None,
        "refunded": False,
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "status": "succeeded" if succeeded else "failed",
        "transfer": None,
        "transfer_data": snapshot(intent["transfer_data"]) if intent["transfer_data"] else None,
        "transfer_group": intent["transfer_group"],
    }
    if charge["transfer_data"] is not None:
        charge["transfer_data"]["amount"] = None
    return ctx.platform.add("charges", charge)


def _decline(
    ctx: Ctx, intent: dict[str, Any], method: dict[str, Any], charge: dict[str, Any], card: CardBehaviour
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "type": "card_error",
        "code": card.code,
        "decline_code": card.decline_code,
        "message": card.message,
        "charge": charge["id"],
        "doc_url": f"https://stripe.com/docs/error-codes/{card.code.replace('_', '-')}",
        "payment_method": snapshot(method),
    }
    intent.update(status="requires_payment_method", payment_method=None, last_payment_error=error)
    ctx.emit("charge.failed", charge)
    ctx.emit("payment_intent.payment_failed", intent)
    raise StripeApiError(
        402,
        card.message,
        type="card_error",
        code=card.code,
        decline_code=card.decline_code,
        extra={
            "charge": charge["id"],
            "payment_intent": snapshot(intent),
            "payment_method": snapshot(method),
        },
        saved=True,
    )


def _pay_destination(ctx: Ctx, intent: dict[str, Any], charge: dict[str, Any], destination: str) -> None:
    platform = ctx.platform
    now = platform.now()
    group = intent["transfer_group"] or f"group_{intent['id']}"
    intent["transfer_group"] = charge["transfer_group"] = group
    fee_amount = intent["application_fee_amount"] or 0
    transfer_id = new_id("tr")
    platform.add(
        "transfers",
        {
            "id": transfer_id,
            "object": "transfer",
            "amount": intent["amount"] - fee_amount,
            "amount_reversed": 0,
            "balance_transaction": new_id("txn"),
            "created": now,
            "currency": intent["currency"],
            "description": None,
            "destination": destination,
            "destination_payment": new_id("py"),
            "livemode": False,
            "metadata": {},
            "reversals": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/transfers/{transfer_id}/reversals",
            },
            "reversed": False,
            "source_transaction": charge["id"],
            "source_type": "card",
            "transfer_group": group,
        },
    )
    charge["transfer"] = transfer_id
    if intent["application_fee_amount"] is None:
        return
    fee_id = new_id("fee")
    platform.add(
        "application_fees",
        {
            "id": fee_id,
            "object": "application_fee",
            "account": destination,
            "amount": fee_amount,
            "amount_refunded": 0,
            "application": None,
            "balance_transaction": new_id("txn"),
            "charge": charge["id"],
            "created": now,
            "currency": intent["currency"],
            "fee_source": {"charge": charge["id"], "type": "charge"},
            "livemode": False,
            "originating_transaction": None,
            "refunded": False,
            "refunds": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/application_fees/{fee_id}/refunds",
            },
        },
    )
    charge["application_fee"] = fee_id


def cancel(ctx: Ctx, intent: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, ["cancellation_reason"])
    reason = param_str(params, "cancellation_reason")
    if reason not in (None, "duplicate", "fraudulent", "requested_by_customer", "abandoned"):
        raise invalid_request(
            "Invalid cancellation_reason: must be one of duplicate, fraudulent, requested_by_customer or "
            "abandoned",
            param="cancellation_reason",
        )
    if intent["status"] not in CANCELABLE:
        raise unexpected_state(_state_message("cancel", intent["status"]))
    intent.update(status="canceled", canceled_at=ctx.platform.now(), cancellation_reason=reason)
    ctx.emit("payment_intent.canceled", intent)
    return intent


def create_dispute(ctx: Ctx, charge: dict[str, Any], *, reason: str, amount: int | None) -> dict[str, Any]:
    if charge["status"] != "succeeded":
        raise invalid_request(f"Charge {charge['id']} did not succeed, so it cannot be disputed.")
    if charge["disputed"]:
        raise invalid_request(f"Charge {charge['id']} is already disputed.", code="charge_disputed")
    now = ctx.platform.now()
    dispute = {
        "id": new_id("dp"),
        "object": "dispute",
        "amount": amount if amount is not None else charge["amount"],
        "balance_transactions": [],
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "evidence": {},
        "evidence_details": {
            "due_by": now + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "status": "needs_response",
    }
    ctx.platform.add("disputes", dispute)
    charge["disputed"] = True
    ctx.emit("charge.dispute.created", dispute)
    return dispute

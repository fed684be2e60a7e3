"""Stripe's test payment methods, by the ids Stripe gives them (`pm_card_visa`, …)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CardBehaviour:
    brand: str
    last4: str
    # None: the charge succeeds. Otherwise Stripe's decline_code, with the error code and message.
    decline_code: str | None = None
    code: str = "card_declined"
    message: str = "Your card was declined."
    # The charge succeeds, then the cardholder disputes it (Stripe's pm_card_createDispute).
    disputed: bool = False


_DECLINED = CardBehaviour("visa", "0002", "generic_decline")
_NO_FUNDS = CardBehaviour("visa", "9995", "insufficient_funds", message="Your card has insufficient funds.")

CARDS: dict[str, CardBehaviour] = {
    "pm_card_visa": CardBehaviour("visa", "4242"),
    "pm_card_visa_debit": CardBehaviour("visa", "5556"),
    "pm_card_mastercard": CardBehaviour("mastercard", "4444"),
    "pm_card_amex": CardBehaviour("amex", "8431"),
    "pm_card_chargeDeclined": _DECLINED,
    "pm_card_visa_chargeDeclined": _DECLINED,
    "pm_card_chargeDeclinedInsufficientFunds": _NO_FUNDS,
    "pm_card_visa_chargeDeclinedInsufficientFunds": _NO_FUNDS,
    "pm_card_chargeDeclinedFraudulent": CardBehaviour("visa", "0019", "fraudulent"),
    "pm_card_chargeDeclinedLostCard": CardBehaviour("visa", "9987", "lost_card"),
    "pm_card_chargeDeclinedExpiredCard": CardBehaviour(
        "visa", "0069", "expired_card", code="expired_card", message="Your card has expired."
    ),
    "pm_card_chargeDeclinedIncorrectCvc": CardBehaviour(
        "visa",
        "0127",
        "incorrect_cvc",
        code="incorrect_cvc",
        message="Your card's security code is incorrect.",
    ),
    "pm_card_createDispute": CardBehaviour("visa", "0259", disputed=True),
}

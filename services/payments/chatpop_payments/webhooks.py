"""Checking a Stripe webhook request: the signature over the exact body, and its time.

Stripe signs `<t>.<body>` with the endpoint's secret; the library checks the signature and refuses
a timestamp older than the tolerance, but takes one from the future. A request signed more than
FUTURE_LIMIT seconds ahead of our clock is refused here: nobody but a holder of the secret could
have made it, and accepting it would let a captured request be replayed long after.
"""

from __future__ import annotations

import time
from typing import Any

import stripe

from chatpop_payments.stripe_api import plain

# Seconds a signed request stays acceptable (Stripe's default), and how far ahead of our clock its
# time may lie (clock skew).
TOLERANCE = 300
FUTURE_LIMIT = 60


class InvalidSignature(Exception):
    """The request is not a webhook Stripe signed for this endpoint just now."""


def signed_at(header: str) -> int:
    """The `t=` timestamp of a Stripe-Signature header."""
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                break
    raise InvalidSignature("The Stripe-Signature header has no timestamp.")


def verify(payload: bytes, header: str, secret: str, *, now: float | None = None) -> dict[str, Any]:
    """The event the request carries, as a plain dict; InvalidSignature unless Stripe signed exactly
    these bytes with `secret` within TOLERANCE seconds and not more than FUTURE_LIMIT ahead."""
    if not header:
        raise InvalidSignature("The Stripe-Signature header is missing.")
    timestamp = signed_at(header)
    current = time.time() if now is None else now
    if timestamp > current + FUTURE_LIMIT:
        raise InvalidSignature("The webhook's timestamp lies in the future.")
    if timestamp < current - TOLERANCE:
        raise InvalidSignature("The webhook's timestamp is too old.")
    try:
        event = stripe.Webhook.construct_event(payload, header, secret, tolerance=TOLERANCE)
    except stripe.SignatureVerificationError as exc:
        raise InvalidSignature("The webhook's signature does not verify.") from exc
    except ValueError as exc:
        # Not UTF-8 or not JSON, yet signed: still nothing we can act on.
        raise InvalidSignature("The webhook's body is not a Stripe event.") from exc
    data = plain(event)
    if not isinstance(data.get("id"), str) or not isinstance(data.get("type"), str):
        raise InvalidSignature("The webhook's body is not a Stripe event.")
    return data

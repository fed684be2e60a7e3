"""What paid pins cost and buy, and the platform's fee: one table for payments (pricing orders) and
messaging (deciding outbids), so the two can never disagree.

Tiers (cents -> minutes added): 100->10, 200->15, 500->20, 1000->30, 1500->45, 2000->60, then every
further 500 up to 20000 adds 60. A new pin must outbid the top pin by at least one tier: its tier must
be above everything paid for the top pin (extensions included). When no paid pin is live, the lowest
tier is the base rate. A winning pin stands for 60 minutes or its tier's time, whichever is longer.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

TOP_MINUTES = 60
_FIRST_TIERS = ((100, 10), (200, 15), (500, 20), (1000, 30), (1500, 45), (2000, 60))
_STEP_CENTS = 500
_STEP_MINUTES = 60
MAX_TIER_CENTS = 20_000


def _build() -> tuple[tuple[int, int], ...]:
    tiers = list(_FIRST_TIERS)
    cents, minutes = tiers[-1]
    while cents < MAX_TIER_CENTS:
        cents += _STEP_CENTS
        minutes += _STEP_MINUTES
        tiers.append((cents, minutes))
    return tuple(tiers)


# (amount in cents, minutes it adds), ascending.
PIN_TIERS: tuple[tuple[int, int], ...] = _build()
_MINUTES = dict(PIN_TIERS)
BASE_RATE_CENTS = PIN_TIERS[0][0]


def is_tier(cents: int) -> bool:
    return cents in _MINUTES


def tier_minutes(cents: int) -> int:
    """The minutes a tier adds; KeyError for an amount that is not a tier."""
    return _MINUTES[cents]


def new_pin_minutes(cents: int) -> int:
    """How long a newly won pin stands: 60 minutes or its tier's time, whichever is longer."""
    return max(TOP_MINUTES, tier_minutes(cents))


def min_outbid(top_amount_cents: int | None) -> int | None:
    """The lowest tier that outbids a top pin with this much paid (None: no live paid pin, the base
    rate applies), or None when no tier is above it."""
    if top_amount_cents is None:
        return BASE_RATE_CENTS
    for cents, _ in PIN_TIERS:
        if cents > top_amount_cents:
            return cents
    return None


def outbids(cents: int, top_amount_cents: int | None) -> bool:
    needed = min_outbid(top_amount_cents)
    return needed is not None and is_tier(cents) and cents >= needed


def platform_fee(amount_cents: int, percent: int | float | Decimal) -> int:
    """The platform's share of a payment, rounded half up to the cent and never above the amount."""
    fee = (Decimal(amount_cents) * Decimal(str(percent)) / Decimal(100)).quantize(
        Decimal(1), rounding=ROUND_HALF_UP
    )
    return min(amount_cents, max(0, int(fee)))

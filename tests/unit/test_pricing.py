"""The paid-pin tier table and the platform fee, as PRODUCT.md states them."""

from __future__ import annotations

import itertools

import pytest

from chatpop_common import pricing


def test_tiers_follow_the_table() -> None:
    assert pricing.PIN_TIERS[:6] == ((100, 10), (200, 15), (500, 20), (1000, 30), (1500, 45), (2000, 60))
    assert pricing.PIN_TIERS[6] == (2500, 120)
    assert pricing.PIN_TIERS[-1] == (20_000, 60 + 36 * 60)
    amounts = [cents for cents, _ in pricing.PIN_TIERS]
    assert amounts == sorted(set(amounts))
    assert all(b - a == 500 for a, b in itertools.pairwise(amounts[5:]))


def test_a_new_pin_stands_an_hour_or_its_tiers_time() -> None:
    assert pricing.new_pin_minutes(100) == 60
    assert pricing.new_pin_minutes(2000) == 60
    assert pricing.new_pin_minutes(3000) == 180
    with pytest.raises(KeyError):
        pricing.new_pin_minutes(150)


@pytest.mark.parametrize(
    ("top", "needed"),
    [
        (None, 100),
        (100, 200),
        (200, 500),
        (300, 500),
        (2000, 2500),
        (2700, 3000),
        (19_999, 20_000),
        (20_000, None),
    ],
)
def test_outbidding_takes_the_next_tier_above_everything_paid(top: int | None, needed: int | None) -> None:
    assert pricing.min_outbid(top) == needed
    if needed is not None:
        assert pricing.outbids(needed, top)
        assert not pricing.outbids(needed - 1, top)


def test_the_platform_fee_rounds_half_up_and_never_exceeds_the_amount() -> None:
    assert pricing.platform_fee(1000, 10) == 100
    assert pricing.platform_fee(105, 10) == 11
    assert pricing.platform_fee(104, 10) == 10
    assert pricing.platform_fee(100, 0) == 0
    assert pricing.platform_fee(100, 100) == 100

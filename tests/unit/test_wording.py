"""How long to wait, in the words people read in error messages."""

from __future__ import annotations

import pytest

from chatpop_common.wording import wait_words


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "in a moment"),
        (1, "in a moment"),
        (12, "in 12 seconds"),
        (59.2, "in 60 seconds"),
        (60, "in a minute"),
        (61, "in 2 minutes"),
        (3180, "in 53 minutes"),
        (3600, "in 60 minutes"),
        (5400, "in 2 hours"),
        (86_400, "in 24 hours"),
        (2 * 86_400, "in 2 days"),
        (30 * 86_400, "in 30 days"),
    ],
)
def test_waits_are_said_in_the_largest_fitting_unit_with_plurals(seconds: float, words: str) -> None:
    assert wait_words(seconds) == words

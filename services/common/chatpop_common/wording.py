"""Words for people: how long to wait, said the way a person would say it.

Error messages travel from the services to the web client and to API users as they are, so they
are written as sentences ("Too many new sessions from your network. Try again in 53 minutes."),
never as raw seconds.
"""

from __future__ import annotations

import math

_MINUTE = 60
_HOUR = 3600
_DAY = 86_400


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}s" if number != 1 else f"a {unit}" if unit != "hour" else "an hour"


def wait_words(seconds: float) -> str:
    """'in 12 seconds', 'in a minute', 'in 53 minutes', 'in 2 hours', 'in 3 days' (rounded up)."""
    if seconds <= 1:
        return "in a moment"
    if seconds < _MINUTE:
        return f"in {math.ceil(seconds)} seconds"
    if seconds < 90 * _MINUTE:
        return f"in {_count(math.ceil(seconds / _MINUTE), 'minute')}"
    if seconds < 2 * _DAY:
        return f"in {_count(math.ceil(seconds / _HOUR), 'hour')}"
    return f"in {_count(math.ceil(seconds / _DAY), 'day')}"

"""Exponential backoff with jitter, so that many retrying callers do not all come back at once."""

from __future__ import annotations

import secrets

_random = secrets.SystemRandom()
# Doubling stops long before a float would overflow; `limit` caps the delay far earlier anyway.
_MAX_DOUBLINGS = 64


def jittered(attempt: int, *, first: float, limit: float) -> float:
    """The delay before retry number `attempt` (0 for the first retry): `first` seconds doubling per
    attempt up to `limit`, drawn from the upper half of that at random."""
    delay = min(first * 2.0 ** min(max(attempt, 0), _MAX_DOUBLINGS), limit)
    return delay * _random.uniform(0.5, 1.0)


class Backoff:
    """Delays of `first` seconds doubling up to `limit`, each drawn from its upper half at random."""

    def __init__(self, first: float = 0.1, limit: float = 5.0) -> None:
        self._first = first
        self._limit = limit
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next(self) -> float:
        delay = jittered(self._attempt, first=self._first, limit=self._limit)
        self._attempt += 1
        return delay

"""Exponential backoff with jitter, so that many retrying callers do not all come back at once."""

from __future__ import annotations

import secrets

_random = secrets.SystemRandom()


class Backoff:
    """Delays of `first` seconds doubling up to `limit`, each drawn from its upper half at random."""

    def __init__(self, first: float = 0.1, limit: float = 5.0) -> None:
        self._first = first
        self._limit = limit
        self._next = first

    def reset(self) -> None:
        self._next = self._first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._limit)
        return delay * _random.uniform(0.5, 1.0)

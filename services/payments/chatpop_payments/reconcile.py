"""Reconciliation: Stripe's list of recent events, fed through the same handler as webhooks.

A webhook can be lost for good (the edge was down through all of Stripe's retries, a misconfigured
endpoint). Every RECONCILE_INTERVAL seconds each replica lists the events of the types payments acts
on created since its stored cursor, less an overlap (events of the same second, clocks), oldest
first, and hands each to the event handler: an event a webhook brought already is a duplicate by its
id and changes nothing, one that was lost is applied now. The cursor then moves to the newest event
applied; an event that cannot be applied yet (EventNotReady) holds the cursor before it, so the next
round lists it again. Replicas doing the same work at once is harmless for the same reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import asyncpg

from chatpop_common.periodic import run_every
from chatpop_payments.events import TYPES, EventHandler, EventNotReady
from chatpop_payments.metrics import RECONCILE_APPLIED, RECONCILE_ROUNDS
from chatpop_payments.stripe_api import StripeApi

log = logging.getLogger(__name__)

CURSOR = "events"
# Seconds listed again before the cursor on every round.
OVERLAP = 300
# How far back the very first round looks (Stripe keeps events for 30 days).
FIRST_LOOKBACK = 3 * 86_400


def _created(event: Mapping[str, Any]) -> int:
    value = event.get("created")
    return value if isinstance(value, int) else 0


class Reconciler:
    def __init__(self, pool: asyncpg.Pool, stripe: StripeApi, events: EventHandler) -> None:
        self._pool = pool
        self._stripe = stripe
        self._events = events

    async def cursor(self) -> int | None:
        value = await self._pool.fetchval("SELECT cursor FROM stripe_sync WHERE name = $1", CURSOR)
        return int(value) if value is not None else None

    async def run_once(self) -> int:
        """One round; the number of events applied that no webhook had brought."""
        try:
            applied = await self._round()
        except Exception:
            RECONCILE_ROUNDS.labels("failed").inc()
            raise
        RECONCILE_ROUNDS.labels("ok").inc()
        return applied

    async def _round(self) -> int:
        stored = await self.cursor()
        start = stored if stored is not None else int(time.time()) - FIRST_LOOKBACK
        found = [event async for event in self._stripe.events_since(max(0, start - OVERLAP), TYPES)]
        found.sort(key=lambda event: (_created(event), str(event.get("id"))))
        newest = start
        applied = 0
        for event in found:
            try:
                handled = await self._events.handle(event, "reconcile")
            except EventNotReady as exc:
                log.info("reconciliation: %s; listed again next round", exc)
                break
            newest = max(newest, _created(event))
            if not handled.duplicate:
                applied += 1
                RECONCILE_APPLIED.inc()
                log.warning(
                    "reconciliation applied %s (%s), which no webhook had brought",
                    handled.event_id,
                    handled.event_type,
                )
        await self._pool.execute(
            "INSERT INTO stripe_sync (name, cursor) VALUES ($1, $2)"
            " ON CONFLICT (name) DO UPDATE SET cursor = GREATEST(stripe_sync.cursor, EXCLUDED.cursor),"
            " updated_at = now()",
            CURSOR,
            newest,
        )
        return applied

    async def run(self, interval: float) -> None:
        """A round every `interval` seconds until cancelled."""

        async def round_() -> None:
            await self.run_once()

        await run_every(interval, round_, what="reconcile payments with Stripe's events")

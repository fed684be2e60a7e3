"""Prometheus metrics of payments.

Orders by state are a gauge read from the table in the background: every replica sees the same
rows, so the gauge is a count from Postgres (dashboards take max() across replicas) rather than a
per-process counter that would reset with each pod. What this process did (events handled,
fulfilments, reconciliation rounds) are counters and a histogram of its own.
"""

from __future__ import annotations

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from chatpop_common.periodic import run_every

LEDGER = Gauge(
    "chatpop_payments",
    "Orders by what is bought (kind: pin, pin_extension, tip, seat) and state.",
    ["kind", "state"],
)
LEDGER_REFRESH_FAILURES = Counter(
    "chatpop_payments_metrics_refresh_failures", "Order counts that could not be read from Postgres."
)
EVENTS = Counter(
    "chatpop_payments_events_total",
    "Payment events handled, by Stripe type (`other` for types payments ignores), outcome and source"
    " (webhook, reconcile, test).",
    ["type", "outcome", "source"],
)
WEBHOOKS_REFUSED = Counter(
    "chatpop_payments_webhooks_refused_total",
    "Webhook requests refused: bad signature, stale or future timestamp, not an event.",
)
FULFILMENTS = Counter(
    "chatpop_payments_fulfilments_total",
    "Paid orders messaging (pins, tips) or rooms (seats) granted or refused (refused ones are refunded),"
    " by kind and outcome.",
    ["kind", "outcome"],
)
FULFILMENT_LATENCY = Histogram(
    "chatpop_payments_fulfilment_seconds",
    "Seconds from an order being paid to messaging or rooms granting or refusing it.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
RECONCILE_ROUNDS = Counter(
    "chatpop_payments_reconcile_rounds_total",
    "Reconciliation rounds with Stripe's list of events, by result (ok, failed).",
    ["result"],
)
RECONCILE_APPLIED = Counter(
    "chatpop_payments_reconcile_applied_total",
    "Events reconciliation found that no webhook had brought (applied late).",
)


async def refresh_ledger(pool: asyncpg.Pool, seen: set[tuple[str, str]]) -> None:
    """Set the gauge from the table; combinations that disappeared drop to zero."""
    rows = await pool.fetch("SELECT kind, state, count(*) AS n FROM orders GROUP BY kind, state")
    current = {(str(row["kind"]), str(row["state"])): int(row["n"]) for row in rows}
    for labels in seen - current.keys():
        LEDGER.labels(*labels).set(0)
    for labels, count in current.items():
        LEDGER.labels(*labels).set(count)
    seen.update(current)


async def run_ledger_metrics(pool: asyncpg.Pool, interval: float) -> None:
    """Refresh the orders gauge every `interval` seconds until cancelled."""
    seen: set[tuple[str, str]] = set()
    await run_every(
        interval,
        lambda: refresh_ledger(pool, seen),
        what="count the orders",
        failures=LEDGER_REFRESH_FAILURES,
    )

"""Prometheus metrics of payments: the ledger by state, refreshed from Postgres in the background.

The ledger is the truth about payments, and every replica sees the same rows, so the gauge is a
count read from the table (dashboards take max() across replicas) rather than a per-process
counter that would reset with each pod.
"""

from __future__ import annotations

import asyncpg
from prometheus_client import Counter, Gauge

from chatpop_common.periodic import run_every

LEDGER = Gauge(
    "chatpop_payments",
    "Payments in the ledger by what is bought (kind) and state.",
    ["kind", "state"],
)
LEDGER_REFRESH_FAILURES = Counter(
    "chatpop_payments_metrics_refresh_failures", "Ledger counts that could not be read from Postgres."
)


async def refresh_ledger(pool: asyncpg.Pool, seen: set[tuple[str, str]]) -> None:
    """Set the gauge from the table; combinations that disappeared drop to zero."""
    rows = await pool.fetch("SELECT kind, state, count(*) AS n FROM payments GROUP BY kind, state")
    current = {(str(row["kind"]), str(row["state"])): int(row["n"]) for row in rows}
    for labels in seen - current.keys():
        LEDGER.labels(*labels).set(0)
    for labels, count in current.items():
        LEDGER.labels(*labels).set(count)
    seen.update(current)


async def run_ledger_metrics(pool: asyncpg.Pool, interval: float) -> None:
    """Refresh the ledger gauge every `interval` seconds until cancelled."""
    seen: set[tuple[str, str]] = set()
    await run_every(
        interval,
        lambda: refresh_ledger(pool, seen),
        what="count the payments ledger",
        failures=LEDGER_REFRESH_FAILURES,
    )

"""The ledger: what money moved for each order, appended in the transaction that moves the order.

Amounts are positive; the kind says which way money went:
- `charge`: the buyer paid the order's amount (destination charge: Stripe sends the host's share on);
- `fee`: the platform's application fee out of it;
- `refund`: the whole amount went back to the buyer;
- `fee_refund`: the platform gave its fee back (refund_application_fee);
- `transfer_reversal`: the host's share was taken back from their account (reverse_transfer);
- `dispute`: the buyer's bank disputed the charge (the amount in dispute).
Rows are written only when the order's state moves (paid, refunded) or a dispute is first seen, and
are unique per order, kind and Stripe object, so a repeated event can never count twice. The table
refuses updates and deletes.
"""

from __future__ import annotations

import asyncpg

from chatpop_payments.orders import Order


async def add(conn: asyncpg.Connection, order: Order, kind: str, amount_cents: int, source: str) -> bool:
    if amount_cents <= 0:
        return False
    status = await conn.execute(
        "INSERT INTO ledger_entries (order_id, kind, amount_cents, currency, source)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id, kind, source) DO NOTHING",
        order.id,
        kind,
        amount_cents,
        order.currency,
        source,
    )
    return bool(status == "INSERT 0 1")


async def record_charge(conn: asyncpg.Connection, order: Order, source: str) -> None:
    await add(conn, order, "charge", order.amount_cents, source)
    await add(conn, order, "fee", order.fee_cents, source)


async def record_refund(conn: asyncpg.Connection, order: Order, source: str) -> None:
    await add(conn, order, "refund", order.amount_cents, source)
    await add(conn, order, "fee_refund", order.fee_cents, source)
    await add(conn, order, "transfer_reversal", order.amount_cents - order.fee_cents, source)


async def record_dispute(conn: asyncpg.Connection, order: Order, amount_cents: int, source: str) -> bool:
    return await add(conn, order, "dispute", amount_cents, source)

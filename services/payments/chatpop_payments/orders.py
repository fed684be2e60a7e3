"""Orders: the rows, their queries and their protobuf form.

Every state change goes through `move()`, which names the states it may come from
(chatpop_payments.states) and changes nothing when the order is elsewhere; the database's
`orders_forward_only` trigger refuses any other move regardless.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from chatpop.payments.v1 import payments_pb2
from chatpop_common.errors import InvalidArgument
from chatpop_payments.states import KIND_TO_PROTO, STATE_TO_PROTO, Kind, State, sources

COLUMNS = """id, kind, state, room_id, buyer_participant_id, buyer_identity_id, host_identity_id,
    idempotency_key, amount_cents, fee_cents, currency, target_seq, pin_id, note, test_mode,
    destination_account, stripe_payment_intent_id, payment_error, refund_reason, refund_message,
    stripe_refund_id, fulfilled_seq, created_at, updated_at, paid_at, fulfilled_at, refunded_at"""

REFUND_MESSAGES = {
    "outbid": "Someone else outbid this pin first, so it was not pinned. You have been refunded in full.",
    "not_top_pin": "This pin was no longer the top one, so it could not be extended. You have been "
    "refunded in full.",
    "message_gone": "The message was deleted or hidden before it could be pinned. You have been refunded "
    "in full.",
    "banned": "You were banned from the room, so this could not go through. You have been refunded in full.",
    "admin": "ChatPop refunded this payment in full.",
    "room_closed": "The room closed before this could go through. You have been refunded in full.",
    "seats_full": "The last seat in the Back Room was taken before your payment arrived. You have been "
    "refunded in full.",
    "already_seated": "You already hold a seat in this Back Room, so this one was not needed. You have been "
    "refunded in full.",
    "seat_removed": "The host removed you from the Back Room and refunded your seat in full.",
}
# The same reasons told of a Back Room seat, where the general sentence would not fit.
SEAT_REFUND_MESSAGES = {
    "banned": "You were banned from the room, so no Back Room seat could be granted. You have been refunded "
    "in full.",
    "room_closed": "The Back Room closed before your seat could be granted. You have been refunded in full.",
}


def refund_sentence(kind: Kind, reason: str) -> str:
    """Why an order of this kind was refunded, for its buyer."""
    if kind == Kind.SEAT and reason in SEAT_REFUND_MESSAGES:
        return SEAT_REFUND_MESSAGES[reason]
    return REFUND_MESSAGES[reason]


@dataclass(frozen=True, slots=True)
class Order:
    id: uuid.UUID
    kind: Kind
    state: State
    room_id: uuid.UUID
    buyer_participant_id: uuid.UUID
    buyer_identity_id: uuid.UUID
    host_identity_id: uuid.UUID
    idempotency_key: str
    amount_cents: int
    fee_cents: int
    currency: str
    target_seq: int | None
    pin_id: uuid.UUID | None
    note: str
    test_mode: bool
    destination_account: str
    stripe_payment_intent_id: str | None
    payment_error: str
    refund_reason: str
    refund_message: str
    stripe_refund_id: str | None
    fulfilled_seq: int | None
    created_at: datetime
    updated_at: datetime
    paid_at: datetime | None
    fulfilled_at: datetime | None
    refunded_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Order:
        values: dict[str, Any] = dict(row)
        values["kind"] = Kind(values["kind"])
        values["state"] = State(values["state"])
        return cls(**values)

    def to_proto(self) -> payments_pb2.Order:
        return payments_pb2.Order(
            id=str(self.id),
            kind=KIND_TO_PROTO[self.kind],
            state=STATE_TO_PROTO[self.state],
            room_id=str(self.room_id),
            buyer_participant_id=str(self.buyer_participant_id),
            buyer_identity_id=str(self.buyer_identity_id),
            host_identity_id=str(self.host_identity_id),
            amount_cents=self.amount_cents,
            fee_cents=self.fee_cents,
            currency=self.currency,
            target_seq=self.target_seq or 0,
            pin_id=str(self.pin_id) if self.pin_id else "",
            note=self.note,
            payment_error=self.payment_error,
            refund_reason=self.refund_reason,
            refund_message=self.refund_message,
            stripe_payment_intent_id=self.stripe_payment_intent_id or "",
            test_mode=self.test_mode,
            created_at=_timestamp(self.created_at),
            updated_at=_timestamp(self.updated_at),
            fulfilled_seq=self.fulfilled_seq or 0,
        )


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def parse_id(value: str, what: str = "order_id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{what} is missing or malformed.", code=f"invalid_{what}") from None


@dataclass(frozen=True, slots=True)
class NewOrder:
    id: uuid.UUID
    kind: Kind
    room_id: uuid.UUID
    buyer_participant_id: uuid.UUID
    buyer_identity_id: uuid.UUID
    host_identity_id: uuid.UUID
    idempotency_key: str
    amount_cents: int
    fee_cents: int
    currency: str
    target_seq: int | None
    pin_id: uuid.UUID | None
    note: str
    test_mode: bool
    destination_account: str


_INSERT = f"""
INSERT INTO orders (id, kind, state, room_id, buyer_participant_id, buyer_identity_id, host_identity_id,
    idempotency_key, amount_cents, fee_cents, currency, target_seq, pin_id, note, test_mode,
    destination_account)
VALUES ($1, $2, 'created', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (buyer_identity_id, idempotency_key) DO NOTHING
RETURNING {COLUMNS}
"""  # noqa: S608 - fixed columns
_BY_KEY = f"SELECT {COLUMNS} FROM orders WHERE buyer_identity_id = $1 AND idempotency_key = $2"  # noqa: S608
_GET = f"SELECT {COLUMNS} FROM orders WHERE id = $1"  # noqa: S608 - fixed columns
_LOCK = f"SELECT {COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"  # noqa: S608 - fixed columns
_LOCK_BY_INTENT = f"SELECT {COLUMNS} FROM orders WHERE stripe_payment_intent_id = $1 FOR UPDATE"  # noqa: S608
_PAYMENT_ERROR = f"""
UPDATE orders SET payment_error = $2 WHERE id = $1 AND state IN ('created', 'awaiting_payment')
RETURNING {COLUMNS}
"""  # noqa: S608 - fixed columns
_NEWEST = f"""
SELECT {COLUMNS} FROM orders WHERE buyer_identity_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2
"""  # noqa: S608 - fixed columns
_OLDER = f"""
SELECT {COLUMNS} FROM orders
WHERE buyer_identity_id = $1
  AND (created_at, id) < (SELECT created_at, id FROM orders WHERE id = $2 AND buyer_identity_id = $1)
ORDER BY created_at DESC, id DESC LIMIT $3
"""  # noqa: S608 - fixed columns
# What a move may change besides the state.
_MOVABLE = frozenset(
    {
        "stripe_payment_intent_id",
        "payment_error",
        "refund_reason",
        "refund_message",
        "stripe_refund_id",
        "fulfilled_seq",
        "paid_at",
        "fulfilled_at",
        "refunded_at",
    }
)


async def insert(pool: asyncpg.Pool, order: NewOrder) -> tuple[Order, bool]:
    """Store a new order in state `created`, or find the one the buyer's key already made
    (created False)."""
    row = await pool.fetchrow(
        _INSERT,
        order.id,
        order.kind.value,
        order.room_id,
        order.buyer_participant_id,
        order.buyer_identity_id,
        order.host_identity_id,
        order.idempotency_key,
        order.amount_cents,
        order.fee_cents,
        order.currency,
        order.target_seq,
        order.pin_id,
        order.note,
        order.test_mode,
        order.destination_account,
    )
    if row is not None:
        return Order.from_row(row), True
    existing = await by_key(pool, order.buyer_identity_id, order.idempotency_key)
    assert existing is not None, "an order that conflicted on its key exists"
    return existing, False


async def by_key(pool: asyncpg.Pool, buyer: uuid.UUID, key: str) -> Order | None:
    row = await pool.fetchrow(_BY_KEY, buyer, key)
    return Order.from_row(row) if row else None


async def get(db: asyncpg.Pool | asyncpg.Connection, order_id: uuid.UUID) -> Order | None:
    row = await db.fetchrow(_GET, order_id)
    return Order.from_row(row) if row else None


async def lock(conn: asyncpg.Connection, order_id: uuid.UUID) -> Order | None:
    """The order, locked until the caller's transaction ends."""
    row = await conn.fetchrow(_LOCK, order_id)
    return Order.from_row(row) if row else None


async def lock_by_payment_intent(conn: asyncpg.Connection, intent_id: str) -> Order | None:
    row = await conn.fetchrow(_LOCK_BY_INTENT, intent_id)
    return Order.from_row(row) if row else None


async def move(
    db: asyncpg.Pool | asyncpg.Connection, order_id: uuid.UUID, target: State, **changes: Any
) -> Order | None:
    """Move the order to `target` (with `changes` to other columns) if it stands where that move may
    start; None when it does not (nothing changed)."""
    assignments = ["state = $2"]
    values: list[Any] = [order_id, target.value, sources(target)]
    for column, value in changes.items():
        if column not in _MOVABLE:
            raise ValueError(f"a move does not change {column}")
        values.append(value)
        assignments.append(f"{column} = ${len(values)}")
    query = f"UPDATE orders SET {', '.join(assignments)} WHERE id = $1 AND state = ANY($3::text[])"  # noqa: S608
    row = await db.fetchrow(f"{query} RETURNING {COLUMNS}", *values)
    return Order.from_row(row) if row else None


async def record_payment_error(conn: asyncpg.Connection, order_id: uuid.UUID, error: str) -> Order | None:
    """A declined attempt: the order stays awaiting payment, with the error for the buyer."""
    row = await conn.fetchrow(_PAYMENT_ERROR, order_id, error[:500])
    return Order.from_row(row) if row else None


async def set_refund_id(conn: asyncpg.Pool | asyncpg.Connection, order_id: uuid.UUID, refund_id: str) -> None:
    await conn.execute(
        "UPDATE orders SET stripe_refund_id = $2 WHERE id = $1 AND stripe_refund_id IS DISTINCT FROM $2",
        order_id,
        refund_id,
    )


async def list_for_buyer(
    pool: asyncpg.Pool, buyer: uuid.UUID, before: uuid.UUID | None, limit: int
) -> tuple[list[Order], bool]:
    """The buyer's orders, newest first, after the order `before` (keyset), and whether more follow."""
    if before is None:
        rows = await pool.fetch(_NEWEST, buyer, limit + 1)
    else:
        rows = await pool.fetch(_OLDER, buyer, before, limit + 1)
    orders = [Order.from_row(row) for row in rows[:limit]]
    return orders, len(rows) > limit

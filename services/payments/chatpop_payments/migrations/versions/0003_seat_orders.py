"""Orders for Back Room seats.

- `orders.kind` may be `seat`: a seat in the room's Back Room, priced from the room's seat price at
  order time; a seat order names no message, pin or note.
- `orders.refund_reason` may be `seats_full`, `already_seated` (refused by rooms when the payment
  landed) or `seat_removed` (the host removed the seat with a refund).
- `orders_room_kind_idx`: a room's orders of one kind (a host's seat refunds, earnings per room).

Revision ID: 0003_seat_orders
Revises: 0002_orders_and_events
Create Date: 2027-02-09
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003_seat_orders"
down_revision: str | None = "0002_orders_and_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here: a migration's meaning never follows later code.
_KINDS = ("pin", "pin_extension", "tip", "seat")
_OLD_KINDS = ("pin", "pin_extension", "tip")
_REFUND_REASONS = (
    "",
    "outbid",
    "not_top_pin",
    "message_gone",
    "banned",
    "admin",
    "room_closed",
    "seats_full",
    "already_seated",
    "seat_removed",
)
_OLD_REFUND_REASONS = ("", "outbid", "not_top_pin", "message_gone", "banned", "admin", "room_closed")
_ITEM = (
    "(kind = 'pin' AND target_seq >= 1 AND pin_id IS NULL)"
    " OR (kind = 'pin_extension' AND pin_id IS NOT NULL AND target_seq IS NULL)"
    " OR (kind = 'tip' AND target_seq IS NULL AND pin_id IS NULL)"
)
_SEAT_ITEM = " OR (kind = 'seat' AND target_seq IS NULL AND pin_id IS NULL)"


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def _replace(name: str, condition: str) -> None:
    op.drop_constraint(name, "orders", type_="check")
    op.create_check_constraint(name, "orders", condition)


def upgrade() -> None:
    _replace("orders_kind_known", _in("kind", _KINDS))
    _replace("orders_refund_reason_known", _in("refund_reason", _REFUND_REASONS))
    _replace("orders_item_matches_kind", _ITEM + _SEAT_ITEM)
    op.create_index("orders_room_kind_idx", "orders", ["room_id", "kind"])


def downgrade() -> None:
    # Seat orders are kept (orders are never deleted): going back is refused while any exists.
    op.execute(
        """
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM orders WHERE kind = 'seat') THEN
                RAISE EXCEPTION 'seat orders exist; they cannot be described without 0003';
            END IF;
        END
        $$
        """
    )
    op.drop_index("orders_room_kind_idx", table_name="orders")
    _replace("orders_item_matches_kind", _ITEM)
    _replace("orders_refund_reason_known", _in("refund_reason", _OLD_REFUND_REASONS))
    _replace("orders_kind_known", _in("kind", _OLD_KINDS))

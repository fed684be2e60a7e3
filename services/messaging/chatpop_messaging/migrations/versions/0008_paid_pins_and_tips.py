"""Paid pins and tips.

`paid_pins` holds every paid pin of a room: its id is the id of the order that bought it, `amount_cents`
all that was paid for it (extensions included), `expires_at` when it drops off by itself, and
`removed_at`/`removed_reason` when it was taken down before that (`host`, `banned`, `message_deleted`).
`paid_orders` records how each paid order sent to messaging came out (a pin, an extension or a tip), so
that asking again answers the first outcome. `room_boards.paid_pins_state_seq` is the seq of the last
PAID_PIN or PAID_PIN_REMOVED entry. PAID_PIN, PAID_PIN_REMOVED and TIP entries keep what they carry
(the pin, the live pins after it, the tip) in `messages.payload`: an encoded Message holding only those
fields.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("payload", sa.LargeBinary(), nullable=True))
    op.add_column(
        "room_boards",
        sa.Column("paid_pins_state_seq", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "paid_pins",
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("target_seq", sa.BigInteger(), nullable=False),
        sa.Column("participant_id", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        # Seq of the entry that granted it: entries from there on may carry a copy of its message.
        sa.Column("granted_seq", sa.BigInteger(), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("amount_cents > 0", name="paid_pins_amount_check"),
        sa.CheckConstraint(
            "removed_reason IS NULL OR removed_reason IN ('host', 'banned', 'message_deleted')",
            name="paid_pins_removed_reason_check",
        ),
        sa.PrimaryKeyConstraint("room_id", "id", name="paid_pins_pkey"),
    )
    op.create_index(
        "paid_pins_standing_idx",
        "paid_pins",
        ["room_id", "expires_at"],
        postgresql_where=sa.text("removed_at IS NULL"),
    )
    op.create_index("paid_pins_target_idx", "paid_pins", ["room_id", "target_seq"])
    op.create_index("paid_pins_buyer_idx", "paid_pins", ["room_id", "participant_id"])
    op.create_table(
        "paid_orders",
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        # 1 pin, 2 pin extension, 3 tip.
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        # A pin's or extension's PaidPinOutcome; 1 for a tip.
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column("participant_id", sa.Text(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        # The entry appended for it (none when it was refused), and the pin it made or extended.
        sa.Column("entry_seq", sa.BigInteger(), nullable=True),
        sa.Column("pin_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN (1, 2, 3)", name="paid_orders_kind_check"),
        sa.PrimaryKeyConstraint("room_id", "order_id", name="paid_orders_pkey"),
    )


def downgrade() -> None:
    op.drop_table("paid_orders")
    op.drop_index("paid_pins_buyer_idx", "paid_pins")
    op.drop_index("paid_pins_target_idx", "paid_pins")
    op.drop_index("paid_pins_standing_idx", "paid_pins")
    op.drop_table("paid_pins")
    op.drop_column("room_boards", "paid_pins_state_seq")
    op.drop_column("messages", "payload")

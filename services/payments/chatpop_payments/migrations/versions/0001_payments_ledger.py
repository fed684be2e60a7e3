"""The payments ledger: one row per payment, moved forward by Stripe events.

Revision ID: 0001_payments_ledger
Revises:
Create Date: 2025-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_payments_ledger"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        # What is bought (back room seat, pin, tip); the paid features name their kinds.
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        # Empty in test mode, where no Stripe PaymentIntent exists.
        sa.Column("stripe_payment_intent_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind <> ''", name="payments_kind_not_empty"),
        sa.CheckConstraint("state <> ''", name="payments_state_not_empty"),
        sa.CheckConstraint("amount_cents > 0", name="payments_amount_positive"),
        sa.CheckConstraint("currency ~ '^[a-z]{3}$'", name="payments_currency_iso"),
        sa.UniqueConstraint("stripe_payment_intent_id", name="payments_stripe_payment_intent_id_key"),
    )
    op.create_index("payments_state_updated_at_idx", "payments", ["state", "updated_at"])


def downgrade() -> None:
    op.drop_index("payments_state_updated_at_idx", table_name="payments")
    op.drop_table("payments")

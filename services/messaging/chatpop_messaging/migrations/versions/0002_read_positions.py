"""Read positions: how far each participant has read each room, for unread counts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "read_positions",
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("participant_id", sa.Text(), nullable=False),
        sa.Column("read_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("room_id", "participant_id", name="read_positions_pkey"),
        sa.CheckConstraint("read_seq >= 0", name="read_positions_read_seq_check"),
    )


def downgrade() -> None:
    op.drop_table("read_positions")

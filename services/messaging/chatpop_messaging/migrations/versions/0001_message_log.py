"""Message log: per-room seq counters and messages.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "room_counters",
        sa.Column("room_id", sa.Text(), primary_key=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("last_seq >= 0", name="room_counters_last_seq_check"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("sender_participant_id", sa.Text(), nullable=False),
        sa.Column("sender_username", sa.Text(), nullable=False),
        sa.Column("sender_is_host", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("sender_verified", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("client_msg_id", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reply_to_seq", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("seq > 0", name="messages_seq_check"),
        sa.UniqueConstraint("room_id", "seq", name="messages_room_seq_key"),
        sa.UniqueConstraint(
            "room_id", "sender_participant_id", "client_msg_id", name="messages_room_sender_client_msg_key"
        ),
    )


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_table("room_counters")

"""Personal mutes: a participant hides another participant's messages from their own history.

`mutes` holds one row per muter and muted participant of a room (room id first, like every key of the
schema). It is private to the muter and never part of the room's log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mutes",
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("muter_participant_id", sa.Text(), nullable=False),
        sa.Column("muted_participant_id", sa.Text(), nullable=False),
        sa.Column("muted_username", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("room_id", "muter_participant_id", "muted_participant_id", name="mutes_pkey"),
    )


def downgrade() -> None:
    op.drop_table("mutes")

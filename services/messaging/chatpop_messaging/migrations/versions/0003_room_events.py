"""Room events: changes to what a room shows are entries of its log; reactions; deletion tombstones.

Every entry of `messages` has the room's next seq. `kind` says what it is (1 message, 2 reaction,
3 deletion); a change names its `target_seq`. A message keeps its current state beside it
(`deleted_at`, `deleted_by_host`, `state_seq`: the last entry that changed it); reactions are rows of
their own, one per participant, message and emoji.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("kind", sa.SmallInteger(), nullable=False, server_default="1"))
    op.add_column("messages", sa.Column("target_seq", sa.BigInteger(), nullable=True))
    op.add_column("messages", sa.Column("emoji", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("added", sa.Boolean(), nullable=True))
    # For a reaction entry: the target's counts right after it, replayed as they were on resume.
    op.add_column("messages", sa.Column("reaction_counts", postgresql.JSONB(), nullable=True))
    op.add_column("messages", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "messages", sa.Column("deleted_by_host", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("messages", sa.Column("state_seq", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_check_constraint("messages_kind_check", "messages", "kind IN (1, 2, 3)")
    op.create_check_constraint(
        "messages_change_target_check", "messages", "(kind = 1) = (target_seq IS NULL)"
    )
    op.create_table(
        "reactions",
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("message_seq", sa.BigInteger(), nullable=False),
        sa.Column("participant_id", sa.Text(), nullable=False),
        sa.Column("emoji", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("room_id", "message_seq", "participant_id", "emoji", name="reactions_pkey"),
    )


def downgrade() -> None:
    op.drop_table("reactions")
    op.drop_constraint("messages_change_target_check", "messages")
    op.drop_constraint("messages_kind_check", "messages")
    for column in (
        "state_seq",
        "deleted_by_host",
        "deleted_at",
        "reaction_counts",
        "added",
        "emoji",
        "target_seq",
        "kind",
    ):
        op.drop_column("messages", column)

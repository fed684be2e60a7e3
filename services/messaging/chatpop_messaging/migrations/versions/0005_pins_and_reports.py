"""Host pins, the sticky message, reports and hidden messages.

`pins` holds the messages pinned now (a `source`: 1 host, 2 paid later); `room_boards` the room-level
state beside the log (the sticky text, and the seqs of the last entries that changed pins and the
sticky text). A PIN or UNPIN entry carries the pinned seqs after it (`pinned_seqs`), a PIN entry the
message as it stood (`pinned_message`, encoded), a STICKY entry its text in `text`. `reports` holds one
report per reporter and message; a message hidden pending review has `hidden_at`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("hidden_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("messages", sa.Column("pinned_seqs", postgresql.ARRAY(sa.BigInteger()), nullable=True))
    op.add_column("messages", sa.Column("pinned_message", sa.LargeBinary(), nullable=True))
    op.create_table(
        "pins",
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("source", sa.SmallInteger(), nullable=False),
        sa.Column("message_seq", sa.BigInteger(), nullable=False),
        sa.Column("pinned_seq", sa.BigInteger(), nullable=False),
        sa.Column("pinned_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("room_id", "source", "message_seq", name="pins_pkey"),
    )
    op.create_table(
        "room_boards",
        sa.Column("room_id", sa.Text(), primary_key=True),
        sa.Column("sticky_text", sa.Text(), nullable=False, server_default=""),
        sa.Column("sticky_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("pins_state_seq", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "reports",
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("message_seq", sa.BigInteger(), nullable=False),
        sa.Column("reporter_participant_id", sa.Text(), nullable=False),
        sa.Column("reporter_username", sa.Text(), nullable=False),
        sa.Column("reason", sa.SmallInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        # NULL while open; set when the host resolved the message's reports.
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("room_id", "message_seq", "reporter_participant_id", name="reports_pkey"),
    )
    op.create_index(
        "reports_open_idx",
        "reports",
        ["room_id", "message_seq"],
        postgresql_where=sa.text("closed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("reports_open_idx", "reports")
    op.drop_table("reports")
    op.drop_table("room_boards")
    op.drop_table("pins")
    for column in ("pinned_message", "pinned_seqs", "hidden_at"):
        op.drop_column("messages", column)

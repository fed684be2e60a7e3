"""Room events: the log takes every kind of change the protos define (pins, sticky, hide, ban, …).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("messages_kind_check", "messages")
    # New kinds come with the protos (EntryKind); the database only insists on a known range.
    op.create_check_constraint("messages_kind_check", "messages", "kind BETWEEN 1 AND 63")


def downgrade() -> None:
    op.drop_constraint("messages_kind_check", "messages")
    op.create_check_constraint("messages_kind_check", "messages", "kind IN (1, 2, 3)")

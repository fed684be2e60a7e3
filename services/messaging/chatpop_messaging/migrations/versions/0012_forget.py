"""Forgetting a deleted account's participants: their messages found by sender.

ForgetParticipants renames (or erases) every message a participant sent in a room; the index
finds them without scanning the room's log.

Revision ID: 0012
Revises: 0011
Create Date: 2027-02-15
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX messages_sender_idx ON messages (room_id, sender_participant_id, seq)")


def downgrade() -> None:
    op.execute("DROP INDEX messages_sender_idx")

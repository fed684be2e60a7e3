"""Room takedowns: an admin closes a room for good and hides its content, with a reason on record.

`taken_down_closed` remembers whether the takedown itself closed the room, so lifting the takedown
reopens only a room its host had not closed.

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-10
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE rooms
            ADD COLUMN taken_down_at timestamptz,
            ADD COLUMN taken_down_reason text NOT NULL DEFAULT ''
                CONSTRAINT rooms_taken_down_reason_length CHECK (char_length(taken_down_reason) <= 500),
            ADD COLUMN taken_down_by text,
            ADD COLUMN taken_down_closed boolean NOT NULL DEFAULT false
        """
    )
    op.execute(
        "CREATE INDEX rooms_taken_down_idx ON rooms (taken_down_at DESC, id) WHERE taken_down_at IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX rooms_taken_down_idx")
    op.execute(
        "ALTER TABLE rooms DROP COLUMN taken_down_at, DROP COLUMN taken_down_reason,"
        " DROP COLUMN taken_down_by, DROP COLUMN taken_down_closed"
    )

"""Erasing a closed room, and forgetting a deleted account.

`rooms.erased_at` records that the host closed the room with "delete everything": its history is
erased at messaging through the `room.erase` outbox topic (chatpop_rooms.erasure).
`forgotten_subjects` remembers the identities whose accounts were deleted (chatpop_rooms.forgetting):
an access token such an account still holds cannot create or join a room.

Revision ID: 0009
Revises: 0008
Create Date: 2027-02-15
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE rooms ADD COLUMN erased_at timestamptz,"
        " ADD CONSTRAINT rooms_erased_is_closed CHECK (erased_at IS NULL OR closed_at IS NOT NULL)"
    )
    op.execute(
        """
        CREATE TABLE forgotten_subjects (
            subject text PRIMARY KEY,
            forgotten_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE forgotten_subjects")
    op.execute("ALTER TABLE rooms DROP CONSTRAINT rooms_erased_is_closed, DROP COLUMN erased_at")

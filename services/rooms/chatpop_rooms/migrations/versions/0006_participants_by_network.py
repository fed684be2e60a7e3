"""Participants found by the network they joined from, across rooms: a site-wide network ban revokes
the room tokens of everyone who joined from that network, in every room, in one statement.

(Participants of one identity across rooms are found by `participants_subject_idx` already.)

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-20
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX participants_client_ip_joined_idx ON participants (client_ip_hash, joined_at DESC)"
        " WHERE client_ip_hash IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX participants_client_ip_joined_idx")

"""Participants remember what kind of identity joined and from which (hashed) address; a verified
name may sit beside an earlier unverified holder of the same name.

An account owns its reserved username everywhere, so its owner may join under it in a room where
someone took that name before it was reserved; the verified badge tells the two apart. Otherwise
names stay unique per room ignoring case: one unverified and one verified holder at most.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL for participants who joined before this revision: their kind and address were not kept.
    op.execute(
        "ALTER TABLE participants ADD COLUMN identity_kind text"
        " CONSTRAINT participants_identity_kind CHECK (identity_kind IN ('anonymous', 'user'))"
    )
    # HMAC of the client IP made by the edge; never the raw address.
    op.execute(
        "ALTER TABLE participants ADD COLUMN client_ip_hash text"
        " CONSTRAINT participants_client_ip_hash_length CHECK (char_length(client_ip_hash) <= 128)"
    )
    op.execute("ALTER TABLE participants DROP CONSTRAINT participants_room_username_key")
    op.execute(
        "CREATE UNIQUE INDEX participants_room_username_key"
        " ON participants (room_id, username_lower) WHERE NOT verified"
    )
    op.execute(
        "CREATE UNIQUE INDEX participants_room_verified_username_key"
        " ON participants (room_id, username_lower) WHERE verified"
    )
    op.execute("CREATE INDEX participants_room_username_idx ON participants (room_id, username_lower)")
    op.execute(
        "CREATE INDEX participants_room_client_ip_idx ON participants (room_id, client_ip_hash)"
        " WHERE client_ip_hash IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX participants_room_client_ip_idx")
    op.execute("DROP INDEX participants_room_username_idx")
    op.execute("DROP INDEX participants_room_verified_username_key")
    op.execute("DROP INDEX participants_room_username_key")
    op.execute(
        "ALTER TABLE participants ADD CONSTRAINT participants_room_username_key UNIQUE (room_id, username_lower)"
    )
    op.execute("ALTER TABLE participants DROP COLUMN client_ip_hash")
    op.execute("ALTER TABLE participants DROP COLUMN identity_kind")

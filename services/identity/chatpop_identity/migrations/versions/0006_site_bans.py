"""Site-wide bans: an admin keeps an identity or a network (keyed hash of a client IP) off the site.

Lifting a ban keeps its row (lifted_at) for the record; one ban in force per identity and per network.

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-10
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
        """
        CREATE TABLE site_bans (
            id uuid PRIMARY KEY,
            identity_id uuid,
            client_ip_hash text CONSTRAINT site_bans_ip_hash_length CHECK (char_length(client_ip_hash) <= 128),
            reason text NOT NULL CONSTRAINT site_bans_reason_length CHECK (char_length(reason) <= 500),
            banned_by text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            lifted_at timestamptz,
            lifted_by text,
            CONSTRAINT site_bans_one_target CHECK ((identity_id IS NULL) <> (client_ip_hash IS NULL))
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX site_bans_identity_active_key ON site_bans (identity_id)"
        " WHERE lifted_at IS NULL AND identity_id IS NOT NULL"
    )
    op.execute(
        "CREATE UNIQUE INDEX site_bans_ip_active_key ON site_bans (client_ip_hash)"
        " WHERE lifted_at IS NULL AND client_ip_hash IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX site_bans_active_created_idx ON site_bans (created_at DESC) WHERE lifted_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE site_bans")

"""Password reset tokens: single-use, short-lived, stored only as a hash.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The SHA-256 of the token is the key: the token itself, which is all a reset needs, is only
    # ever in the mail. A used or expired row stays a while, so a second click on the link can be
    # told "already used" or "expired" rather than "unknown"; the purge deletes it later.
    op.execute(
        """
        CREATE TABLE password_resets (
            token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
            identity_id uuid NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            used_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX password_resets_identity_id_idx ON password_resets (identity_id)")
    op.execute("CREATE INDEX password_resets_expires_at_idx ON password_resets (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE password_resets")

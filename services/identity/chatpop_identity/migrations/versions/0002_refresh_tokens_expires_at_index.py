"""An index on refresh token expiry, for the purge of expired families.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at)")


def downgrade() -> None:
    op.execute("DROP INDEX refresh_tokens_expires_at_idx")

"""Changing a reserved username: when an account last changed it, and names given up recently.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL until the account first replaces its name (a first reservation is not a change).
    op.execute("ALTER TABLE identities ADD COLUMN reserved_username_changed_at timestamptz")
    # A name an account gave up is held back from every other account until held_until, so nobody
    # can pose as its previous owner straight away; the previous owner may take it back.
    op.execute(
        """
        CREATE TABLE released_usernames (
            username_lower text PRIMARY KEY CHECK (username_lower = lower(username_lower)),
            previous_owner uuid NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
            released_at timestamptz NOT NULL,
            held_until timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX released_usernames_held_until_idx ON released_usernames (held_until)")
    op.execute("CREATE INDEX released_usernames_previous_owner_idx ON released_usernames (previous_owner)")


def downgrade() -> None:
    op.execute("DROP TABLE released_usernames")
    op.execute("ALTER TABLE identities DROP COLUMN reserved_username_changed_at")

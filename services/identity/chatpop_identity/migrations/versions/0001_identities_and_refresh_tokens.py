"""Identities (anonymous sessions and accounts) and refresh tokens.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Emails are stored lower-cased (the service normalises them), so a plain unique constraint
    # is case-insensitive in effect without needing the citext extension.
    op.execute(
        """
        CREATE TABLE identities (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            kind text NOT NULL CHECK (kind IN ('anonymous', 'user')),
            email text CONSTRAINT identities_email_key UNIQUE CHECK (email = lower(email)),
            password_hash text,
            reserved_username text,
            reserved_username_lower text CONSTRAINT identities_reserved_username_lower_key UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT identities_kind_fields CHECK (
                (kind = 'user' AND email IS NOT NULL AND password_hash IS NOT NULL)
                OR (kind = 'anonymous' AND email IS NULL AND password_hash IS NULL
                    AND reserved_username IS NULL)
            ),
            CONSTRAINT identities_reserved_username_pair CHECK (
                (reserved_username IS NULL AND reserved_username_lower IS NULL)
                OR reserved_username_lower = lower(reserved_username)
            )
        )
        """
    )
    op.execute(
        """
        CREATE TABLE refresh_tokens (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            family_id uuid NOT NULL,
            identity_id uuid NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
            token_hash bytea NOT NULL CONSTRAINT refresh_tokens_token_hash_key UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            used_at timestamptz,
            revoked_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX refresh_tokens_family_id_idx ON refresh_tokens (family_id)")
    op.execute("CREATE INDEX refresh_tokens_identity_id_idx ON refresh_tokens (identity_id)")


def downgrade() -> None:
    op.execute("DROP TABLE refresh_tokens")
    op.execute("DROP TABLE identities")

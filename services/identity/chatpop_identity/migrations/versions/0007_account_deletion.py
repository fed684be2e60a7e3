"""Account deletion: a deleted account keeps its id (audit events naming it stay meaningful) and
nothing else (chatpop_identity.account_deletion).

A deleted account is a row of kind `deleted` with no email, password hash, reserved username or
admin flag, and `deleted_at` set. identity gets the transactional outbox (chatpop_common.outbox),
which carries `account.deleted` to rooms after commit. The constraints are added NOT VALID and
validated separately, so the busy identities table is never locked for a full scan.

Revision ID: 0007
Revises: 0006
Create Date: 2027-02-15
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from chatpop_common import outbox

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE identities ADD COLUMN deleted_at timestamptz")
    op.execute("ALTER TABLE identities DROP CONSTRAINT identities_kind_check")
    op.execute("ALTER TABLE identities DROP CONSTRAINT identities_kind_fields")
    op.execute(
        """
        ALTER TABLE identities
            ADD CONSTRAINT identities_kind_check CHECK (kind IN ('anonymous', 'user', 'deleted')) NOT VALID,
            ADD CONSTRAINT identities_kind_fields CHECK (
                (kind = 'user' AND email IS NOT NULL AND password_hash IS NOT NULL)
                OR (kind = 'anonymous' AND email IS NULL AND password_hash IS NULL
                    AND reserved_username IS NULL)
                OR (kind = 'deleted' AND email IS NULL AND password_hash IS NULL
                    AND reserved_username IS NULL AND deleted_at IS NOT NULL)
            ) NOT VALID
        """
    )
    op.execute("ALTER TABLE identities VALIDATE CONSTRAINT identities_kind_check")
    op.execute("ALTER TABLE identities VALIDATE CONSTRAINT identities_kind_fields")
    for statement in outbox.create_statements():
        op.execute(statement)


def downgrade() -> None:
    for statement in outbox.drop_statements():
        op.execute(statement)
    op.execute("DELETE FROM identities WHERE kind = 'deleted'")
    op.execute("ALTER TABLE identities DROP CONSTRAINT identities_kind_fields")
    op.execute("ALTER TABLE identities DROP CONSTRAINT identities_kind_check")
    op.execute(
        """
        ALTER TABLE identities
            ADD CONSTRAINT identities_kind_check CHECK (kind IN ('anonymous', 'user')),
            ADD CONSTRAINT identities_kind_fields CHECK (
                (kind = 'user' AND email IS NOT NULL AND password_hash IS NOT NULL)
                OR (kind = 'anonymous' AND email IS NULL AND password_hash IS NULL
                    AND reserved_username IS NULL)
            )
        """
    )
    op.execute("ALTER TABLE identities DROP COLUMN deleted_at")

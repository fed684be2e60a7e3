"""The transactional outbox (chatpop_common.outbox): audit events for identity, written in the
transaction of the change they describe and delivered by the service's relay after commit.

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-20
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
    for statement in outbox.create_statements():
        op.execute(statement)


def downgrade() -> None:
    for statement in outbox.drop_statements():
        op.execute(statement)

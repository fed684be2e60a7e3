"""Retention: the floor of each room's log.

`room_counters.floor_seq` is the lowest seq retention may have kept: every entry of the room below it
was deleted by retention (0 while retention never deleted anything). It only grows.

Revision ID: 0011
Revises: 0010
Create Date: 2027-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "room_counters", sa.Column("floor_seq", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.create_check_constraint("room_counters_floor_seq_check", "room_counters", "floor_seq >= 0")


def downgrade() -> None:
    op.drop_constraint("room_counters_floor_seq_check", "room_counters")
    op.drop_column("room_counters", "floor_seq")

"""Media: the record of each photo, voice message or video the edge stored for a room.

`media` has one row per upload, keyed by room: `pending` while the edge stores its objects, `ready`
once they are stored (`variants`: name, content type, size, dimensions, object key of each), then
`deleting` from the moment a purge is decided (in the same transaction as its `media.purge` outbox
row) and `deleted` once every object under `media/{room_id}/{id}/` is gone. `message_seq` names the
one message that carries it; the message row names it back in `messages.media_id`, so reading a
page of messages finds its media by primary key. `delete_reason` says why it was purged.

Indexes serve the sweeper: pending or ready rows by age, ready rows no message ever carried, and
the rooms that still have live media. `media_id_idx` tells a message's reference to another room's
media from one to no media at all.

Revision ID: 0009
Revises: 0008
Create Date: 2027-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media",
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("uploader_participant_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False, server_default="pending"),
        # Of the `full` variant.
        sa.Column("content_type", sa.Text(), nullable=False, server_default=""),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("width", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("height", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("variants", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("message_seq", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delete_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('photo', 'voice', 'video')", name="media_kind_check"),
        sa.CheckConstraint("state IN ('pending', 'ready', 'deleting', 'deleted')", name="media_state_check"),
        sa.CheckConstraint(
            "delete_reason IS NULL OR delete_reason IN ('message_deleted', 'abandoned', 'pending_expired',"
            " 'unreferenced', 'room_closed', 'retention')",
            name="media_delete_reason_check",
        ),
        sa.CheckConstraint(
            "(state IN ('deleting', 'deleted')) = (delete_reason IS NOT NULL)", name="media_reason_check"
        ),
        sa.CheckConstraint(
            "size_bytes >= 0 AND width >= 0 AND height >= 0 AND duration_ms >= 0", name="media_sizes_check"
        ),
        sa.PrimaryKeyConstraint("room_id", "id", name="media_pkey"),
    )
    op.create_index(
        "media_message_idx",
        "media",
        ["room_id", "message_seq"],
        unique=True,
        postgresql_where=sa.text("message_seq IS NOT NULL"),
    )
    op.create_index("media_id_idx", "media", ["id"])
    op.create_index("media_sweep_idx", "media", ["state", "created_at"])
    op.create_index(
        "media_unreferenced_idx",
        "media",
        ["created_at"],
        postgresql_where=sa.text("state = 'ready' AND message_seq IS NULL"),
    )
    op.create_index(
        "media_live_room_idx",
        "media",
        ["room_id", "created_at"],
        postgresql_where=sa.text("state IN ('pending', 'ready')"),
    )
    op.add_column("messages", sa.Column("media_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        "messages_media_fkey", "messages", "media", ["room_id", "media_id"], ["room_id", "id"]
    )
    op.create_index(
        "messages_media_idx",
        "messages",
        ["room_id", "media_id"],
        unique=True,
        postgresql_where=sa.text("media_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("messages_media_idx", "messages")
    op.drop_constraint("messages_media_fkey", "messages", type_="foreignkey")
    op.drop_column("messages", "media_id")
    op.drop_index("media_live_room_idx", "media")
    op.drop_index("media_unreferenced_idx", "media")
    op.drop_index("media_sweep_idx", "media")
    op.drop_index("media_id_idx", "media")
    op.drop_index("media_message_idx", "media")
    op.drop_table("media")

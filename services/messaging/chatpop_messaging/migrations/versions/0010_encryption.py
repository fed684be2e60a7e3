"""Encryption at rest: data keys per room, sealed content columns, erased rooms, re-encryption work.

`room_keys` holds each room's data keys (32 random bytes each), wrapped with AES-256-GCM under a
master key version that lives in a secret (MASTER_KEYS), never in the database. New content is sealed
with the room's newest version. `erased_rooms` remembers rooms whose keys were destroyed: no key can be
created for them again. `reencrypt_rooms` lists the rooms whose stored content must be brought to their
newest data key version (the background re-encryption and ReencryptRooms work through it, a batch of
seqs at a time from `next_seq`).

The content columns become `bytea` in the format `chatpop_messaging.crypto` documents: empty = no
content, first byte 0x00 = plaintext stored before this revision (UTF-8 text, or an encoded Message),
0x01 = sealed. This revision cannot seal (it has no keys): it marks what exists as plaintext and queues
every room that has content, so messaging re-encrypts it in the background.

Revision ID: 0010
Revises: 0009
Create Date: 2027-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# (table, text column) pairs that were text and become bytea.
_TEXT_COLUMNS = (("messages", "text"), ("room_boards", "sticky_text"), ("reports", "text"))
# Columns that were bytea already (encoded Messages).
_BYTES_COLUMNS = (("messages", "payload"), ("messages", "pinned_message"))


def upgrade() -> None:
    op.create_table(
        "room_keys",
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("master_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("version > 0 AND master_version > 0", name="room_keys_versions_check"),
        sa.PrimaryKeyConstraint("room_id", "version", name="room_keys_pkey"),
    )
    # RotateMasterKey finds the keys still wrapped by an older master version.
    op.create_index("room_keys_master_idx", "room_keys", ["master_version"])
    op.create_table(
        "erased_rooms",
        sa.Column("room_id", sa.Text(), primary_key=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "reencrypt_rooms",
        sa.Column("room_id", sa.Text(), primary_key=True),
        # The scan's position: seqs below it were brought to the newest version.
        sa.Column("next_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        # When the current scan started (NULL until it does): older key versions are retired only
        # after a scan that started once every process stopped sealing with them.
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    )
    for table, column in _TEXT_COLUMNS:
        op.alter_column(table, column, server_default=None)
        op.execute(
            f"ALTER TABLE {table} ALTER COLUMN {column} TYPE bytea USING "
            f"CASE WHEN {column} = '' THEN ''::bytea ELSE '\\x00'::bytea || convert_to({column}, 'UTF8') END"
        )
    op.alter_column("room_boards", "sticky_text", server_default=sa.text("''::bytea"))
    op.alter_column("reports", "text", server_default=sa.text("''::bytea"))
    for table, column in _BYTES_COLUMNS:
        op.execute(
            f"UPDATE {table} SET {column} = '\\x00'::bytea || {column} "  # noqa: S608 - constant names
            f"WHERE {column} IS NOT NULL AND length({column}) > 0"
        )
    op.execute(
        "INSERT INTO reencrypt_rooms (room_id) "
        "SELECT room_id FROM room_counters UNION SELECT room_id FROM room_boards "
        "UNION SELECT room_id FROM reports ON CONFLICT DO NOTHING"
    )


def downgrade() -> None:
    # Sealed content cannot be turned back into text here (the keys live outside the database).
    def sealed_in(table: str, column: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM {table} WHERE length({column}) > 0 "  # noqa: S608 - constant names
            f"AND substring({column} from 1 for 1) <> '\\x00'::bytea)"
        )

    query = "SELECT " + " OR ".join(sealed_in(t, c) for t, c in (*_TEXT_COLUMNS, *_BYTES_COLUMNS))
    sealed = op.get_bind().execute(sa.text(query)).scalar()
    if sealed:
        raise RuntimeError("encrypted content exists: downgrading below 0010 would lose it")
    for table, column in _BYTES_COLUMNS:
        op.execute(
            f"UPDATE {table} SET {column} = substring({column} from 2) "  # noqa: S608 - constant names
            f"WHERE {column} IS NOT NULL AND length({column}) > 0"
        )
    for table, column in _TEXT_COLUMNS:
        op.alter_column(table, column, server_default=None)
        op.execute(
            f"ALTER TABLE {table} ALTER COLUMN {column} TYPE text USING "
            f"CASE WHEN length({column}) = 0 THEN '' ELSE convert_from(substring({column} from 2), 'UTF8') END"
        )
    op.alter_column("room_boards", "sticky_text", server_default="")
    op.alter_column("reports", "text", server_default="")
    op.drop_table("reencrypt_rooms")
    op.drop_table("erased_rooms")
    op.drop_index("room_keys_master_idx", "room_keys")
    op.drop_table("room_keys")

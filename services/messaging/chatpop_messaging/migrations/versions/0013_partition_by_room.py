"""Every per-room table HASH-partitioned by room id; the log keyed by (room_id, seq).

The log (`messages`) and every table that grows with a room's traffic or hangs off its log
(`room_counters`, `read_positions`, `reactions`, `pins`, `room_boards`, `reports`, `mutes`,
`paid_pins`, `paid_orders`, `media`, `room_keys`) become tables partitioned `BY HASH (room_id)`.
These are the rules that let the schema move to Citus later (every table distributed on room_id and
co-located with `messages`, see helm/README.md "Moving the message log to Citus") without a redesign:

- `messages` is keyed by (room_id, seq). `id` stays a column (the content's encryption binds to it and
  the API returns it), unique within its room (`messages_room_id_key`), no longer unique on its own.
- room_id leads every primary key, unique constraint, unique index and foreign key; a seq comes from
  the room's own counter row (`room_counters`), never from a sequence or an identity column.
- Every query of the hot path names one room, so it reads and writes one partition.

Left as they were: `erased_rooms` (a small set of erased room ids, looked up by id when a key would
be created: a reference table under Citus) and `reencrypt_rooms` (a work queue that the background
re-encryption claims across rooms, oldest first, with SKIP LOCKED; rows only while work is pending);
`outbox` has no room id (the audit relay reads it across rooms).

Modulus 16: each partition holds a sixteenth of the log, so its indexes, vacuums and any rewrite
stay a sixteenth of the size, while planning and pruning over 16 partitions costs next to nothing. A
power of two, because a hash partition can only be split into partitions whose modulus is a multiple
of it (16 → 32: detach one, attach two). Partitions are `<table>_p00` … `<table>_p15`.

Constraint names: Postgres reports a violation by the name of the partition's index, so every index
of a partition is renamed `<name of the partitioned index>_pNN`; `store.constraint_of` strips the
suffix, and code keeps comparing with the names declared here (`messages_room_sender_client_msg_key`,
`paid_orders_pkey`, …).

Moving the data: each table is created anew (same columns, defaults and checks), partitioned, filled
with `INSERT … SELECT`, and takes the old one's name; keys and indexes are then built on the filled
table, the foreign key `messages_media_fkey` last. It all runs in this revision's one transaction:
nothing is lost if it fails, but the tables are locked while it copies (plan a maintenance window for
a large log). The downgrade moves the data back into plain tables with the keys of 0012.

Revision ID: 0013
Revises: 0012
Create Date: 2027-03-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MODULUS = 16

# Tables partitioned by room id, in the order they are moved.
PARTITIONED = (
    "room_counters",
    "room_boards",
    "room_keys",
    "read_positions",
    "mutes",
    "media",
    "messages",
    "reactions",
    "pins",
    "reports",
    "paid_pins",
    "paid_orders",
)

# Keys and indexes every table gets back after the move, in both directions (only messages differs).
_KEYS: dict[str, tuple[str, ...]] = {
    "room_counters": ("ALTER TABLE room_counters ADD CONSTRAINT room_counters_pkey PRIMARY KEY (room_id)",),
    "room_boards": ("ALTER TABLE room_boards ADD CONSTRAINT room_boards_pkey PRIMARY KEY (room_id)",),
    "room_keys": (
        "ALTER TABLE room_keys ADD CONSTRAINT room_keys_pkey PRIMARY KEY (room_id, version)",
        "CREATE INDEX room_keys_master_idx ON room_keys (master_version)",
    ),
    "read_positions": (
        "ALTER TABLE read_positions ADD CONSTRAINT read_positions_pkey PRIMARY KEY (room_id, participant_id)",
    ),
    "mutes": (
        "ALTER TABLE mutes ADD CONSTRAINT mutes_pkey "
        "PRIMARY KEY (room_id, muter_participant_id, muted_participant_id)",
    ),
    "media": (
        "ALTER TABLE media ADD CONSTRAINT media_pkey PRIMARY KEY (room_id, id)",
        "CREATE UNIQUE INDEX media_message_idx ON media (room_id, message_seq) WHERE message_seq IS NOT NULL",
        "CREATE INDEX media_id_idx ON media (id)",
        "CREATE INDEX media_sweep_idx ON media (state, created_at)",
        "CREATE INDEX media_unreferenced_idx ON media (created_at)"
        " WHERE state = 'ready' AND message_seq IS NULL",
        "CREATE INDEX media_live_room_idx ON media (room_id, created_at) WHERE state IN ('pending', 'ready')",
    ),
    "reactions": (
        "ALTER TABLE reactions ADD CONSTRAINT reactions_pkey "
        "PRIMARY KEY (room_id, message_seq, participant_id, emoji)",
    ),
    "pins": ("ALTER TABLE pins ADD CONSTRAINT pins_pkey PRIMARY KEY (room_id, source, message_seq)",),
    "reports": (
        "ALTER TABLE reports ADD CONSTRAINT reports_pkey "
        "PRIMARY KEY (room_id, message_seq, reporter_participant_id)",
        "CREATE INDEX reports_open_idx ON reports (room_id, message_seq) WHERE closed_at IS NULL",
    ),
    "paid_pins": (
        "ALTER TABLE paid_pins ADD CONSTRAINT paid_pins_pkey PRIMARY KEY (room_id, id)",
        "CREATE INDEX paid_pins_standing_idx ON paid_pins (room_id, expires_at) WHERE removed_at IS NULL",
        "CREATE INDEX paid_pins_target_idx ON paid_pins (room_id, target_seq)",
        "CREATE INDEX paid_pins_buyer_idx ON paid_pins (room_id, participant_id)",
    ),
    "paid_orders": (
        "ALTER TABLE paid_orders ADD CONSTRAINT paid_orders_pkey PRIMARY KEY (room_id, order_id)",
    ),
}
_MESSAGES_INDEXES = (
    "ALTER TABLE messages ADD CONSTRAINT messages_room_sender_client_msg_key "
    "UNIQUE (room_id, sender_participant_id, client_msg_id)",
    "CREATE UNIQUE INDEX messages_media_idx ON messages (room_id, media_id) WHERE media_id IS NOT NULL",
    "CREATE INDEX messages_sender_idx ON messages (room_id, sender_participant_id, seq)",
)
_MESSAGES_PARTITIONED = (
    "ALTER TABLE messages ADD CONSTRAINT messages_pkey PRIMARY KEY (room_id, seq)",
    "ALTER TABLE messages ADD CONSTRAINT messages_room_id_key UNIQUE (room_id, id)",
    *_MESSAGES_INDEXES,
)
_MESSAGES_0012 = (
    "ALTER TABLE messages ADD CONSTRAINT messages_pkey PRIMARY KEY (id)",
    "ALTER TABLE messages ADD CONSTRAINT messages_room_seq_key UNIQUE (room_id, seq)",
    *_MESSAGES_INDEXES,
)
_MEDIA_FKEY = (
    "ALTER TABLE messages ADD CONSTRAINT messages_media_fkey "
    "FOREIGN KEY (room_id, media_id) REFERENCES media (room_id, id)"
)

# Each partition's indexes, named after the partitioned index they belong to: (index, new name).
_PARTITION_INDEXES = """
SELECT child.relname AS index, parent.relname || '_' || right(part.relname, 3) AS name
FROM pg_inherits i
JOIN pg_class child ON child.oid = i.inhrelid
JOIN pg_class parent ON parent.oid = i.inhparent AND parent.relkind = 'I'
JOIN pg_index x ON x.indexrelid = child.oid
JOIN pg_class part ON part.oid = x.indrelid
WHERE child.relnamespace = current_schema()::regnamespace
ORDER BY 1
"""


def _move(table: str, partitioned: bool) -> None:
    """Recreate `table` (partitioned or plain) with its data; keys and indexes come afterwards."""
    new = f"{table}_moving"
    op.execute(
        f"CREATE TABLE {new} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        + (" PARTITION BY HASH (room_id)" if partitioned else "")
    )
    if partitioned:
        for remainder in range(MODULUS):
            op.execute(
                f"CREATE TABLE {table}_p{remainder:02d} PARTITION OF {new} "
                f"FOR VALUES WITH (MODULUS {MODULUS}, REMAINDER {remainder})"
            )
    op.execute(f"INSERT INTO {new} SELECT * FROM {table}")  # noqa: S608 - constant table names
    op.execute(f"DROP TABLE {table}")
    op.execute(f"ALTER TABLE {new} RENAME TO {table}")


def _rebuild(partitioned: bool) -> None:
    op.execute("ALTER TABLE messages DROP CONSTRAINT messages_media_fkey")
    for table in PARTITIONED:
        _move(table, partitioned)
        keys = _KEYS.get(table) or (_MESSAGES_PARTITIONED if partitioned else _MESSAGES_0012)
        for statement in keys:
            op.execute(statement)
    op.execute(_MEDIA_FKEY)
    bind = op.get_bind()
    if partitioned:
        for index, name in bind.execute(sa.text(_PARTITION_INDEXES)).all():
            op.execute(f'ALTER INDEX "{index}" RENAME TO "{name}"')
    # Statistics for the partitions that hold rows. An empty one stays never analysed, and the planner
    # assumes at least 10 pages for it; an analysed empty one is costed at its actual size, so a
    # statement prepared while it is nearly empty (a new database's first seconds) keeps a plan that
    # scans it — the send path's duplicate check reading the whole partition per message — until
    # autovacuum's first analyse replans it, a minute or more later.
    for table in PARTITIONED:
        parts = [f"{table}_p{remainder:02d}" for remainder in range(MODULUS)] if partitioned else [table]
        for part in parts:
            if bind.execute(sa.text(f"SELECT EXISTS (SELECT FROM {part})")).scalar():  # noqa: S608
                op.execute(f"ANALYZE {part}")


def upgrade() -> None:
    _rebuild(partitioned=True)


def downgrade() -> None:
    _rebuild(partitioned=False)

"""The rules that let messaging's schema move to Citus, checked on the catalog after every migration.

Every migration is applied to a private Postgres (the `database_url` fixture) and the `messaging`
schema is linted (`lint`):

- every table with a `room_id` column is HASH-partitioned on room_id ("distributed": under Citus,
  distributed on room_id and co-located with `messages`), or is on ALLOWED_UNPARTITIONED with the
  reason it is not;
- every primary key, unique constraint and unique index of a distributed table (and of each of its
  partitions) includes room_id;
- a foreign key between distributed tables pairs room_id with room_id; a table that is not
  distributed never refers to a distributed one, and a distributed one refers only to distributed or
  allow-listed (reference) tables;
- no column of a distributed table or its partitions takes its value from a sequence (nextval()
  default, identity): a seq comes from the room's own counter row;
- every index of a partition belongs to an index of the partitioned table and is named
  `<that index>_<partition suffix>` (`messages_pkey_p03`): `store.constraint_of` relies on it to
  tell which constraint a violation broke.

The lint is shown to fail on a deliberately bad schema built in a throwaway schema of the same
database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping

import psycopg
import pytest

SCHEMA = "messaging"

# Tables with a room_id column that stay plain tables, and why.
ALLOWED_UNPARTITIONED: dict[str, str] = {
    # The ids of erased rooms, looked up by id before a key is created: small and read-mostly, a
    # reference table under Citus.
    "erased_rooms": "reference: small set of erased room ids",
    # A work queue of rooms to re-encrypt, claimed across rooms oldest first (FOR UPDATE SKIP LOCKED);
    # rows only while work is pending. Stays on the coordinator (or becomes a reference table).
    "reencrypt_rooms": "queue: claimed across rooms by the background re-encryption",
}

_TABLES = """
SELECT c.oid, c.relname, pt.partstrat,
       ARRAY(SELECT coalesce(a.attname, '(expression)')
             FROM unnest(pt.partattrs::int2[]) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
             ORDER BY k.ord) AS partition_columns
FROM pg_class c
LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND EXISTS (SELECT 1 FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attname = 'room_id' AND NOT a.attisdropped)
ORDER BY c.relname
"""
# Unique indexes (primary keys and unique constraints included) of the given tables and their partitions.
_UNIQUE = """
SELECT t.relname, i.relname,
       EXISTS (SELECT 1 FROM unnest(x.indkey::int2[]) AS k(attnum)
               JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
               WHERE a.attname = 'room_id') AS has_room
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
WHERE x.indisunique AND pg_partition_root(t.oid) = ANY(%(roots)s::oid[])
ORDER BY 1, 2
"""
_FOREIGN_KEYS = """
SELECT con.conname,
       src.relname, pg_partition_root(src.oid)::oid, dst.relname, pg_partition_root(dst.oid)::oid,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord),
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.ord)
FROM pg_constraint con
JOIN pg_class src ON src.oid = con.conrelid
JOIN pg_class dst ON dst.oid = con.confrelid
WHERE con.contype = 'f' AND con.conparentid = 0
  AND (src.relnamespace = %(schema)s::regnamespace OR dst.relnamespace = %(schema)s::regnamespace)
ORDER BY 1
"""
_SEQUENCED = """
SELECT t.relname, a.attname, a.attidentity <> '' AS identity, pg_get_expr(d.adbin, d.adrelid) AS default
FROM pg_attribute a
JOIN pg_class t ON t.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE pg_partition_root(t.oid) = ANY(%(roots)s::oid[]) AND t.relkind IN ('r', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped
  AND (a.attidentity <> '' OR pg_get_expr(d.adbin, d.adrelid) ILIKE '%%nextval(%%')
ORDER BY 1, 2
"""
# Every index of a partition: its partitioned parent index (if any) and the partition's suffix.
_PARTITION_INDEXES = """
SELECT part.relname, i.relname, parent.relname,
       substr(part.relname, length(root.relname) + 2) AS suffix
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class part ON part.oid = x.indrelid AND part.relispartition
JOIN pg_class root ON root.oid = pg_partition_root(part.oid)
LEFT JOIN pg_inherits inh ON inh.inhrelid = i.oid
LEFT JOIN pg_class parent ON parent.oid = inh.inhparent
WHERE root.oid = ANY(%(roots)s::oid[])
ORDER BY 1, 2
"""


def lint(connection: psycopg.Connection, schema: str, allowed: Mapping[str, str]) -> list[str]:
    """What in `schema` breaks the rules (see the module's docstring); empty when nothing does."""
    problems: list[str] = []
    distributed: dict[int, str] = {}
    for oid, table, strategy, columns in connection.execute(_TABLES, {"schema": schema}).fetchall():
        if strategy == "h" and columns == ["room_id"]:
            distributed[oid] = table
            if table in allowed:
                problems.append(f"{table}: partitioned by room id, but still on the allow-list")
        elif table not in allowed:
            how = "not partitioned" if strategy is None else f"partitioned ({strategy}) by {columns}"
            problems.append(f"{table}: has room_id but is {how}, not HASH-partitioned by room_id")
    roots = {"roots": list(distributed)}
    for table, index, has_room in connection.execute(_UNIQUE, roots).fetchall():
        if not has_room:
            problems.append(f"{table}: unique index {index} does not include room_id")
    for name, src, src_root, dst, dst_root, src_columns, dst_columns in connection.execute(
        _FOREIGN_KEYS, {"schema": schema}
    ).fetchall():
        if src_root in distributed and dst_root in distributed:
            pairs = set(zip(src_columns, dst_columns, strict=True))
            if ("room_id", "room_id") not in pairs:
                problems.append(f"{src}: foreign key {name} to {dst} does not pair room_id with room_id")
        elif dst_root in distributed:
            problems.append(f"{src}: foreign key {name} refers to distributed {dst} from a table that is not")
        elif src_root in distributed and dst not in allowed:
            problems.append(
                f"{src}: foreign key {name} refers to {dst}, neither distributed nor allow-listed"
            )
    for table, column, identity, default in connection.execute(_SEQUENCED, roots).fetchall():
        source = "is an identity" if identity else f"defaults to {default}"
        problems.append(f"{table}: column {column} {source}")
    for partition, index, parent, suffix in connection.execute(_PARTITION_INDEXES, roots).fetchall():
        if parent is None:
            problems.append(f"{partition}: index {index} belongs to no index of the partitioned table")
        elif index != f"{parent}_{suffix}":
            problems.append(f"{partition}: index {index} should be named {parent}_{suffix}")
    return problems


@pytest.fixture
def connection(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def test_messaging_schema_keeps_the_rules(connection: psycopg.Connection) -> None:
    assert lint(connection, SCHEMA, ALLOWED_UNPARTITIONED) == []


def test_the_log_and_per_room_tables_are_distributed(connection: psycopg.Connection) -> None:
    distributed = {
        table
        for _, table, strategy, columns in connection.execute(_TABLES, {"schema": SCHEMA}).fetchall()
        if strategy == "h" and columns == ["room_id"]
    }
    assert {"messages", "reactions", "pins", "reports", "media", "paid_pins", "room_counters"} <= distributed
    key = connection.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'messaging.messages'::regclass AND contype = 'p'"
    ).fetchone()
    assert key == ("PRIMARY KEY (room_id, seq)",)


def test_allow_list_names_plain_tables_with_a_room_id(connection: psycopg.Connection) -> None:
    """A stale entry (a table gone, renamed or partitioned since) would hide nothing but mislead."""
    plain = {
        table
        for _, table, strategy, _ in connection.execute(_TABLES, {"schema": SCHEMA}).fetchall()
        if strategy is None
    }
    assert set(ALLOWED_UNPARTITIONED) <= plain


@pytest.fixture
def bad_schema(connection: psycopg.Connection) -> Iterator[str]:
    """A throwaway schema breaking every rule once, beside a few tables that keep them."""
    schema = f"lint_{uuid.uuid4().hex[:12]}"
    statements = [
        f"CREATE SCHEMA {schema}",
        f"SET search_path TO {schema}",
        # Keeps the rules.
        "CREATE TABLE log (room_id text, seq bigint, PRIMARY KEY (room_id, seq)) PARTITION BY HASH (room_id)",
        "CREATE TABLE log_p00 PARTITION OF log FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
        "CREATE TABLE log_p01 PARTITION OF log FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
        "ALTER INDEX log_p00_pkey RENAME TO log_pkey_p00",
        "ALTER INDEX log_p01_pkey RENAME TO log_pkey_p01",
        "CREATE TABLE small (room_id text PRIMARY KEY)",
        # A plain table with room_id, not allow-listed.
        "CREATE TABLE plain_log (room_id text, seq bigint PRIMARY KEY)",
        # Partitioned, but by range / on another column.
        "CREATE TABLE by_range (room_id text, seq bigint) PARTITION BY RANGE (room_id)",
        "CREATE TABLE by_seq (room_id text, seq bigint) PARTITION BY HASH (seq)",
        # A unique index of one partition without room_id; it also belongs to no partitioned index.
        "CREATE UNIQUE INDEX log_p00_seq_idx ON log_p00 (seq)",
        # Room id not paired with room id in a foreign key, values from a sequence and an identity, and a
        # partition index with the name Postgres gives it, not the one constraint_of expects.
        "CREATE SEQUENCE s",
        "CREATE TABLE reacts (room_id text, other_room text, seq bigint, ord bigint DEFAULT nextval('s'),"
        " id bigint GENERATED BY DEFAULT AS IDENTITY, PRIMARY KEY (room_id, seq, id),"
        " FOREIGN KEY (other_room, seq) REFERENCES log (room_id, seq)) PARTITION BY HASH (room_id)",
        "CREATE TABLE reacts_p00 PARTITION OF reacts FOR VALUES WITH (MODULUS 1, REMAINDER 0)",
        # A distributed table referring to a plain one that is not allow-listed.
        "CREATE TABLE kinds (kind int PRIMARY KEY)",
        "CREATE TABLE typed (room_id text, kind int REFERENCES kinds) PARTITION BY HASH (room_id)",
        # A plain table referring to a distributed one.
        "CREATE TABLE notes (room text, seq bigint, FOREIGN KEY (room, seq) REFERENCES log)",
    ]
    with connection.transaction():
        for statement in statements:
            connection.execute(statement)  # type: ignore[arg-type]  # test-built DDL
    connection.execute("SET search_path TO DEFAULT")
    try:
        yield schema
    finally:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")  # type: ignore[arg-type]


def test_lint_finds_every_broken_rule(connection: psycopg.Connection, bad_schema: str) -> None:
    problems = lint(connection, bad_schema, {"small": "reference"})
    expected = [
        "plain_log: has room_id but is not partitioned, not HASH-partitioned by room_id",
        "by_range: has room_id but is partitioned (r) by ['room_id'], not HASH-partitioned by room_id",
        "by_seq: has room_id but is partitioned (h) by ['seq'], not HASH-partitioned by room_id",
        "log_p00: unique index log_p00_seq_idx does not include room_id",
        "reacts: foreign key reacts_other_room_seq_fkey to log does not pair room_id with room_id",
        "typed: foreign key typed_kind_fkey refers to kinds, neither distributed nor allow-listed",
        "notes: foreign key notes_room_seq_fkey refers to distributed log from a table that is not",
        "reacts: column id is an identity",
        f"reacts: column ord defaults to nextval('{bad_schema}.s'::regclass)",
        f"reacts_p00: column ord defaults to nextval('{bad_schema}.s'::regclass)",
        "log_p00: index log_p00_seq_idx belongs to no index of the partitioned table",
        "reacts_p00: index reacts_p00_pkey should be named reacts_pkey_p00",
    ]
    assert sorted(problems) == sorted(expected)
    stale = lint(connection, bad_schema, {"small": "reference", "log": "stale"})
    assert sorted(stale) == sorted([*expected, "log: partitioned by room id, but still on the allow-list"])

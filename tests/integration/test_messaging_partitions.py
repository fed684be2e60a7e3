"""Messaging's per-room tables partitioned by room id (migration 0013), against real Postgres.

- The hot statements of the store (a history page by room and seq, the newest page, resuming after a
  seq, the group commit's counter update and insert, ...) read one partition of each table: EXPLAIN
  shows a single partition scanned, with a custom plan and with the generic plan a prepared
  statement (asyncpg prepares every statement) switches to.
- The migration moves an existing unpartitioned log: a private database migrated to 0012 and filled
  with rooms (messages with media, reactions, pins, reports, paid pins, ...) is upgraded to head;
  every row is there, reachable by its room's keys, the seq counter goes on where it was, a retry of
  a stored client_msg_id is still recognised, erasing one room's rows leaves the others'; the
  downgrade brings every row back into plain tables.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import psycopg
import pytest
from alembic import command

from chatpop_common.migrate import script_location
from chatpop_common.migrations import alembic_config, upgrade
from chatpop_messaging import erasure, reads, store

MODULUS = 16
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
UNPARTITIONED = ("erased_rooms", "reencrypt_rooms")

# The hot statements, each with arguments for EXECUTE (the room is $1 or $2, written {room}).
HOT: dict[str, tuple[str, str]] = {
    "history page": (store._RANGE, "{room}, 1, 50"),
    "resume after a seq": (store._RANGE, "{room}, 120, 9223372036854775807"),
    "newest page": (store._NEWEST, "{room}, 50"),
    "messages at seqs": (store._AT, "{room}, ARRAY[3, 5]::bigint[]"),
    "retries by client_msg_id": (store._BY_CLIENT_MSG_IDS, "{room}, ARRAY['p1'], ARRAY['c1']"),
    "states of a page": (store._CURRENT_STATES, "{room}, ARRAY[3, 5]::bigint[], 'p1'"),
    "lock a target": (store._LOCK_TARGET, "{room}, 3"),
    "group commit": (
        store._INSERT_GROUP,
        "{room}, ARRAY[gen_random_uuid()], ARRAY['p1'], ARRAY['u1'], ARRAY[false], ARRAY[false],"
        " ARRAY['c9'], ARRAY['\\x00'::bytea], ARRAY[NULL::bigint]",
    ),
    "insert one": (
        store._INSERT,
        "gen_random_uuid(), {room}, 'p1', 'u1', false, false, 'c9', '\\x00'::bytea, NULL, NULL",
    ),
    "next seq of a change": (store._NEXT_SEQ, "{room}"),
    "mark read": (reads._MARK, "{room}, 'p1', 5"),
}
# Statements that only insert (tuple routing picks the partition; nothing is scanned).
WRITES_ONLY = {"insert one", "next seq of a change"}
_PARTITION = re.compile(r"^(?P<table>.+)_p(?P<number>[0-9]{2})$")


def _relations(plan: dict[str, Any]) -> list[str]:
    found = [plan["Relation Name"]] if "Relation Name" in plan else []
    for child in plan.get("Plans", ()):
        found += _relations(child)
    return found


def partitions_scanned(plan: dict[str, Any]) -> dict[str, set[str]]:
    """Per partitioned table, the partitions a plan reads."""
    scanned: dict[str, set[str]] = {}
    for name in _relations(plan):
        match = _PARTITION.match(name)
        if match:
            scanned.setdefault(match["table"], set()).add(name)
    return scanned


def partition_of(connection: psycopg.Connection, table: str, room_id: str) -> str:
    for remainder in range(MODULUS):
        row = connection.execute(
            "SELECT satisfies_hash_partition(%s::regclass, %s, %s, %s::text)",
            (f"messaging.{table}", MODULUS, remainder, room_id),
        ).fetchone()
        if row is not None and row[0]:
            return f"{table}_p{remainder:02d}"
    raise AssertionError(f"no partition of {table} takes {room_id}")


@pytest.fixture
def explained(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("SET search_path TO messaging")
        yield connection


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
@pytest.mark.parametrize("name", list(HOT))
def test_hot_statement_reads_one_partition(explained: psycopg.Connection, name: str, mode: str) -> None:
    statement, arguments = HOT[name]
    room = f"room-{uuid.uuid4().hex[:8]}"
    prepared = f"hot_{uuid.uuid4().hex[:8]}"
    explained.execute(f"SET plan_cache_mode = {mode}")  # type: ignore[arg-type]
    explained.execute(f"PREPARE {prepared} AS {statement}")  # type: ignore[arg-type]
    values = arguments.format(room=f"'{room}'")
    try:
        row = explained.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {prepared}({values})").fetchone()  # type: ignore[arg-type]
    finally:
        explained.execute(f"DEALLOCATE {prepared}")  # type: ignore[arg-type]
        explained.execute("RESET plan_cache_mode")
    assert row is not None
    plan = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]["Plan"]
    scanned = partitions_scanned(plan)
    for table, partitions in scanned.items():
        assert partitions == {partition_of(explained, table, room)}, (table, plan)
    if name not in WRITES_ONLY:
        assert "messages" in scanned or name == "mark read", plan


# ---- the migration moves an existing log ---------------------------------------------------------


@pytest.fixture
def scratch_database(database_url: str) -> Iterator[str]:
    """A database of its own in the session's Postgres, dropped afterwards."""
    name = f"chatpop_move_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    try:
        yield database_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")  # type: ignore[arg-type]


def _plain(text: str) -> bytes:
    """Content as stored before encryption existed (crypto.py: 0x00 + UTF-8)."""
    return b"\x00" + text.encode()


def _change() -> str:
    return f"change:{uuid.uuid4().hex}"


def entry(
    entries: list[tuple[Any, ...]], room: str, kind: int, sender: str, key: str, text: bytes, **extra: Any
) -> int:
    """Append a log entry of `room` with the next seq; its seq."""
    seq = len(entries) + 1
    entries.append((uuid.uuid4(), room, seq, sender, f"user {sender}", key, text, kind, extra))
    return seq


def fill_rooms(connection: psycopg.Connection, rooms: list[str]) -> None:
    """Rooms as 0012 stores them: messages (one with media), reactions, a pin, a report, a paid pin, ..."""
    for index, room in enumerate(rooms):
        entries: list[tuple[Any, ...]] = []
        for n in range(1, 6 + index % 4):
            entry(entries, room, store.KIND_MESSAGE, f"p{n % 3}", f"c{n}", _plain(f"hello {n} in {room}"))
        media_id = uuid.uuid4()
        connection.execute(
            "INSERT INTO media (room_id, id, uploader_participant_id, kind, state, content_type, variants)"
            " VALUES (%s, %s, 'p1', 'photo', 'ready', 'image/webp', '[{\"name\": \"full\"}]')",
            (room, media_id),
        )
        with_media = entry(entries, room, store.KIND_MESSAGE, "p1", "c-media", b"", media_id=media_id)
        connection.execute(
            "UPDATE media SET message_seq = %s WHERE room_id = %s AND id = %s", (with_media, room, media_id)
        )
        connection.execute(
            "INSERT INTO reactions (room_id, message_seq, participant_id, emoji) VALUES (%s, 1, 'p2', %s)",
            (room, store.REACTIONS[0]),
        )
        reaction = entry(
            entries, room, store.KIND_REACTION, "p2", _change(), b"", target_seq=1, emoji=store.REACTIONS[0]
        )
        connection.execute(
            "INSERT INTO pins (room_id, source, message_seq, pinned_seq, pinned_by)"
            " VALUES (%s, 1, 2, %s, 'p0')",
            (room, len(entries) + 1),
        )
        entry(entries, room, store.KIND_PIN, "p0", _change(), b"", target_seq=2, pinned_seqs=[2])
        connection.execute(
            "INSERT INTO room_boards (room_id, sticky_text, pins_state_seq) VALUES (%s, %s, %s)",
            (room, _plain("welcome"), len(entries)),
        )
        connection.execute(
            "INSERT INTO reports (room_id, message_seq, reporter_participant_id, reporter_username, reason,"
            " text) VALUES (%s, 3, 'p2', 'user p2', 1, %s)",
            (room, _plain("spam")),
        )
        connection.execute(
            "INSERT INTO paid_pins (room_id, id, target_seq, participant_id, username, amount_cents,"
            " currency, started_at, expires_at, granted_seq)"
            " VALUES (%s, %s, 4, 'p1', 'user p1', 500, 'usd', now(), now() + interval '1 hour', %s)",
            (room, f"order-{room}", reaction),
        )
        connection.execute(
            "INSERT INTO paid_orders (room_id, order_id, kind, outcome, participant_id, amount_cents,"
            " entry_seq, pin_id) VALUES (%s, %s, 1, 1, 'p1', 500, %s, %s)",
            (room, f"order-{room}", reaction, f"order-{room}"),
        )
        connection.execute(
            "INSERT INTO read_positions (room_id, participant_id, read_seq) VALUES (%s, 'p1', 3)", (room,)
        )
        connection.execute(
            "INSERT INTO mutes (room_id, muter_participant_id, muted_participant_id, muted_username)"
            " VALUES (%s, 'p1', 'p2', 'user p2')",
            (room,),
        )
        connection.execute(
            "INSERT INTO room_keys (room_id, version, wrapped_key, master_version) VALUES (%s, 1, %s, 1)",
            (room, bytes(60)),
        )
        for id_, room_id, entry_seq, sender, username, key, text, kind, extra in entries:
            connection.execute(
                "INSERT INTO messages (id, room_id, seq, sender_participant_id, sender_username,"
                " client_msg_id, text, kind, target_seq, emoji, pinned_seqs, media_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    id_,
                    room_id,
                    entry_seq,
                    sender,
                    username,
                    key,
                    text,
                    kind,
                    extra.get("target_seq"),
                    extra.get("emoji"),
                    extra.get("pinned_seqs"),
                    extra.get("media_id"),
                ),
            )
        connection.execute(
            "INSERT INTO room_counters (room_id, last_seq) VALUES (%s, %s)", (room, len(entries))
        )
    connection.execute("INSERT INTO erased_rooms (room_id) VALUES ('room-erased')")
    connection.execute("INSERT INTO reencrypt_rooms (room_id) VALUES (%s)", (rooms[0],))


def snapshot(connection: psycopg.Connection) -> dict[str, list[str]]:
    """Every row of every table the migration touches, as sorted JSON text."""
    found: dict[str, list[str]] = {}
    for table in (*PARTITIONED, *UNPARTITIONED):
        rows = connection.execute(f"SELECT to_jsonb(t)::text FROM {table} AS t").fetchall()  # type: ignore[arg-type]
        found[table] = sorted(row[0] for row in rows)
    return found


def relkinds(connection: psycopg.Connection) -> dict[str, str]:
    rows = connection.execute(
        "SELECT relname, relkind::text FROM pg_class WHERE relnamespace = 'messaging'::regnamespace"
        " AND relname = ANY(%s)",
        (list(PARTITIONED),),
    ).fetchall()
    return {name: kind for name, kind in rows}


async def test_migration_moves_an_existing_log(scratch_database: str) -> None:
    location = script_location("chatpop_messaging")
    upgrade(location, scratch_database, "messaging", revision="0012")
    rooms = [f"room-{n:02d}-{uuid.uuid4().hex[:6]}" for n in range(40)]
    with psycopg.connect(scratch_database, autocommit=True) as connection:
        connection.execute("SET search_path TO messaging")
        with connection.transaction():
            fill_rooms(connection, rooms)
        before = snapshot(connection)
        assert len(before["messages"]) > 8 * len(rooms)
        assert set(relkinds(connection).values()) == {"r"}

    upgrade(location, scratch_database, "messaging")

    with psycopg.connect(scratch_database, autocommit=True) as connection:
        connection.execute("SET search_path TO messaging")
        assert relkinds(connection) == dict.fromkeys(PARTITIONED, "p")
        assert snapshot(connection) == before
        # Spread over the partitions, each row in its room's.
        spread = connection.execute(
            "SELECT count(DISTINCT tableoid) FROM messages WHERE room_id = ANY(%s)", (rooms,)
        ).fetchone()
        assert spread is not None and spread[0] > MODULUS // 2
        for room in rooms[:5]:
            where = connection.execute(
                "SELECT DISTINCT tableoid::regclass::text FROM messages WHERE room_id = %s", (room,)
            ).fetchall()
            assert where == [(partition_of(connection, "messages", room),)]
        # Reachable by the keys the store uses: every entry by (room, seq), media from its message.
        for room in rooms:
            last = connection.execute(
                "SELECT last_seq FROM room_counters WHERE room_id = %s", (room,)
            ).fetchone()
            assert last is not None
            found = connection.execute(
                "SELECT seq FROM messages WHERE room_id = %s AND seq = ANY(%s) ORDER BY seq",
                (room, list(range(1, last[0] + 1))),
            ).fetchall()
            assert [row[0] for row in found] == list(range(1, last[0] + 1))
            linked = connection.execute(
                "SELECT m.seq, d.message_seq FROM messages m JOIN media d ON d.room_id = m.room_id"
                " AND d.id = m.media_id WHERE m.room_id = %s",
                (room,),
            ).fetchall()
            assert len(linked) == 1 and linked[0][0] == linked[0][1]
            pinned = connection.execute(
                "SELECT m.client_msg_id FROM pins p JOIN messages m ON m.room_id = p.room_id"
                " AND m.seq = p.message_seq WHERE p.room_id = %s",
                (room,),
            ).fetchall()
            assert pinned == [("c2",)]

    # The counter goes on, and a stored client_msg_id is still recognised (by the partition's index).
    room = rooms[7]
    connection_ = await asyncpg.connect(scratch_database, server_settings={"search_path": "messaging"})
    try:
        last_seq = await connection_.fetchval("SELECT last_seq FROM room_counters WHERE room_id = $1", room)
        rows = await connection_.fetch(
            store._INSERT_GROUP,
            room,
            [uuid.uuid4(), uuid.uuid4(), uuid.uuid4()],
            ["p1", "p1", "p2"],
            ["user p1", "user p1", "user p2"],
            [False] * 3,
            [False] * 3,
            ["c-new-1", "c1", "c-new-2"],
            [_plain("a"), _plain("retry"), _plain("b")],
            [None] * 3,
        )
        assert [(row["seq"], row["client_msg_id"]) for row in rows] == [
            (last_seq + 1, "c-new-1"),
            (last_seq + 2, "c-new-2"),
        ]
        with pytest.raises(asyncpg.UniqueViolationError) as raised:
            await connection_.fetchrow(
                store._INSERT, uuid.uuid4(), room, "p1", "user p1", False, False, "c-new-1", b"", None, None
            )
        assert raised.value.constraint_name != store.CLIENT_MSG_ID_CONSTRAINT
        assert store.constraint_of(raised.value) == store.CLIENT_MSG_ID_CONSTRAINT
        assert await connection_.fetchval("SELECT last_seq FROM room_counters WHERE room_id = $1", room) == (
            last_seq + 2
        )
        with pytest.raises(asyncpg.UniqueViolationError) as raised:
            await connection_.execute(
                "INSERT INTO paid_orders (room_id, order_id, kind, outcome, participant_id, amount_cents)"
                " VALUES ($1, $2, 3, 1, 'p1', 100)",
                room,
                f"order-{room}",
            )
        assert store.constraint_of(raised.value) == "paid_orders_pkey"
        # Erasure's batched deletes by ctid stay in the room: a ctid is unique within a partition only.
        assert await connection_.execute(erasure._DELETE_BATCH["mutes"], rooms[3], 100) == "DELETE 1"
        assert await connection_.fetchval("SELECT count(*) FROM mutes") == len(rooms) - 1
    finally:
        await connection_.close()

    with psycopg.connect(scratch_database, autocommit=True) as connection:
        connection.execute("SET search_path TO messaging")
        after = snapshot(connection)
    command.downgrade(alembic_config(location, scratch_database, "messaging"), "0012")
    with psycopg.connect(scratch_database, autocommit=True) as connection:
        connection.execute("SET search_path TO messaging")
        assert set(relkinds(connection).values()) == {"r"}
        assert snapshot(connection) == after
        key = connection.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'messaging.messages'::regclass AND contype = 'p'"
        ).fetchone()
        assert key == ("PRIMARY KEY (id)",)


# ---- the send path's duplicate check -------------------------------------------------------------


def _indexes(connection: psycopg.Connection) -> list[tuple[str, str]]:
    """messages' indexes and its partitions', with their definitions."""
    rows = connection.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'messaging'"
        " AND (tablename = 'messages' OR tablename LIKE 'messages\\_p__') ORDER BY 1"
    ).fetchall()
    return [(name, definition) for name, definition in rows]


def _index_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan] if "Index Name" in plan else []
    for child in plan.get("Plans", ()):
        found += _index_scans(child)
    return found


def _group_commit_arguments(room: str, sender: str, keys: list[str]) -> str:
    """EXECUTE arguments of store._INSERT_GROUP: one message of `sender` per client_msg_id."""

    def array(value: str) -> str:
        return "ARRAY[" + ", ".join([value] * len(keys)) + "]"

    quoted = ", ".join(f"'{key}'" for key in keys)
    return ", ".join(
        (
            f"'{room}'",
            array("gen_random_uuid()"),
            array(f"'{sender}'"),
            array("'someone'"),
            array("false"),
            array("false"),
            f"ARRAY[{quoted}]",
            array("'\\x00'::bytea"),
            array("NULL::bigint"),
        )
    )


@pytest.mark.parametrize("mode", ["auto", "force_custom_plan", "force_generic_plan"])
def test_duplicate_check_stays_an_index_probe_as_a_new_log_grows(scratch_database: str, mode: str) -> None:
    """The group commit prepared on a new database (as asyncpg prepares it, and keeps it: after five
    executions Postgres may switch to a generic plan) goes on probing (room, sender, client_msg_id)
    through the unique key once the room's partition has grown, before any analyse: it never reads
    the sender's earlier messages, however many there are."""
    upgrade(script_location("chatpop_messaging"), scratch_database, "messaging")
    room, sender, history = f"room-{uuid.uuid4().hex[:8]}", "p-busy", 3000
    with psycopg.connect(scratch_database, autocommit=True) as connection:
        connection.execute("SET search_path TO messaging")
        partition = partition_of(connection, "messages", room)
        # No autovacuum: the partition keeps no statistics, as in a new database's first minute.
        connection.execute(f"ALTER TABLE {partition} SET (autovacuum_enabled = false)")  # type: ignore[arg-type]
        connection.execute(f"SET plan_cache_mode = {mode}")  # type: ignore[arg-type]
        connection.execute(f"PREPARE group_commit AS {store._INSERT_GROUP}")  # type: ignore[arg-type]
        for n in range(8):
            connection.execute(
                f"EXECUTE group_commit({_group_commit_arguments(room, sender, [f'early-{n}'])})"  # type: ignore[arg-type]
            )
        connection.execute(
            "INSERT INTO messages (id, room_id, seq, sender_participant_id, sender_username, client_msg_id,"
            " text) SELECT gen_random_uuid(), %s, n, %s, 'busy', 'c' || n, '\\x00'::bytea"
            " FROM generate_series(9, %s) AS n",
            (room, sender, history),
        )
        connection.execute("UPDATE room_counters SET last_seq = %s WHERE room_id = %s", (history, room))
        statistics = connection.execute(
            "SELECT count(*) FROM pg_stats WHERE schemaname = 'messaging' AND tablename = %s", (partition,)
        ).fetchone()
        assert statistics == (0,)
        with connection.transaction(force_rollback=True):
            arguments = _group_commit_arguments(room, sender, ["c-new", "c70"])
            row = connection.execute(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE group_commit({arguments})"  # type: ignore[arg-type]
            ).fetchone()
    assert row is not None
    plan = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]["Plan"]
    probes = [scan for scan in _index_scans(plan) if scan.get("Relation Name") == partition]
    assert [scan["Index Name"] for scan in probes] == [f"{store.CLIENT_MSG_ID_CONSTRAINT}_{partition[-3:]}"]
    # One lookup per message, one of them ("c70") a retry found: nothing else of the history was read.
    assert probes[0].get("Rows Removed by Filter", 0) == 0, probes[0]
    assert probes[0]["Actual Loops"] == 2, probes[0]
    assert plan["Actual Rows"] == 1  # only "c-new" was inserted


def test_sender_index_dropped_and_restored(scratch_database: str) -> None:
    """0014 drops messages_sender_idx; its downgrade restores exactly the indexes 0013 left."""
    location = script_location("chatpop_messaging")
    upgrade(location, scratch_database, "messaging", revision="0013")
    with psycopg.connect(scratch_database, autocommit=True) as connection:
        before = _indexes(connection)
    assert sum(name.startswith("messages_sender_idx") for name, _ in before) == MODULUS + 1
    upgrade(location, scratch_database, "messaging")
    with psycopg.connect(scratch_database, autocommit=True) as connection:
        after = _indexes(connection)
    assert after == [index for index in before if not index[0].startswith("messages_sender_idx")]
    command.downgrade(alembic_config(location, scratch_database, "messaging"), "0013")
    with psycopg.connect(scratch_database, autocommit=True) as connection:
        assert _indexes(connection) == before

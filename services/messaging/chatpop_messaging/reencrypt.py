"""Bringing stored content to each room's newest data key, and what key versions are in use.

`reencrypt_rooms` lists the rooms with work: every room that had content when migration 0010 ran
(plaintext from before encryption), and every room RotateRoomKeys gave a new version. A pass over a
room walks its log by seq in batches (`next_seq` remembers where it is), then its sticky text and
reports, re-sealing every value that is plaintext or on an older version. Each batch is one short
transaction holding the room's queue row (FOR UPDATE SKIP LOCKED: replicas work on different rooms)
and writes with compare-and-set (`WHERE column = the value read`), so a concurrent change always wins
and no message row is locked while it is read.

A process may seal with a room's previous version for up to the keyring's TTL after a rotation (it
caches which version is newest). So a pass that started earlier than the newest version's creation
plus `retire_after` leaves the room queued (`next_seq` -1) for one more pass after that time; a pass
that started later retires (deletes) the older versions: nothing sealed with them remains. Each
finished pass also drops the room's Redis stream, so the hot cache is written anew with the newest key
(and plaintext cached before the upgrade is gone).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.errors import FailedPrecondition
from chatpop_messaging import crypto, keys
from chatpop_messaging.hotcache import HotCache
from chatpop_messaging.metrics import REENCRYPT_RUNS, REENCRYPTED

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 5000
_COLUMNS = (("text", crypto.TEXT), ("payload", crypto.PAYLOAD), ("pinned_message", crypto.PINNED_MESSAGE))

_CLAIM = """
SELECT room_id, next_seq, started_at FROM reencrypt_rooms
WHERE (next_seq >= 0 OR queued_at <= now())
  AND ($1::text[] IS NULL OR room_id = ANY($1::text[]))
  AND NOT (room_id = ANY($2::text[]))
ORDER BY queued_at
LIMIT 1
FOR UPDATE SKIP LOCKED
"""
_BATCH = """
SELECT id, seq, text, payload, pinned_message FROM messages
WHERE room_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3
"""
_NEWEST = "SELECT version, created_at FROM room_keys WHERE room_id = $1 ORDER BY version DESC LIMIT 1"
_ENQUEUE = "INSERT INTO reencrypt_rooms (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING"

# The key version a stored value was sealed with (0: plaintext from before encryption), in SQL.
_VERSION_SQL = (
    "CASE WHEN get_byte({c}, 0) = 0 THEN 0 ELSE (get_byte({c}, 1) << 24) | (get_byte({c}, 2) << 16) "
    "| (get_byte({c}, 3) << 8) | get_byte({c}, 4) END"
)


def _version_sql(column: str) -> str:
    return _VERSION_SQL.format(c=column)


_ROOM_USE = f"""
SELECT version, count(*) AS n FROM (
    SELECT {_version_sql("text")} AS version FROM messages WHERE room_id = $1 AND length(text) > 0
    UNION ALL
    SELECT {_version_sql("payload")} FROM messages WHERE room_id = $1 AND length(payload) > 0
    UNION ALL
    SELECT {_version_sql("pinned_message")} FROM messages WHERE room_id = $1 AND length(pinned_message) > 0
    UNION ALL
    SELECT {_version_sql("sticky_text")} FROM room_boards WHERE room_id = $1 AND length(sticky_text) > 0
    UNION ALL
    SELECT {_version_sql("text")} FROM reports WHERE room_id = $1 AND length(text) > 0
) AS stored GROUP BY version ORDER BY version
"""  # noqa: S608 - constant SQL


@dataclass
class _Changes:
    """Compare-and-set writes of one table column: (key, value read, new value)."""

    writes: dict[str, list[tuple[Any, bytes, bytes]]] = field(default_factory=dict)

    def add(self, column: str, key: Any, old: bytes, new: bytes) -> None:
        self.writes.setdefault(column, []).append((key, old, new))

    def __len__(self) -> int:
        return sum(len(items) for items in self.writes.values())


class Reencryption:
    def __init__(self, pool: asyncpg.Pool, cache: HotCache, *, batch: int = 500, retire_after: float) -> None:
        self._pool = pool
        self._cache = cache
        self._batch = batch
        self._retire_after = dt.timedelta(seconds=retire_after)

    async def run(self, room_ids: Sequence[str] = (), limit: int = 0) -> tuple[int, bool]:
        """Re-encrypt up to `limit` values (0: DEFAULT_LIMIT) of these rooms (every queued room when
        empty); (values re-encrypted, whether content on older versions remains)."""
        limit = limit if limit > 0 else DEFAULT_LIMIT
        wanted = list(dict.fromkeys(room_ids)) or None
        if wanted:
            async with self._pool.acquire() as connection:
                for room_id in wanted:
                    if not await keys.is_erased(connection, room_id):
                        await connection.execute(_ENQUEUE, room_id)
        done = 0
        finished: list[str] = []
        while done < limit:
            step = await self._step(wanted, finished, limit - done)
            if step is None:
                break
            done += step
        more = await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM reencrypt_rooms WHERE next_seq >= 0 "
            "AND ($1::text[] IS NULL OR room_id = ANY($1::text[])))",
            wanted,
        )
        return done, bool(more)

    async def background(self, limit: int) -> None:
        """One run of the background job."""
        done, _ = await self.run((), limit)
        REENCRYPT_RUNS.labels("ok").inc()
        if done:
            log.info("re-encrypted %d stored values", done)

    async def _step(self, wanted: list[str] | None, finished: list[str], budget: int) -> int | None:
        """One batch of one room; values re-encrypted, or None when no room is waiting."""
        discard = None
        async with self._pool.acquire() as connection, connection.transaction():
            claim = await connection.fetchrow(_CLAIM, wanted, finished)
            if claim is None:
                return None
            room_id = claim["room_id"]
            next_seq = max(int(claim["next_seq"]), 0)
            started = claim["started_at"] if claim["next_seq"] >= 0 and claim["started_at"] else None
            if started is None:
                started = await connection.fetchval("SELECT now()")
            rows = await connection.fetch(_BATCH, room_id, next_seq, min(self._batch, max(budget, 1)))
            try:
                changes = await self._log_changes(connection, room_id, rows)
                count = await self._write_log(connection, room_id, changes)
                if len(rows) == min(self._batch, max(budget, 1)):
                    await connection.execute(
                        "UPDATE reencrypt_rooms SET next_seq = $2, started_at = $3 WHERE room_id = $1",
                        room_id,
                        int(rows[-1]["seq"]) + 1,
                        started,
                    )
                    REENCRYPTED.inc(count)
                    return count
                count += await self._room_state(connection, room_id)
            except FailedPrecondition as exc:
                if exc.code != "room_erased":
                    raise
                # Erased meanwhile: nothing of it is to be kept.
                await connection.execute("DELETE FROM reencrypt_rooms WHERE room_id = $1", room_id)
                finished.append(room_id)
                return 0
            await self._finish(connection, room_id, started)
            finished.append(room_id)
            discard = room_id
        if discard is not None:
            await self._cache.discard(discard)
        REENCRYPTED.inc(count)
        return count

    async def _log_changes(
        self, connection: asyncpg.Connection, room_id: str, rows: Sequence[asyncpg.Record]
    ) -> _Changes:
        changes = _Changes()
        values = [row[column] for row in rows for column, _ in _COLUMNS]
        opener = await keys.keyring().opener(room_id, values, connection=connection)
        sealer: keys.Sealer | None = None
        for row in rows:
            entry_id = str(row["id"])
            for column, aad_field in _COLUMNS:
                value = row[column]
                if not value:
                    continue
                sealer = sealer or await keys.keyring().sealer(room_id)
                if keys.versions_in([value]) == {sealer.version}:
                    continue
                try:
                    plain = opener.data(entry_id, aad_field, value)
                except crypto.Unreadable:
                    log.warning("entry %s of room %s does not open; left as it is", row["seq"], room_id)
                    continue
                new = sealer.data(entry_id, aad_field, plain)
                if new:
                    changes.add(column, row["id"], bytes(value), new)
        return changes

    @staticmethod
    async def _write_log(connection: asyncpg.Connection, room_id: str, changes: _Changes) -> int:
        count = 0
        for column, items in changes.writes.items():
            status = await connection.execute(
                f"UPDATE messages m SET {column} = v.new "  # noqa: S608 - column from _COLUMNS
                f"FROM unnest($1::uuid[], $2::bytea[], $3::bytea[]) AS v(id, old, new) "
                f"WHERE m.room_id = $4 AND m.id = v.id AND m.{column} = v.old",
                [item[0] for item in items],
                [item[1] for item in items],
                [item[2] for item in items],
                room_id,
            )
            count += int(status.rsplit(" ", 1)[-1])
        return count

    async def _room_state(self, connection: asyncpg.Connection, room_id: str) -> int:
        """The sticky text and the reports of the room."""
        board = await connection.fetchrow(
            "SELECT sticky_text, sticky_seq FROM room_boards WHERE room_id = $1", room_id
        )
        reports = await connection.fetch(
            "SELECT message_seq, reporter_participant_id, text FROM reports "
            "WHERE room_id = $1 AND length(text) > 0",
            room_id,
        )
        items: list[tuple[str, str, bytes, Any]] = []
        if board is not None and board["sticky_text"]:
            items.append(
                (crypto.sticky_id(board["sticky_seq"]), crypto.STICKY_TEXT, board["sticky_text"], None)
            )
        for row in reports:
            ident = crypto.report_id(row["message_seq"], row["reporter_participant_id"])
            items.append((ident, crypto.REPORT_TEXT, row["text"], row))
        if not items:
            return 0
        opener = await keys.keyring().opener(room_id, [item[2] for item in items], connection=connection)
        sealer = await keys.keyring().sealer(room_id)
        count = 0
        for ident, aad_field, value, report in items:
            if keys.versions_in([value]) == {sealer.version}:
                continue
            try:
                new = sealer.data(ident, aad_field, opener.data(ident, aad_field, value))
            except crypto.Unreadable:
                continue
            if report is None:
                status = await connection.execute(
                    "UPDATE room_boards SET sticky_text = $2 WHERE room_id = $1 AND sticky_text = $3",
                    room_id,
                    new,
                    value,
                )
            else:
                status = await connection.execute(
                    "UPDATE reports SET text = $4 WHERE room_id = $1 AND message_seq = $2 "
                    "AND reporter_participant_id = $3 AND text = $5",
                    room_id,
                    report["message_seq"],
                    report["reporter_participant_id"],
                    new,
                    value,
                )
            count += int(status.rsplit(" ", 1)[-1])
        return count

    async def _finish(self, connection: asyncpg.Connection, room_id: str, started: dt.datetime) -> None:
        """A whole pass is done: retire older versions if nothing can have been sealed with them since
        the pass started, else look again once that is so."""
        newest = await connection.fetchrow(_NEWEST, room_id)
        if newest is None or started >= newest["created_at"] + self._retire_after:
            if newest is not None:
                await connection.execute(
                    "DELETE FROM room_keys WHERE room_id = $1 AND version < $2", room_id, newest["version"]
                )
            await connection.execute("DELETE FROM reencrypt_rooms WHERE room_id = $1", room_id)
            return
        await connection.execute(
            "UPDATE reencrypt_rooms SET next_seq = -1, started_at = NULL, queued_at = $2 WHERE room_id = $1",
            room_id,
            newest["created_at"] + self._retire_after,
        )

    async def rotate_rooms(self, room_ids: Sequence[str]) -> int:
        """A new data key version for these rooms (every room with keys when empty)."""
        ring = keys.keyring()
        rotated = 0
        targets = list(dict.fromkeys(room_ids))
        if not targets:
            targets = [
                row["room_id"] for row in await self._pool.fetch("SELECT DISTINCT room_id FROM room_keys")
            ]
        for room_id in targets:
            async with self._pool.acquire() as connection, connection.transaction():
                if await keys.is_erased(connection, room_id):
                    continue
                if await ring.rotate_room(connection, room_id) is not None:
                    rotated += 1
        return rotated

    async def versions(self, room_id: str) -> messaging_pb2.GetKeyVersionsResponse:
        """Master versions and the data keys they wrap; for one room, its versions and the stored
        values on each (version 0: plaintext from before encryption); for every room, the data keys
        per version."""
        ring = keys.keyring()
        response = messaging_pb2.GetKeyVersionsResponse(
            current_master_version=ring.master.current,
            available_master_versions=sorted(ring.master.keys),
        )
        async with self._pool.acquire() as connection:
            for row in await connection.fetch(
                "SELECT master_version, count(*) AS n FROM room_keys GROUP BY 1 ORDER BY 1"
            ):
                response.master_versions.add(version=row["master_version"], count=row["n"])
            if room_id:
                newest = await connection.fetchrow(_NEWEST, room_id)
                response.current_data_key_version = int(newest["version"]) if newest else 0
                for row in await connection.fetch(_ROOM_USE, room_id):
                    response.data_key_versions.add(version=row["version"], count=row["n"])
            else:
                for row in await connection.fetch(
                    "SELECT version, count(*) AS n FROM room_keys GROUP BY 1 ORDER BY 1"
                ):
                    response.data_key_versions.add(version=row["version"], count=row["n"])
        return response

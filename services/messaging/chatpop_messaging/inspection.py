"""Inspecting and repairing a room's hot cache, for the admin CLI (`python -m chatpop_common.admin room …`).

Inspection reads the room's log in Postgres and its Redis stream and compares them within the
stream's window (from its first entry to the room's newest seq: the stream must reach the newest
entry). Entries are compared as decoded messages, not as bytes: what a stream entry holds is the
entry as it was appended (or its tombstone once deleted), while a Postgres read brings the
message's state now (reactions, hidden, media records), so a message's mutable state is left out of
the comparison except whether it is deleted. A message sent during an inspection may show as
missing for a moment; inspect again.

A rebuild replaces the stream with the room's newest entries from Postgres (the hot cache size),
keeping tombstones and entries appended meanwhile (HotCache.merge with replace).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.errors import Unavailable
from chatpop_messaging import retention
from chatpop_messaging.hotcache import HotCache
from chatpop_messaging.reader import contiguous_tail
from chatpop_messaging.store import MessageStore, is_message

# Seqs listed per kind of mismatch, at most.
LIST_MAX = 1000

_LOG_RANGE = """
SELECT count(*) AS count, coalesce(min(seq), 0) AS min_seq, coalesce(max(seq), 0) AS max_seq
FROM messages WHERE room_id = $1
"""
# The room's data key versions (keys.py keeps them), newest (the current one) first.
_KEY_VERSIONS = "SELECT version FROM room_keys WHERE room_id = $1 ORDER BY version DESC"


@dataclass(frozen=True)
class Range:
    count: int = 0
    min_seq: int = 0
    max_seq: int = 0

    def message(self) -> messaging_pb2.LogRange:
        return messaging_pb2.LogRange(count=self.count, min_seq=self.min_seq, max_seq=self.max_seq)


@dataclass
class Report:
    postgres: Range
    hot_cache: Range | None
    floor_seq: int = 0
    key_versions: list[int] = field(default_factory=list)
    missing_in_cache: list[int] = field(default_factory=list)
    extra_in_cache: list[int] = field(default_factory=list)
    differing: list[int] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not (self.missing_in_cache or self.extra_in_cache or self.differing)

    def message(self) -> messaging_pb2.InspectRoomResponse:
        response = messaging_pb2.InspectRoomResponse(
            postgres=self.postgres.message(),
            hot_cache_available=self.hot_cache is not None,
            missing_in_cache=self.missing_in_cache[:LIST_MAX],
            extra_in_cache=self.extra_in_cache[:LIST_MAX],
            differing=self.differing[:LIST_MAX],
            consistent=self.consistent,
            floor_seq=self.floor_seq,
            key_versions=self.key_versions,
        )
        if self.hot_cache is not None:
            response.hot_cache.CopyFrom(self.hot_cache.message())
        return response


def comparable(entry: messaging_pb2.Message) -> messaging_pb2.Message:
    """What of an entry the stream must agree with Postgres on: everything but a message's state
    (only whether it is deleted) and its media record (only its id)."""
    copy = messaging_pb2.Message()
    copy.CopyFrom(entry)
    copy.ClearField("media")
    copy.ClearField("my_reactions")
    if entry.HasField("media"):
        copy.media.id = entry.media.id
    if is_message(entry):
        copy.ClearField("state")
        if entry.state.deleted:
            copy.state.deleted = True
    return copy


class RoomInspection:
    def __init__(self, store: MessageStore, cache: HotCache) -> None:
        self._store = store
        self._cache = cache

    async def _postgres(self, room: str) -> Range:
        row = await self._store.pool.fetchrow(_LOG_RANGE, room)
        return Range(count=int(row["count"]), min_seq=int(row["min_seq"]), max_seq=int(row["max_seq"]))

    async def inspect(self, room: str) -> Report:
        postgres = await self._postgres(room)
        floor = await retention.floor_seq(self._store.pool, room)
        versions = [int(row["version"]) for row in await self._store.pool.fetch(_KEY_VERSIONS, room)]
        entries = await self._cache.entries(room)
        if entries is None:
            return Report(postgres=postgres, hot_cache=None, floor_seq=floor, key_versions=versions)
        seqs = [seq for seq, _ in entries]
        cached = Range(count=len(entries), min_seq=min(seqs, default=0), max_seq=max(seqs, default=0))
        report = Report(postgres=postgres, hot_cache=cached, floor_seq=floor, key_versions=versions)
        if not entries:
            # A cold cache (expired, or never warmed) is not wrong: reads go to Postgres meanwhile.
            return report
        # The stream must reach the newest entry; a stream far behind is compared over a bounded span.
        span = cached.count + self._cache.size + LIST_MAX
        high = min(max(cached.max_seq, postgres.max_seq), cached.min_seq + span)
        logged = {entry.seq: entry for entry in await self._store.range(room, cached.min_seq, high)}
        _compare(report, entries, logged)
        return report

    async def rebuild(self, room: str) -> tuple[int, Range]:
        """Replace the room's stream with its newest entries; (entries written, the stream after)."""
        newest = await self._store.newest(room, self._cache.size)
        messages = contiguous_tail(newest)
        # Nothing left in Postgres (retention, an erased room): nothing may stay in the cache either.
        written = (
            await self._cache.merge(room, messages, replace=True)
            if messages
            else await self._cache.discard(room)
        )
        if not written:
            raise Unavailable(
                "Redis could not be reached; the hot cache was not rebuilt.", code="redis_unavailable"
            )
        entries = await self._cache.entries(room)
        if entries is None:
            raise Unavailable("Redis could not be reached after the rebuild.", code="redis_unavailable")
        seqs = [seq for seq, _ in entries]
        return len(messages), Range(len(entries), min(seqs, default=0), max(seqs, default=0))


def _compare(
    report: Report,
    entries: Sequence[tuple[int, messaging_pb2.Message | None]],
    logged: dict[int, messaging_pb2.Message],
) -> None:
    cached_seqs: set[int] = set()
    for seq, entry in entries:
        cached_seqs.add(seq)
        found = logged.get(seq)
        if found is None:
            report.extra_in_cache.append(seq)
        elif entry is None or comparable(entry) != comparable(found):
            report.differing.append(seq)
    report.missing_in_cache.extend(seq for seq in sorted(logged) if seq not in cached_seqs)

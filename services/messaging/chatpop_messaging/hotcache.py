"""The Redis side of messaging: each room's hot stream of recent messages and its live channel.

Keys carry the room id in a hash tag (`msg:{<room_id>}:…`) so one room's keys share a Redis Cluster slot.
The stream holds each encoded `Message`, sealed with the room's data key (crypto.py's envelope; so are
tombstones and what the live channel carries), under entry ids `<seq>-0` and is kept contiguous: an
append that would leave a hole is refused (and the room is rebuilt from Postgres instead), so a read
that returns the whole range it asked for is exactly what Postgres holds.

On a Redis Cluster every script touches one room's keys (one slot), and the live channel is a shard
channel of that slot: the append scripts publish with SPUBLISH there (PUBLISH on a single Redis, where
classic pub/sub works on Redis 6 too). Scripts run as EVALSHA; a node that does not know one (restarted,
or a replica just promoted) is sent the script itself (run_scripts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import Any, TypeVar

from google.protobuf.message import DecodeError
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.datastores import RedisClient
from chatpop_messaging import crypto, keys
from chatpop_messaging.metrics import MESSAGES_PUBLISHED, REDIS_FAILURES

log = logging.getLogger(__name__)

T = TypeVar("T")

_FIELD = b"m"

# KEYS[1] stream; ARGV: seq, payload, maxlen, ttl seconds, channel.
# Appends only when the entry continues the stream (or the stream is empty), publishes always:
# live subscribers drop duplicates and fill holes themselves. `{publish}`: PUBLISH, or SPUBLISH on a
# cluster (the channel shares the stream's slot).
_APPEND = """
local seq = tonumber(ARGV[1])
local status = 1
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then
  local last = tonumber(string.match(top[1][1], '^(%d+)-'))
  if last >= seq then
    status = 0
  elseif last ~= seq - 1 then
    status = -1
  end
end
if status == 1 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[1] .. '-0', 'm', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
redis.call('{publish}', ARGV[5], ARGV[2])
return status
"""

# KEYS[1] stream; ARGV: maxlen, ttl seconds, channel, then seq/payload pairs, ascending and contiguous
# (what one group commit produced). Like _APPEND for each entry in one step: the entries that continue
# the stream are appended (1); 0 when the stream already holds them all; -1 when one would leave a
# hole (nothing from there on is appended: the room is rebuilt). Every entry is published, one pub/sub
# message each, in order.
_APPEND_MANY = """
local n = (#ARGV - 3) / 2
local status = 0
local tail = nil
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then
  tail = tonumber(string.match(top[1][1], '^(%d+)-'))
end
for i = 1, n do
  local seq = tonumber(ARGV[2 + 2 * i])
  if tail == nil or seq == tail + 1 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[2 + 2 * i] .. '-0', 'm', ARGV[3 + 2 * i])
    tail = seq
    status = 1
  elseif seq > tail + 1 then
    status = -1
    break
  end
end
if status == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
for i = 1, n do
  redis.call('{publish}', ARGV[3], ARGV[3 + 2 * i])
end
return status
"""

# KEYS[1] stream, KEYS[2] tombstones; ARGV: maxlen, ttl seconds, replace ('1' or '0'), then seq/payload
# pairs, ascending and contiguous. With replace, every entry up to the last given one is dropped first
# (a repair of entries that are wrong, not only missing). When the stream already reaches back to the
# first given entry, only the newer entries are appended. Otherwise the stream is replaced by the given
# entries, keeping any newer ones appended meanwhile as long as they continue the sequence. An entry
# with a tombstone is written as the tombstone: a rebuild that read Postgres before a deletion
# committed cannot bring its text back. Returns the seq of the stream's last entry.
_MERGE = """
local n = (#ARGV - 3) / 2
local first = tonumber(ARGV[4])
local last = tonumber(ARGV[2 + 2 * n])
if ARGV[3] == '1' then
  redis.call('XTRIM', KEYS[1], 'MINID', (last + 1) .. '-0')
end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local bottom = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local tail = nil
if #top > 0 then
  tail = tonumber(string.match(top[1][1], '^(%d+)-'))
  local head = tonumber(string.match(bottom[1][1], '^(%d+)-'))
  if head > first or tail < first - 1 then
    tail = nil
  end
end
if tail ~= nil then
  for i = 1, n do
    local seq = tonumber(ARGV[2 + 2 * i])
    if seq > tail then
      local payload = redis.call('HGET', KEYS[2], ARGV[2 + 2 * i]) or ARGV[3 + 2 * i]
      redis.call('XADD', KEYS[1], ARGV[2 + 2 * i] .. '-0', 'm', payload)
      tail = seq
    end
  end
else
  local newer = redis.call('XRANGE', KEYS[1], (last + 1) .. '-0', '+')
  redis.call('DEL', KEYS[1])
  for i = 1, n do
    local payload = redis.call('HGET', KEYS[2], ARGV[2 + 2 * i]) or ARGV[3 + 2 * i]
    redis.call('XADD', KEYS[1], ARGV[2 + 2 * i] .. '-0', 'm', payload)
  end
  tail = last
  for _, entry in ipairs(newer) do
    local seq = tonumber(string.match(entry[1], '^(%d+)-'))
    if seq ~= tail + 1 then
      break
    end
    redis.call('XADD', KEYS[1], entry[1], 'm', entry[2][2])
    tail = seq
  end
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return tail
"""


# KEYS[1] stream, KEYS[2] tombstones; ARGV: seq, tombstone payload, ttl seconds.
# Remembers the tombstone, and when the stream holds the entry, rewrites the stream with the tombstone
# in its place (a stream entry cannot be replaced, and ids cannot go back once added: the whole
# stream is written again, at most the cache size plus trimming slack, and only on a deletion).
_REDACT = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local id = ARGV[1] .. '-0'
if #redis.call('XRANGE', KEYS[1], id, id) == 0 then
  return 0
end
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
local ttl = redis.call('TTL', KEYS[1])
redis.call('DEL', KEYS[1])
for _, entry in ipairs(entries) do
  if entry[1] == id then
    redis.call('XADD', KEYS[1], entry[1], 'm', ARGV[2])
  else
    redis.call('XADD', KEYS[1], entry[1], 'm', entry[2][2])
  end
end
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return 1
"""


# KEYS[1] stream, KEYS[2] tombstones; ARGV: ttl seconds, then seq/payload pairs. Like _REDACT for many
# entries at once (a forgotten participant's renamed or erased entries): each new payload is
# remembered, and the stream is rewritten once if it holds any of them.
_REDACT_MANY = """
local replace = {}
for i = 1, (#ARGV - 1) / 2 do
  redis.call('HSET', KEYS[2], ARGV[2 * i], ARGV[2 * i + 1])
  replace[ARGV[2 * i] .. '-0'] = ARGV[2 * i + 1]
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
local hit = false
for _, entry in ipairs(entries) do
  if replace[entry[1]] ~= nil then
    hit = true
    break
  end
end
if not hit then
  return 0
end
local ttl = redis.call('TTL', KEYS[1])
redis.call('DEL', KEYS[1])
for _, entry in ipairs(entries) do
  redis.call('XADD', KEYS[1], entry[1], 'm', replace[entry[1]] or entry[2][2])
end
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return 1
"""


# KEYS[1] stream, KEYS[2] tombstones; ARGV: the room's retention floor. Entries and tombstones below
# it go (retention deleted them from Postgres). Returns the stream entries removed.
_TRIM_BELOW = """
local floor = tonumber(ARGV[1])
local removed = redis.call('XTRIM', KEYS[1], 'MINID', floor .. '-0')
for _, seq in ipairs(redis.call('HKEYS', KEYS[2])) do
  if tonumber(seq) < floor then
    redis.call('HDEL', KEYS[2], seq)
  end
end
return removed
"""


def stream_key(room_id: str) -> str:
    return f"msg:{{{room_id}}}:stream"


def tombstones_key(room_id: str) -> str:
    """Payloads of deleted messages, by seq: what the stream must hold for them from now on."""
    return f"msg:{{{room_id}}}:tombstones"


def live_channel(room_id: str) -> str:
    return f"msg:{{{room_id}}}:live"


def room_from_channel(channel: bytes | str) -> str | None:
    """The room id of a live channel name, or None for anything else."""
    name = channel.decode() if isinstance(channel, bytes) else channel
    if name.startswith("msg:{") and name.endswith("}:live"):
        return name[len("msg:{") : -len("}:live")]
    return None


def is_cluster(redis: RedisClient) -> bool:
    """Whether `redis` is a Redis Cluster client (REDIS_CLUSTER): sharded pub/sub, per-node scripts."""
    return isinstance(redis, RedisCluster)


async def run_scripts(
    redis: RedisClient,
    script: AsyncScript,
    calls: Sequence[tuple[Sequence[str], Sequence[Any]]],
) -> list[Any]:
    """Run `script` once per (keys, args) in ONE round trip: a pipeline of EVALSHA (not redis-py's
    pipeline scripts, which ask SCRIPT EXISTS first: a second round trip on every call, and which a
    cluster pipeline does not load at all). The calls a node refused with NOSCRIPT (a restarted
    server, a replica promoted after a failover, a node new to the cluster: none of them ran) run
    again as EVAL with the script itself, which also leaves it cached there for the next EVALSHA. On a
    cluster the pipeline goes to each node holding a slot of the calls, so some may hit a node that
    knows the script and some one that does not: only the refused ones run again, in their order."""
    if len(calls) == 1:
        keys_, args = calls[0]
        return [await script(keys=list(keys_), args=list(args))]
    pipe = redis.pipeline(transaction=False)
    for keys_, args in calls:
        # (A cluster pipeline refuses its evalsha method; the command itself routes by its keys.)
        pipe.execute_command("EVALSHA", script.sha, len(keys_), *keys_, *args)
    results = list(await pipe.execute(raise_on_error=False))
    refused = [index for index, result in enumerate(results) if isinstance(result, NoScriptError)]
    if refused:
        again = redis.pipeline(transaction=False)
        for index in refused:
            keys_, args = calls[index]
            again.execute_command("EVAL", script.script, len(keys_), *keys_, *args)
        for index, result in zip(refused, await again.execute(raise_on_error=False), strict=True):
            results[index] = result
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


# What a Redis call may fail with: the server's and the connection's errors, and a cluster's own (a
# slot no node serves for a moment while a master fails over).
REDIS_ERRORS = (RedisError, RedisClusterException, OSError)


class AppendResult(Enum):
    APPENDED = 1
    ALREADY_CACHED = 0
    GAP = -1


class RedisGuard:
    """Counts Redis failures and stops calling Redis for a moment after one.

    Redis is a cache here: while it is unreachable every caller goes straight to Postgres (or fails
    open), instead of each paying a connection attempt.
    """

    def __init__(self, retry_after: float) -> None:
        self._retry_after = retry_after
        self._blocked_until = 0.0
        self._failing = False

    def available(self) -> bool:
        return time.monotonic() >= self._blocked_until

    def failed(self, op: str, exc: BaseException) -> None:
        REDIS_FAILURES.labels(op).inc()
        self._blocked_until = time.monotonic() + self._retry_after
        if not self._failing:
            self._failing = True
            log.warning("redis unavailable (%s): %s", op, exc)

    def skipped(self, op: str) -> None:
        REDIS_FAILURES.labels(op).inc()

    def succeeded(self) -> None:
        if self._failing:
            self._failing = False
            log.info("redis reachable again")

    async def call(self, op: str, action: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """Run `action` unless Redis is known to be down; (ok, result), never raising a Redis error."""
        if not self.available():
            self.skipped(op)
            return False, None
        try:
            result = await action()
        except REDIS_ERRORS as exc:
            self.failed(op, exc)
            return False, None
        except Exception as exc:
            # redis-py may fail otherwise when a connection is torn down under a command (a cluster
            # client refreshing its topology while a master fails over): Redis failing all the same,
            # which must not fail the caller; logged whole, in case it is something else.
            log.exception("redis call failed unexpectedly (%s)", op)
            self.failed(op, exc)
            return False, None
        self.succeeded()
        return True, result


def _entry_seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    head, _, tail = text.partition("-")
    return int(head) if tail == "0" and head.isdigit() else -1


class HotCache:
    def __init__(
        self,
        redis: RedisClient,
        guard: RedisGuard,
        *,
        size: int,
        ttl: int,
    ) -> None:
        self._redis = redis
        self._guard = guard
        self._size = size
        self._ttl = ttl
        publish = "SPUBLISH" if is_cluster(redis) else "PUBLISH"
        self._append = redis.register_script(_APPEND.replace("{publish}", publish))
        self._append_many = redis.register_script(_APPEND_MANY.replace("{publish}", publish))
        self._merge = redis.register_script(_MERGE)
        self._redact = redis.register_script(_REDACT)
        self._redact_many = redis.register_script(_REDACT_MANY)
        self._trim_below = redis.register_script(_TRIM_BELOW)

    @property
    def size(self) -> int:
        return self._size

    def available(self) -> bool:
        return self._guard.available()

    async def _seal(self, room_id: str, messages: Sequence[messaging_pb2.Message]) -> list[bytes]:
        """The Redis values of entries of a room: each sealed whole with the room's newest key
        (crypto.py, the envelope format). Nothing is written to Redis in plaintext."""
        sealer = await keys.keyring().sealer(room_id)
        return [sealer.entry(message) for message in messages]

    async def _opener(self, room_id: str, payloads: Sequence[bytes | None]) -> keys.Opener:
        return await keys.keyring().opener(room_id, payloads)

    async def discard(self, room_id: str) -> bool:
        """Drop the room's stream and tombstones (entries that no longer open: plaintext from before
        encryption, or sealed with a key that is gone); reads go to Postgres and rebuild it."""

        async def run() -> Any:
            return await self._redis.delete(stream_key(room_id), tombstones_key(room_id))

        ok, _ = await self._guard.call("discard", run)
        return ok

    async def append(self, message: messaging_pb2.Message) -> AppendResult | None:
        """Append to the room's stream and publish (sealed); None when Redis could not be reached."""
        room_id = message.room_id
        (payload,) = await self._seal(room_id, [message])

        async def run() -> Any:
            return await self._append(
                keys=[stream_key(room_id)],
                args=[message.seq, payload, self._size, self._ttl, live_channel(room_id)],
            )

        ok, status = await self._guard.call("append", run)
        if not ok or status is None:
            return None
        MESSAGES_PUBLISHED.inc()
        return AppendResult(int(status))

    async def append_groups(
        self, groups: Sequence[Sequence[messaging_pb2.Message]]
    ) -> list[AppendResult | None]:
        """Append and publish (sealed) several groups of entries, each of one room, ascending and
        contiguous, in ONE Redis round trip (a pipeline of one script call per group, run in order);
        per group its result, None for all when Redis could not be reached."""
        calls: list[tuple[str, list[Any]]] = []
        for group in groups:
            room_id = group[0].room_id
            args: list[Any] = [self._size, self._ttl, live_channel(room_id)]
            for message, payload in zip(group, await self._seal(room_id, group), strict=True):
                args.extend((message.seq, payload))
            calls.append((room_id, args))

        async def run() -> Any:
            return await run_scripts(
                self._redis, self._append_many, [([stream_key(room_id)], args) for room_id, args in calls]
            )

        ok, statuses = await self._guard.call("append", run)
        if not ok or statuses is None:
            return [None] * len(groups)
        MESSAGES_PUBLISHED.inc(sum(len(group) for group in groups))
        return [AppendResult(int(status)) for status in statuses]

    async def read(self, room_id: str, low: int, high: int) -> list[messaging_pb2.Message] | None:
        """Messages low..high ascending, only if the stream holds every one of them; else None."""
        wanted = high - low + 1

        async def run() -> Any:
            return await self._redis.xrevrange(stream_key(room_id), f"{high}-0", f"{low}-0", count=wanted)

        ok, entries = await self._guard.call("read", run)
        if not ok or entries is None or len(entries) != wanted:
            return None
        opener = await self._opener(room_id, [fields.get(_FIELD) for _, fields in entries])
        messages: list[messaging_pb2.Message] = []
        expected = high
        for entry_id, fields in entries:
            payload = fields.get(_FIELD)
            if _entry_seq(entry_id) != expected or payload is None:
                return None
            message = self._decode(opener, expected, payload)
            if message is None:
                # It never will open: a rebuild from Postgres writes it sealed anew.
                await self.discard(room_id)
                return None
            messages.append(message)
            expected -= 1
        messages.reverse()
        return messages

    def _decode(self, opener: keys.Opener, seq: int, payload: bytes) -> messaging_pb2.Message | None:
        """The message a stream entry holds; None when the payload is not one, or does not open with
        the room's keys (every read of the stream decodes here)."""
        try:
            message = opener.entry(payload)
        except (crypto.Unreadable, DecodeError):
            return None
        return message if message.seq == seq else None

    async def entries(self, room_id: str) -> list[tuple[int, messaging_pb2.Message | None]] | None:
        """Every entry of the room's stream, ascending, as (seq, message), the message None when its
        payload cannot be read; None if Redis failed. For inspection: the stream is bounded by the
        cache size (plus trimming slack)."""

        async def run() -> Any:
            return await self._redis.xrange(stream_key(room_id), "-", "+")

        ok, entries = await self._guard.call("read", run)
        if not ok or entries is None:
            return None
        opener = await self._opener(room_id, [fields.get(_FIELD) for _, fields in entries])
        found: list[tuple[int, messaging_pb2.Message | None]] = []
        for entry_id, fields in entries:
            seq = _entry_seq(entry_id)
            payload = fields.get(_FIELD)
            found.append((seq, None if payload is None else self._decode(opener, seq, payload)))
        return found

    async def bounds(self, room_id: str) -> tuple[int, int] | None:
        """Seqs of the stream's first and last entries ((0, 0) when empty); None if Redis failed."""
        key = stream_key(room_id)

        async def run() -> Any:
            pipe = self._redis.pipeline(transaction=False)
            pipe.xrange(key, "-", "+", count=1)
            pipe.xrevrange(key, "+", "-", count=1)
            return await pipe.execute()

        ok, result = await self._guard.call("read", run)
        if not ok or result is None:
            return None
        first, last = result
        if not first or not last:
            return 0, 0
        return _entry_seq(first[0][0]), _entry_seq(last[0][0])

    async def merge(
        self, room_id: str, messages: Sequence[messaging_pb2.Message], *, replace: bool = False
    ) -> bool:
        """Bring the stream up to date with `messages` (ascending, contiguous). False if Redis failed.

        With `replace`, every entry up to the last of `messages` is dropped first (in the same
        script), so the stream holds exactly them and any newer entries that continue them:
        a repair of entries that are wrong, not only missing."""
        if not messages:
            return True
        args: list[Any] = [self._size, self._ttl, "1" if replace else "0"]
        for message, payload in zip(messages, await self._seal(room_id, messages), strict=True):
            args.extend((message.seq, payload))

        async def run() -> Any:
            return await self._merge(keys=[stream_key(room_id), tombstones_key(room_id)], args=args)

        ok, _ = await self._guard.call("rebuild", run)
        return ok

    async def redact(self, tombstone: messaging_pb2.Message) -> bool:
        """Put a deleted message's tombstone in place of its entry; False if Redis failed."""
        room_id = tombstone.room_id
        (payload,) = await self._seal(room_id, [tombstone])

        async def run() -> Any:
            return await self._redact(
                keys=[stream_key(room_id), tombstones_key(room_id)],
                args=[tombstone.seq, payload, self._ttl],
            )

        ok, _ = await self._guard.call("redact", run)
        return ok

    async def redact_many(self, room_id: str, entries: Sequence[messaging_pb2.Message]) -> bool:
        """Put the new versions of entries (of one room) in place of the cached ones, in one rewrite
        of the stream; False if Redis failed."""
        if not entries:
            return True
        args: list[Any] = [self._ttl]
        for entry, payload in zip(entries, await self._seal(room_id, entries), strict=True):
            args.extend((entry.seq, payload))

        async def run() -> Any:
            return await self._redact_many(keys=[stream_key(room_id), tombstones_key(room_id)], args=args)

        ok, _ = await self._guard.call("redact", run)
        return ok

    async def trim_below(self, room_id: str, floor_seq: int) -> bool:
        """Drop the room's cached entries and tombstones below its retention floor; False if Redis
        failed (readers never read below the floor, and the stream's TTL ends what is left)."""

        async def run() -> Any:
            return await self._trim_below(
                keys=[stream_key(room_id), tombstones_key(room_id)], args=[floor_seq]
            )

        ok, _ = await self._guard.call("trim", run)
        return ok

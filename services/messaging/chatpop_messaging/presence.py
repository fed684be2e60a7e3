"""Who is online in a room: the union of what every edge process reports, kept in Redis.

Each edge process (an "instance", named by a random id) reports, per room, which participants have
an open socket on it: a delta on the first or last socket of a participant, and a periodic refresh
that only renews its record unless the record disagrees with the edge's count. Per room, all keys
hash-tagged by the room id so one script stays in one Redis Cluster slot:

- `msg:{<room>}:presence:members` hash: participant → the instances holding it (",a,b,"); a
  participant is online exactly while it has a field here;
- `msg:{<room>}:presence:edges` hash: instance → when its record expires (Redis clock, ms);
- `msg:{<room>}:presence:sizes` hash: instance → how many participants it holds;
- `msg:{<room>}:presence:version`: bumped once per change of the online set.

One Lua script applies a report, drops the records of instances that stopped refreshing (an edge
killed without a goodbye) and answers who came online and who went offline, with the new version,
so concurrent reports from many processes never race. Snapshots run the same script, so a reader
never sees people of a dead edge past its expiry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatpop_common.datastores import RedisClient
from chatpop_common.errors import Unavailable
from chatpop_messaging.hotcache import RedisGuard, run_scripts
from chatpop_messaging.metrics import PRESENCE_CHANGES, PRESENCE_EXPIRED

# Presence keys of a room nobody reports on any more vanish after this long.
KEY_IDLE_MS = 24 * 3600 * 1000

# KEYS: members, edges, sizes, version.
# ARGV: instance ('' when only reading), ttl ms, mode ('delta' | 'complete' | 'read'), expected size
# (-1: unknown), key idle ms, number of joined ids, the joined ids, then the left ids.
# Returns {resync, version, expired instances, #online, #offline, online..., offline..., everyone...}
# where `everyone` (the whole online set) comes only in 'read' mode.
_APPLY = """
local members, edges, sizes, version_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local instance = ARGV[1]
local ttl = tonumber(ARGV[2])
local mode = ARGV[3]
local expected = tonumber(ARGV[4])
local idle = tonumber(ARGV[5])
local n_joined = tonumber(ARGV[6])
local joined, left = {}, {}
for i = 7, 6 + n_joined do joined[#joined + 1] = ARGV[i] end
for i = 7 + n_joined, #ARGV do left[#left + 1] = ARGV[i] end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- Whether each participant touched was online before this script: the answer compares with it.
local before, order = {}, {}
local function touch(p)
  if before[p] == nil then
    before[p] = redis.call('HEXISTS', members, p) == 1
    order[#order + 1] = p
  end
end

local function add(p, inst)
  touch(p)
  local list = redis.call('HGET', members, p) or ','
  if string.find(list, ',' .. inst .. ',', 1, true) then return 0 end
  redis.call('HSET', members, p, list .. inst .. ',')
  return 1
end

local function remove(p, inst)
  local list = redis.call('HGET', members, p)
  if not list then return 0 end
  local needle = ',' .. inst .. ','
  local at = string.find(list, needle, 1, true)
  if not at then return 0 end
  touch(p)
  local rest = string.sub(list, 1, at) .. string.sub(list, at + #needle)
  if rest == ',' then
    redis.call('HDEL', members, p)
  else
    redis.call('HSET', members, p, rest)
  end
  return 1
end

-- Everyone an instance holds: a scan of the room (only for expiry and full reports, both rare).
local function holders(inst)
  local found, cursor, needle = {}, '0', ',' .. inst .. ','
  repeat
    local page = redis.call('HSCAN', members, cursor, 'COUNT', 500)
    cursor = page[1]
    local pairs_ = page[2]
    for i = 1, #pairs_, 2 do
      if string.find(pairs_[i + 1], needle, 1, true) then found[#found + 1] = pairs_[i] end
    end
  until cursor == '0'
  return found
end

local expired = 0
local records = redis.call('HGETALL', edges)
for i = 1, #records, 2 do
  local inst = records[i]
  if inst ~= instance and tonumber(records[i + 1]) <= now then
    for _, p in ipairs(holders(inst)) do remove(p, inst) end
    redis.call('HDEL', edges, inst)
    redis.call('HDEL', sizes, inst)
    expired = expired + 1
  end
end

local resync = 0
if instance ~= '' and mode ~= 'read' then
  local size = tonumber(redis.call('HGET', sizes, instance) or '0')
  if mode == 'complete' then
    local wanted = {}
    for _, p in ipairs(joined) do wanted[p] = true end
    for _, p in ipairs(holders(instance)) do
      if not wanted[p] then remove(p, instance) end
    end
    size = 0
    for p, _ in pairs(wanted) do
      add(p, instance)
      size = size + 1
    end
  else
    for _, p in ipairs(joined) do size = size + add(p, instance) end
    for _, p in ipairs(left) do size = size - remove(p, instance) end
  end
  if size > 0 then
    redis.call('HSET', edges, instance, now + ttl)
    redis.call('HSET', sizes, instance, size)
  else
    size = 0
    redis.call('HDEL', edges, instance)
    redis.call('HDEL', sizes, instance)
  end
  if expected >= 0 and size ~= expected then resync = 1 end
end

local came, went = {}, {}
for _, p in ipairs(order) do
  local on = redis.call('HEXISTS', members, p) == 1
  if on and not before[p] then
    came[#came + 1] = p
  elseif before[p] and not on then
    went[#went + 1] = p
  end
end
local version = tonumber(redis.call('GET', version_key) or '0')
if #came > 0 or #went > 0 then version = redis.call('INCR', version_key) end
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, idle) end

local result = {resync, version, expired, #came, #went}
for _, p in ipairs(came) do result[#result + 1] = p end
for _, p in ipairs(went) do result[#result + 1] = p end
if mode == 'read' then
  for _, p in ipairs(redis.call('HKEYS', members)) do result[#result + 1] = p end
end
return result
"""


def presence_keys(room_id: str) -> list[str]:
    prefix = f"msg:{{{room_id}}}:presence"
    return [f"{prefix}:members", f"{prefix}:edges", f"{prefix}:sizes", f"{prefix}:version"]


@dataclass(frozen=True, slots=True)
class RoomReport:
    """One edge instance's news about one room."""

    room_id: str
    joined: Sequence[str] = ()
    left: Sequence[str] = ()
    complete: bool = False
    # How many participants the instance holds after this report; -1 when it does not say.
    count: int = -1


@dataclass(frozen=True, slots=True)
class PresenceStep:
    """What one application of the script changed in a room."""

    room_id: str
    online: list[str]
    offline: list[str]
    version: int
    # The instance's record disagreed with its count: it should send a complete report.
    resync: bool = False
    # The whole online set after the step (snapshots only).
    everyone: list[str] | None = None

    @property
    def changed(self) -> bool:
        return bool(self.online or self.offline)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _step(room_id: str, raw: Sequence[Any], *, read: bool) -> PresenceStep:
    resync, version, expired, n_came, n_went = (int(value) for value in raw[:5])
    names = [_text(value) for value in raw[5:]]
    came, went = names[:n_came], names[n_came : n_came + n_went]
    if expired:
        PRESENCE_EXPIRED.inc(expired)
    if came:
        PRESENCE_CHANGES.labels("online").inc(len(came))
    if went:
        PRESENCE_CHANGES.labels("offline").inc(len(went))
    return PresenceStep(
        room_id=room_id,
        online=came,
        offline=went,
        version=version,
        resync=bool(resync),
        everyone=names[n_came + n_went :] if read else None,
    )


def _unavailable() -> Unavailable:
    return Unavailable("Presence is unavailable for a moment; try again.", code="presence_unavailable")


class PresenceBook:
    def __init__(self, redis: RedisClient, guard: RedisGuard) -> None:
        self._redis = redis
        self._guard = guard
        self._apply = redis.register_script(_APPLY)

    async def report(self, instance: str, ttl_ms: int, reports: Sequence[RoomReport]) -> list[PresenceStep]:
        """Apply an instance's reports (one script per room, pipelined: on a cluster each to the node
        of its room); Unavailable if Redis is away."""
        if not reports:
            return []

        calls: list[tuple[list[str], list[Any]]] = []
        for report in reports:
            mode = "complete" if report.complete else "delta"
            args: list[Any] = [instance, ttl_ms, mode, report.count, KEY_IDLE_MS, len(report.joined)]
            args.extend(report.joined)
            args.extend(report.left)
            calls.append((presence_keys(report.room_id), args))

        async def run() -> Any:
            return await run_scripts(self._redis, self._apply, calls)

        ok, results = await self._guard.call("presence", run)
        if not ok or results is None:
            raise _unavailable()
        return [_step(report.room_id, raw, read=False) for report, raw in zip(reports, results, strict=True)]

    async def read(self, room_id: str) -> PresenceStep:
        """The room's online set and version, after dropping the records of instances that expired."""

        async def run() -> Any:
            return await self._apply(keys=presence_keys(room_id), args=["", 0, "read", -1, KEY_IDLE_MS, 0])

        ok, raw = await self._guard.call("presence", run)
        if not ok or raw is None:
            raise _unavailable()
        return _step(room_id, raw, read=True)

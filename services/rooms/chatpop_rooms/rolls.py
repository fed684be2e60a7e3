"""Dice rolls for usernames: a per-device, per-room roll limit and short holds on rolled names.

Kept in Redis under `rooms:rolls:{<room id>}:…` (one hash tag per room, so every script touches a
single slot and also runs on Redis Cluster):
- `count:<subject>`  rolls in the current window (fixed window);
- `hold:<name>`      the subject a rolled name is held for (lower-case name, expires on its own);
- `held:<subject>`   the names a subject holds, to give them back once it has joined.

Taking a roll is one script: it checks the limit, holds the first candidate nobody holds (not even
the roller: a new roll is a new name) and counts the roll, all at once, so concurrent rolls can
neither exceed the limit nor be handed the same name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from chatpop_common.datastores import RedisClient
from chatpop_common.keyslots import tagged

# KEYS[1] counter; ARGV: limit. Returns {1, rolls left} or {0, milliseconds until the window ends}.
_PEEK = """
local limit = tonumber(ARGV[1])
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= limit then
  return {0, math.max(redis.call('PTTL', KEYS[1]), 1000)}
end
return {1, limit - count}
"""

# KEYS: counter, the roller's held set, then one hold key per candidate.
# ARGV: limit, window seconds, hold seconds, subject, then the candidates' lower-case names.
# Returns {-1, ms until the window ends} when the limit is reached, {i, rolls left} when candidate
# i (1-based) is now held, {0, 0} when every candidate is held by someone already.
_TAKE = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local hold = tonumber(ARGV[3])
local subject = ARGV[4]
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= limit then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    redis.call('EXPIRE', KEYS[1], window)
    ttl = window * 1000
  end
  return {-1, ttl}
end
for i = 3, #KEYS do
  if redis.call('SET', KEYS[i], subject, 'NX', 'EX', hold) then
    redis.call('SADD', KEYS[2], ARGV[i + 2])
    redis.call('EXPIRE', KEYS[2], hold)
    count = redis.call('INCR', KEYS[1])
    if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then
      redis.call('EXPIRE', KEYS[1], window)
    end
    return {i - 2, limit - count}
  end
end
return {0, 0}
"""

# KEYS: the roller's held set, then hold keys; ARGV[1] subject. Deletes only holds still the roller's.
_RELEASE = """
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
  end
end
redis.call('DEL', KEYS[1])
return 0
"""


@dataclass(frozen=True, slots=True)
class Roll:
    """A held name with the rolls left, or nothing because the limit was reached or all were held."""

    username: str | None = None
    remaining: int = 0
    retry_after: int = 0

    @property
    def exhausted(self) -> bool:
        return self.retry_after > 0


def _seconds(milliseconds: int) -> int:
    return max(1, math.ceil(milliseconds / 1000))


class UsernameRolls:
    def __init__(
        self,
        redis: RedisClient,
        *,
        limit: int,
        window_seconds: int,
        hold_seconds: int,
    ) -> None:
        self._redis = redis
        self._peek = redis.register_script(_PEEK)
        self._take = redis.register_script(_TAKE)
        self._release = redis.register_script(_RELEASE)
        self.limit = limit
        self.window_seconds = window_seconds
        self.hold_seconds = hold_seconds

    @staticmethod
    def _key(room_id: str, kind: str, name: str) -> str:
        return tagged("rooms:rolls", room_id, kind, name)

    async def peek(self, room_id: str, subject: str) -> Roll:
        """Rolls left without taking one; `retry_after` is set when none are left."""
        allowed, value = await self._peek(keys=[self._key(room_id, "count", subject)], args=[self.limit])
        if int(allowed):
            return Roll(remaining=int(value))
        return Roll(retry_after=_seconds(int(value)))

    async def take(self, room_id: str, subject: str, candidates: Sequence[str]) -> Roll:
        """Hold the first candidate nobody holds for `subject`, counting one roll."""
        lowered = [name.lower() for name in candidates]
        keys = [
            self._key(room_id, "count", subject),
            self._key(room_id, "held", subject),
            *(self._key(room_id, "hold", name) for name in lowered),
        ]
        args: list[str | int] = [self.limit, self.window_seconds, self.hold_seconds, subject, *lowered]
        index, value = await self._take(keys=keys, args=args)
        index, value = int(index), int(value)
        if index < 0:
            return Roll(retry_after=_seconds(value))
        if index == 0:
            return Roll()
        return Roll(username=candidates[index - 1], remaining=value)

    async def holder(self, room_id: str, username: str) -> str | None:
        """Who a name is held for in the room, if anyone."""
        value = await self._redis.get(self._key(room_id, "hold", username.lower()))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def release(self, room_id: str, subject: str) -> None:
        """Give back every name the subject holds in the room (it has joined under one of them)."""
        held_key = self._key(room_id, "held", subject)
        names = await self._redis.smembers(held_key)
        hold_keys = [
            self._key(room_id, "hold", name.decode() if isinstance(name, bytes) else str(name))
            for name in names
        ]
        await self._release(keys=[held_key, *hold_keys], args=[subject])

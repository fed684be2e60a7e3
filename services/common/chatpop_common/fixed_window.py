"""Fixed-window counters in Redis: "at most N of something per key per window", decided atomically.

One Lua script checks the count and takes a slot in the same step, so concurrent callers can never
slip past the limit between a read and a write. A refused call takes nothing, so hammering a
closed window does not extend it. Each service keeps its keys under its own prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chatpop_common.datastores import RedisClient

# KEYS[1] counter; ARGV: limit, window seconds.
# Returns {1, slots left} when a slot was taken, {0, milliseconds until the window ends} otherwise.
_HIT = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= limit then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    redis.call('EXPIRE', KEYS[1], window)
    ttl = window * 1000
  end
  return {0, ttl}
end
count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], window)
end
return {1, limit - count}
"""


@dataclass(frozen=True, slots=True)
class LimitDecision:
    """Allowed with `remaining` slots left in the window, or refused for `retry_after` seconds."""

    allowed: bool
    remaining: int = 0
    retry_after: int = 0


class FixedWindowLimiter:
    def __init__(self, redis: RedisClient, *, limit: int, window_seconds: int) -> None:
        if limit < 1 or window_seconds < 1:
            raise ValueError("limit and window must be at least 1")
        self._hit = redis.register_script(_HIT)
        self.limit = limit
        self.window_seconds = window_seconds

    async def hit(self, key: str) -> LimitDecision:
        """Take one slot under `key`, unless the window is full. Raises redis errors to the caller."""
        allowed, value = await self._hit(keys=[key], args=[self.limit, self.window_seconds])
        if int(allowed):
            return LimitDecision(allowed=True, remaining=int(value))
        return LimitDecision(allowed=False, retry_after=max(1, math.ceil(int(value) / 1000)))

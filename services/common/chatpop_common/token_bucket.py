"""Token buckets in Redis: "N per window on average, with a burst of B", decided atomically.

A bucket holds up to `burst` tokens and refills at `limit / window` tokens a second; each hit takes
one. Unlike a fixed window this lets a group arrive at once (the burst) and then keeps admitting a
steady trickle, instead of locking everyone out until the window ends. One Lua script refills and
takes in the same step, on the Redis clock so every process agrees. A refused hit takes nothing.
"""

from __future__ import annotations

import math

from chatpop_common.datastores import RedisClient
from chatpop_common.fixed_window import LimitDecision

# KEYS[1] bucket; ARGV: tokens per second, burst.
# Returns {1, whole tokens left} when a token was taken, {0, milliseconds until one is available}.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local value = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
  value = math.floor(tokens)
else
  value = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, value}
"""


class TokenBucketLimiter:
    def __init__(
        self,
        redis: RedisClient,
        *,
        limit: float,
        window_seconds: float,
        burst: int,
    ) -> None:
        if limit <= 0 or window_seconds <= 0 or burst < 1:
            raise ValueError("limit and window must be positive and the burst at least 1")
        self._take = redis.register_script(_TAKE)
        self.rate = limit / window_seconds
        self.burst = burst

    async def hit(self, key: str) -> LimitDecision:
        """Take one token from the bucket under `key`. Raises redis errors to the caller."""
        allowed, value = await self._take(keys=[key], args=[self.rate, self.burst])
        if int(allowed):
            return LimitDecision(allowed=True, remaining=int(value))
        return LimitDecision(allowed=False, retry_after=max(1, math.ceil(int(value) / 1000)))

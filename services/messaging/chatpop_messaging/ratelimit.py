"""Per-participant send rate limit: a token bucket in Redis, updated atomically by one Lua script.

It fails open: when Redis cannot be reached, sending keeps working without a limit.
"""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio as aioredis

from chatpop_common.errors import ResourceExhausted
from chatpop_common.wording import wait_words
from chatpop_messaging.hotcache import RedisGuard
from chatpop_messaging.metrics import RATE_LIMITED

# KEYS[1] bucket; ARGV: tokens per second, burst. Uses the Redis clock so every process agrees.
# Returns {1, 0} when a token was taken, {0, milliseconds until one is available} otherwise.
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
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, wait_ms}
"""


def bucket_key(room_id: str, participant_id: str) -> str:
    return f"msg:{{{room_id}}}:rate:{participant_id}"


class SendRateLimiter:
    def __init__(
        self,
        redis: aioredis.Redis,  # type: ignore[type-arg]
        guard: RedisGuard,
        *,
        per_minute: float,
        burst: int,
    ) -> None:
        self._guard = guard
        self._rate = per_minute / 60.0
        self._burst = burst
        self._take = redis.register_script(_TAKE)

    async def check(self, room_id: str, participant_id: str) -> None:
        """Take one send from the participant's bucket; ResourceExhausted when it is empty."""
        if self._rate <= 0:
            return

        async def run() -> Any:
            return await self._take(
                keys=[bucket_key(room_id, participant_id)], args=[self._rate, self._burst]
            )

        ok, result = await self._guard.call("rate_limit", run)
        if not ok or result is None:
            return
        allowed, wait_ms = int(result[0]), int(result[1])
        if allowed:
            return
        RATE_LIMITED.inc()
        retry_after = max(1, math.ceil(wait_ms / 1000))
        raise ResourceExhausted(
            f"You are sending messages too fast. Try again {wait_words(retry_after)}.",
            code="rate_limited",
            retry_after=retry_after,
        )

"""Per-participant send limits: a token bucket in Redis (`chatpop_common.token_bucket`), and the
host's slow mode.

It fails open: when Redis cannot be reached, sending keeps working without a limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import redis.asyncio as aioredis

from chatpop_common.errors import ResourceExhausted
from chatpop_common.fixed_window import LimitDecision
from chatpop_common.token_bucket import TokenBucketLimiter
from chatpop_common.wording import wait_words
from chatpop_messaging.hotcache import RedisGuard
from chatpop_messaging.metrics import RATE_LIMITED, SLOW_MODE_WAITS


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
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self._guard = guard
        # Told of each refusal (room, participant): the audit log counts them per minute.
        self._on_refused = on_refused
        self._bucket = (
            TokenBucketLimiter(redis, limit=per_minute, window_seconds=60, burst=burst)
            if per_minute > 0
            else None
        )

    async def check(self, room_id: str, participant_id: str) -> None:
        """Take one send from the participant's bucket; ResourceExhausted when it is empty."""
        bucket = self._bucket
        if bucket is None:
            return

        async def run() -> LimitDecision:
            return await bucket.hit(bucket_key(room_id, participant_id))

        ok, decision = await self._guard.call("rate_limit", run)
        if not ok or decision is None or decision.allowed:
            return
        RATE_LIMITED.inc()
        if self._on_refused is not None:
            self._on_refused(room_id, participant_id)
        raise ResourceExhausted(
            f"You are sending messages too fast. Try again {wait_words(decision.retry_after)}.",
            code="rate_limited",
            retry_after=decision.retry_after,
        )


# KEYS[1] marker; ARGV: client message id, milliseconds.
# Sets the marker unless one is live; a retry of the message that set it passes again.
# Returns 0 when the send may go ahead, else the milliseconds until the marker expires.
_SLOW = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then return ttl end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 0
"""


def slow_mode_key(room_id: str, participant_id: str) -> str:
    return f"msg:{{{room_id}}}:slow:{participant_id}"


class SlowMode:
    """The host's slow mode: one message per participant every N seconds (hosts are never held back).

    The marker remembers which message set it, so a retry of that very message (after a lost ack or a
    failed insert) is not refused. Like the rate limit it fails open when Redis is away.
    """

    def __init__(self, redis: aioredis.Redis, guard: RedisGuard) -> None:  # type: ignore[type-arg]
        self._guard = guard
        self._take = redis.register_script(_SLOW)

    async def check(self, room_id: str, participant_id: str, client_msg_id: str, seconds: int) -> None:
        if seconds <= 0:
            return

        async def run() -> int:
            return int(
                await self._take(
                    keys=[slow_mode_key(room_id, participant_id)], args=[client_msg_id, seconds * 1000]
                )
            )

        ok, wait_ms = await self._guard.call("rate_limit", run)
        if not ok or not wait_ms:
            return
        SLOW_MODE_WAITS.inc()
        retry_after = max(1, math.ceil(wait_ms / 1000))
        every = "one message a second" if seconds == 1 else f"one message every {seconds} seconds"
        raise ResourceExhausted(
            f"Slow mode is on: {every}. You can send again {wait_words(retry_after)}.",
            code="slow_mode",
            retry_after=retry_after,
        )

"""Per-participant send limits: a token bucket in Redis (`chatpop_common.token_bucket`), and the
host's slow mode.

It fails open: when Redis cannot be reached, sending keeps working without a limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chatpop_common.datastores import RedisClient
from chatpop_common.errors import ResourceExhausted
from chatpop_common.fixed_window import LimitDecision
from chatpop_common.token_bucket import TokenBucketLimiter
from chatpop_common.wording import wait_words
from chatpop_messaging.hotcache import RedisGuard, run_scripts
from chatpop_messaging.metrics import RATE_LIMITED, SLOW_MODE_WAITS


def bucket_key(room_id: str, participant_id: str) -> str:
    return f"msg:{{{room_id}}}:rate:{participant_id}"


class SendRateLimiter:
    def __init__(
        self,
        redis: RedisClient,
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

    @property
    def bucket(self) -> TokenBucketLimiter | None:
        return self._bucket

    def refused(self, room_id: str, participant_id: str, retry_after: int) -> ResourceExhausted:
        """The refusal of a send past the participant's limit (counted and told)."""
        RATE_LIMITED.inc()
        if self._on_refused is not None:
            self._on_refused(room_id, participant_id)
        return ResourceExhausted(
            f"You are sending messages too fast. Try again {wait_words(retry_after)}.",
            code="rate_limited",
            retry_after=retry_after,
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
        raise self.refused(room_id, participant_id, decision.retry_after)


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

    def __init__(self, redis: RedisClient, guard: RedisGuard) -> None:
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
        raise slow_mode_refusal(seconds, wait_ms)


def slow_mode_refusal(seconds: int, wait_ms: int) -> ResourceExhausted:
    SLOW_MODE_WAITS.inc()
    retry_after = max(1, math.ceil(wait_ms / 1000))
    every = "one message a second" if seconds == 1 else f"one message every {seconds} seconds"
    return ResourceExhausted(
        f"Slow mode is on: {every}. You can send again {wait_words(retry_after)}.",
        code="slow_mode",
        retry_after=retry_after,
    )


# The rate limit and slow mode of many sends of one room in one step (keys of one room share a
# Redis Cluster slot). KEYS: per send its bucket, then its slow-mode marker. ARGV: tokens per second
# (0: no rate limit), burst, then per send: slow mode milliseconds (0: none) and its client_msg_id.
# Per send, in order, exactly what the token bucket (chatpop_common.token_bucket) and _SLOW decide one
# at a time: 0 when it may go ahead, ms until a token when rate limited, -ms when slow mode holds it.
_CHECK_MANY = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local out = {}
for i = 1, #KEYS / 2 do
  local result = 0
  if rate > 0 then
    local bucket = KEYS[2 * i - 1]
    local state = redis.call('HMGET', bucket, 'tokens', 'ts')
    local tokens = tonumber(state[1])
    local ts = tonumber(state[2])
    if tokens == nil or ts == nil then
      tokens = burst
      ts = now
    end
    tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
    if tokens >= 1 then
      tokens = tokens - 1
    else
      result = math.ceil((1 - tokens) / rate * 1000)
    end
    redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', tostring(now))
    redis.call('PEXPIRE', bucket, math.ceil(burst / rate * 1000) + 1000)
  end
  local slow = tonumber(ARGV[1 + 2 * i])
  if result == 0 and slow > 0 then
    local marker = KEYS[2 * i]
    local current = redis.call('GET', marker)
    if current and current ~= ARGV[2 + 2 * i] then
      local ttl = redis.call('PTTL', marker)
      if ttl > 0 then result = -ttl end
    end
    if result == 0 then
      redis.call('SET', marker, ARGV[2 + 2 * i], 'PX', slow)
    end
  end
  out[i] = result
end
return out
"""


@dataclass(frozen=True, slots=True)
class SendToCheck:
    room_id: str
    participant_id: str
    client_msg_id: str
    # The room's slow mode for this sender (0: none, and always 0 for the host).
    slow_mode_seconds: int


class SendChecks:
    """The rate limit and slow mode of a batch of sends in ONE Redis round trip (one script call per
    room, pipelined), with the same buckets, markers and answers as SendRateLimiter and SlowMode; fails
    open like them."""

    def __init__(
        self,
        redis: RedisClient,
        guard: RedisGuard,
        limiter: SendRateLimiter,
    ) -> None:
        self._redis = redis
        self._guard = guard
        self._limiter = limiter
        self._check = redis.register_script(_CHECK_MANY)

    async def check(self, sends: Sequence[SendToCheck]) -> list[ResourceExhausted | None]:
        """Per send, in order: None when it may go ahead, else its refusal."""
        bucket = self._limiter.bucket
        answers: list[ResourceExhausted | None] = [None] * len(sends)
        by_room: dict[str, list[int]] = {}
        for index, send in enumerate(sends):
            if bucket is not None or send.slow_mode_seconds > 0:
                by_room.setdefault(send.room_id, []).append(index)
        if not by_room:
            return answers
        rate, burst = (bucket.rate, bucket.burst) if bucket is not None else (0.0, 1)
        calls: list[tuple[list[str], list[Any]]] = []
        for indexes in by_room.values():
            keys: list[str] = []
            args: list[Any] = [rate, burst]
            for index in indexes:
                send = sends[index]
                keys += [
                    bucket_key(send.room_id, send.participant_id),
                    slow_mode_key(send.room_id, send.participant_id),
                ]
                args += [send.slow_mode_seconds * 1000, send.client_msg_id]
            calls.append((keys, args))

        async def run() -> list[Any]:
            return await run_scripts(self._redis, self._check, calls)

        ok, results = await self._guard.call("rate_limit", run)
        if not ok or results is None:
            return answers
        for indexes, result in zip(by_room.values(), results, strict=True):
            for index, value in zip(indexes, result, strict=True):
                wait = int(value)
                send = sends[index]
                if wait > 0:
                    answers[index] = self._limiter.refused(
                        send.room_id, send.participant_id, max(1, math.ceil(wait / 1000))
                    )
                elif wait < 0:
                    answers[index] = slow_mode_refusal(send.slow_mode_seconds, -wait)
        return answers

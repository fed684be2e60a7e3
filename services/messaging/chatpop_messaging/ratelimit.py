"""Per-participant send limits: a token bucket in Redis spent through the process's send budget
(send_budget.py: tokens taken ahead, so most sends need no round trip), and the host's slow mode.

It fails open: when Redis cannot be reached, sending keeps working without a limit.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chatpop_common.datastores import RedisClient
from chatpop_common.errors import ResourceExhausted
from chatpop_common.wording import wait_words
from chatpop_messaging.hotcache import RedisGuard, run_scripts
from chatpop_messaging.metrics import RATE_LIMITED, SLOW_MODE_WAITS
from chatpop_messaging.send_budget import BUCKET_LUA, SendBudget, bucket_key

__all__ = ["SendChecks", "SendRateLimiter", "SendToCheck", "bucket_key", "slow_mode_key"]


class SendRateLimiter:
    def __init__(
        self,
        redis: RedisClient,
        guard: RedisGuard,
        *,
        per_minute: float,
        burst: int,
        lease_seconds: float = 0.0,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        # Told of each refusal (room, participant): the audit log counts them per minute.
        self._on_refused = on_refused
        self._budget = (
            SendBudget(redis, guard, rate=per_minute / 60, burst=burst, lease_seconds=lease_seconds)
            if per_minute > 0
            else None
        )

    @property
    def budget(self) -> SendBudget | None:
        return self._budget

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
        """Spend one of the participant's tokens; ResourceExhausted when they have none."""
        if self._budget is None:
            return
        (wait_ms,) = await self._budget.take([(room_id, participant_id)])
        if wait_ms:
            raise self.refused(room_id, participant_id, max(1, math.ceil(wait_ms / 1000)))

    async def close(self) -> None:
        if self._budget is not None:
            await self._budget.close()


def slow_mode_key(room_id: str, participant_id: str) -> str:
    return f"msg:{{{room_id}}}:slow:{participant_id}"


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
# Redis Cluster slot), for sends held to a slow mode: their token comes from the bucket itself, with
# the marker. KEYS: per send its bucket, then its slow-mode marker. ARGV: tokens per second (0: no
# rate limit), burst, then per send: slow mode milliseconds and its client_msg_id. Per send, in
# order: 0 when it may go ahead (a token spent, the marker set), ms until a token when rate limited,
# -ms when slow mode holds it (nothing spent). The marker remembers which message set it, so a retry
# of that very message (after a lost ack or a failed insert) is not held back.
_CHECK_MANY = (
    BUCKET_LUA
    + """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS / 2 do
  local result = 0
  local bucket = KEYS[2 * i - 1]
  local tokens, held, till
  if rate > 0 then
    tokens, held, till = read_bucket(bucket, now, rate, burst)
    if tokens < 1 then result = math.ceil((1 - tokens) / rate * 1000) end
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
  if rate > 0 then
    if result == 0 then tokens = tokens - 1 end
    write_bucket(bucket, now, rate, burst, tokens, held, till)
  end
  out[i] = result
end
return out
"""
)


@dataclass(frozen=True, slots=True)
class SendToCheck:
    room_id: str
    participant_id: str
    client_msg_id: str
    # The room's slow mode for this sender (0: none, and always 0 for the host).
    slow_mode_seconds: int


class SendChecks:
    """The rate limit and slow mode of a batch of sends with the same buckets, markers and answers as
    SendRateLimiter and SlowMode; fails open like them. Sends held to a slow mode are checked in Redis
    (one script call per room, pipelined); the others spend from the send budget, which asks Redis
    (one round trip) only for those whose participants have no tokens in this process."""

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
        budget = self._limiter.budget
        answers: list[ResourceExhausted | None] = [None] * len(sends)
        slowed = [index for index, send in enumerate(sends) if send.slow_mode_seconds > 0]
        spending = (
            [index for index, send in enumerate(sends) if send.slow_mode_seconds <= 0]
            if budget is not None
            else []
        )
        waits: dict[int, int] = {}

        async def spend() -> None:
            assert budget is not None
            taken = await budget.take([(sends[i].room_id, sends[i].participant_id) for i in spending])
            waits.update(zip(spending, taken, strict=True))

        async def held_back() -> None:
            waits.update(await self._check_slowed(sends, slowed))

        work = ([spend()] if spending else []) + ([held_back()] if slowed else [])
        if len(work) == 1:
            await work[0]
        elif work:
            await asyncio.gather(*work)
        for index, wait in waits.items():
            send = sends[index]
            if wait > 0:
                answers[index] = self._limiter.refused(
                    send.room_id, send.participant_id, max(1, math.ceil(wait / 1000))
                )
            elif wait < 0:
                answers[index] = slow_mode_refusal(send.slow_mode_seconds, -wait)
        return answers

    async def _check_slowed(self, sends: Sequence[SendToCheck], slowed: list[int]) -> dict[int, int]:
        """The `slowed` sends' answers from _CHECK_MANY (none when Redis is away)."""
        budget = self._limiter.budget
        by_room: dict[str, list[int]] = {}
        for index in slowed:
            by_room.setdefault(sends[index].room_id, []).append(index)
        rate, burst = (budget.rate, budget.burst) if budget is not None else (0.0, 1)
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
            return {}
        waits: dict[int, int] = {}
        for indexes, result in zip(by_room.values(), results, strict=True):
            waits.update(zip(indexes, (int(value) for value in result), strict=True))
        return waits

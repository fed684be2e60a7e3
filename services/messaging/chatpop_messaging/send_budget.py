"""Participants' send tokens taken ahead: the rate limit checked in process, with a budget shared
through Redis.

The limit is the token bucket in Redis (`msg:{room}:rate:<participant>`, as ratelimit.py describes):
every send spends one token taken from it, so no participant ever sends more than the bucket allows,
however many messaging processes serve them. What changes is when a process asks: when a send finds
no token here, the process takes what that send needs plus a few more (a *lease*) in one round trip,
and the participant's next sends spend those here without one. Before the lease runs low it is
topped up in the background, and what a process holds unused goes back to the bucket when the lease
ends (`lease_seconds` after it was taken or last topped up).

Exact, not approximate: the bucket also records how many tokens processes hold (`out`, until
`until` on Redis's clock, which is never before any holder's own lease ends) and refills only up to
the burst less those, so tokens in the bucket plus tokens held never exceed the burst, and the
long-run rate is the bucket's. Tokens held by one process are not at the disposal of another: a
participant whose sends alternate between processes may be refused while a few of their tokens sit
in the other (at most the lease size per process), until that lease ends and they go back.

Fails open like the rest of the limit: with Redis away, sends go ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chatpop_common.datastores import RedisClient
from chatpop_messaging.hotcache import RedisGuard, run_scripts
from chatpop_messaging.metrics import SEND_TOKENS

log = logging.getLogger(__name__)

# A bucket's state, refilled now, as every script on the send buckets reads it: tokens (capped at the
# burst less the tokens processes hold on lease), what is held (`out`, forgotten once `until` on
# Redis's clock passed: every holder's lease has ended by then) and `until`. And how to store it,
# kept while it may matter (a full bucket is the same as none; a lease must outlive its holders).
BUCKET_LUA = """
local function read_bucket(bucket, now, rate, burst)
  local state = redis.call('HMGET', bucket, 'tokens', 'ts', 'out', 'until')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  local out = tonumber(state[3]) or 0
  local till = tonumber(state[4]) or 0
  if tokens == nil or ts == nil then
    tokens = burst
    ts = now
  end
  if now >= till then out = 0 end
  tokens = math.min(burst - out, tokens + math.max(0, now - ts) * rate)
  return tokens, out, till
end
local function write_bucket(bucket, now, rate, burst, tokens, out, till)
  redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', tostring(now), 'out', tostring(out),
    'until', tostring(till))
  local ttl = math.ceil(burst / rate * 1000) + 1000
  if out > 0 then ttl = math.max(ttl, math.ceil((till - now) * 1000) + 1000) end
  redis.call('PEXPIRE', bucket, ttl)
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""

# KEYS: buckets of one room (one cluster slot). ARGV: tokens per second, burst, seconds a lease is
# kept in the bucket's books, then per bucket: need (sends waiting now), want (tokens to take: need
# plus what to hold; 0 to take nothing), used (held tokens spent since the holder last said) and
# returned (held tokens given back). Per bucket {granted, wait}: tokens taken (the first `granted`
# of the `need` sends pass; what is beyond `need` is held) and, when fewer than `need`, the
# milliseconds until the next token. A refused send takes nothing.
_LEASE = (
    BUCKET_LUA
    + """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local answers = {}
for i = 1, #KEYS do
  local at = 3 + 4 * (i - 1)
  local need = tonumber(ARGV[at + 1])
  local want = tonumber(ARGV[at + 2])
  local used = tonumber(ARGV[at + 3])
  local returned = tonumber(ARGV[at + 4])
  local tokens, out, till = read_bucket(KEYS[i], now, rate, burst)
  out = math.max(0, out - used - returned)
  tokens = math.min(burst - out, tokens + returned)
  local granted = 0
  local wait = 0
  if want > 0 then
    granted = math.max(0, math.min(want, math.floor(tokens)))
    tokens = tokens - granted
    if granted < need then wait = math.ceil((1 - tokens) / rate * 1000) end
    local held = granted - math.min(granted, need)
    if held > 0 then
      out = out + held
      till = math.max(till, now + lease)
    end
  end
  write_bucket(KEYS[i], now, rate, burst, tokens, out, till)
  answers[i] = {granted, wait}
end
return answers
"""
)

# Redis keeps a lease in the bucket's books this much longer than its holder uses it (the holder
# counts from before its request left, Redis from when it ran; this covers the clocks' drift).
LEASE_MARGIN = 1.0


def bucket_key(room_id: str, participant_id: str) -> str:
    return f"msg:{{{room_id}}}:rate:{participant_id}"


@dataclass(slots=True)
class _Held:
    """Tokens of one bucket this process holds: unspent, spent since Redis was last told, and until
    when (monotonic clock) they may be spent."""

    room_id: str
    tokens: int
    used: int
    expires: float
    # Done once a top-up asked for (then in flight) has been answered.
    topping: asyncio.Future[None] | None = None

    def topped(self) -> None:
        topping, self.topping = self.topping, None
        if topping is not None and not topping.done():
            topping.set_result(None)


@dataclass(frozen=True, slots=True)
class _Call:
    """One bucket's part of a lease call."""

    key: str
    room_id: str
    need: int
    want: int
    used: int = 0
    returned: int = 0


class SendBudget:
    """The send buckets of this process's participants, spent in process where a lease allows.

    `lease_size` tokens are taken ahead (at most a quarter of the burst, and what the bucket refills
    in a lease); 0 `lease_seconds` takes none ahead: every send asks Redis, as one token bucket would.
    """

    def __init__(
        self,
        redis: RedisClient,
        guard: RedisGuard,
        *,
        rate: float,
        burst: int,
        lease_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("the rate must be positive and the burst at least 1")
        self._redis = redis
        self._guard = guard
        self._lease = redis.register_script(_LEASE)
        self.rate = rate
        self.burst = burst
        self.lease_seconds = max(0.0, lease_seconds)
        self.lease_size = (
            max(1, min(burst // 4, math.ceil(rate * self.lease_seconds))) if self.lease_seconds > 0 else 0
        )
        self._clock = clock
        self._held: dict[str, _Held] = {}
        # Participants whose tokens are being asked of Redis right now, by one take() or another: the
        # others wait for that answer (and its lease) instead of each taking a lease of their own.
        self._asking: dict[str, asyncio.Future[None]] = {}
        # Ended leases to give back (what they hold and spent, as it stands when the call leaves).
        self._returning: list[tuple[str, _Held]] = []
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    def held(self, room_id: str, participant_id: str) -> int:
        """Tokens this process holds for the participant (0 once the lease ended)."""
        entry = self._held.get(bucket_key(room_id, participant_id))
        return entry.tokens if entry is not None and self._clock() < entry.expires else 0

    async def take(self, senders: Sequence[tuple[str, str]]) -> list[int]:
        """One token per send (room, participant), in order: per send 0 when it may go ahead, else
        the milliseconds until its participant has a token again. Sends that find no token here ask
        Redis together: one script call per room, pipelined in one round trip."""
        answers = [0] * len(senders)
        asking: dict[str, list[int]] = {}
        rooms: dict[str, str] = {}
        now = self._clock()
        for index, (room_id, participant_id) in enumerate(senders):
            key = bucket_key(room_id, participant_id)
            # Once one send of a participant asks Redis, their later ones do too (in order).
            if key not in asking and self._spend(key, now):
                continue
            asking.setdefault(key, []).append(index)
            rooms[key] = room_id
        # A lease that ran dry while its top-up is in flight, or a participant whose tokens another
        # take() is asking for: those tokens are on their way here (Redis already counts them as
        # held), so wait for them rather than ask again.
        topping = [
            entry.topping
            for key in asking
            if (entry := self._held.get(key)) is not None and entry.topping is not None
        ] + [self._asking[key] for key in asking if key in self._asking]
        if topping:
            await asyncio.wait(topping)
            now = self._clock()
            for key in list(asking):
                indexes = asking[key]
                while indexes and self._spend(key, now):
                    indexes.pop(0)
                if not indexes:
                    del asking[key]
        if not asking:
            SEND_TOKENS.labels("process").inc(len(senders))
            return answers
        SEND_TOKENS.labels("process").inc(len(senders) - sum(map(len, asking.values())))
        SEND_TOKENS.labels("redis").inc(sum(map(len, asking.values())))
        # What they need, and a lease where none is held (one held is topped up in the background).
        calls = [
            _Call(
                key,
                rooms[key],
                need=len(indexes),
                want=len(indexes) + (0 if key in self._held else self.lease_size),
            )
            for key, indexes in asking.items()
        ]
        loop = asyncio.get_running_loop()
        mine = {key: loop.create_future() for key in asking if key not in self._asking}
        self._asking.update(mine)
        started = self._clock()
        try:
            results = await self._run(calls)
        finally:
            for key, done in mine.items():
                del self._asking[key]
                done.set_result(None)
        if results is None:
            return answers  # Redis away: fail open
        for call, (granted, wait) in zip(calls, results, strict=True):
            indexes = asking[call.key]
            for position, index in enumerate(indexes):
                if position >= granted:
                    answers[index] = max(1, wait)
            if granted > len(indexes):
                self._hold(call.key, call.room_id, granted - len(indexes), started)
        return answers

    def _spend(self, key: str, now: float) -> bool:
        entry = self._held.get(key)
        if entry is None:
            return False
        if now >= entry.expires:
            # Ended: what is left goes back to the bucket; this send asks Redis.
            del self._held[key]
            self._give_back(key, entry)
            return False
        if entry.tokens < 1:
            return False
        entry.tokens -= 1
        entry.used += 1
        # Topped up when half spent, or half over (which renews it while the participant is sending).
        running_low = entry.tokens * 2 <= self.lease_size
        if (running_low or now * 2 >= entry.expires * 2 - self.lease_seconds) and entry.topping is None:
            entry.topping = asyncio.get_running_loop().create_future()
            self._start()
        return True

    def _hold(self, key: str, room_id: str, tokens: int, started: float) -> None:
        entry = self._held.get(key)
        if entry is None:
            self._held[key] = _Held(room_id, tokens, 0, started + self.lease_seconds)
        else:
            entry.tokens += tokens
            entry.expires = max(entry.expires, started + self.lease_seconds)
        self._start()

    def _give_back(self, key: str, entry: _Held) -> None:
        self._returning.append((key, entry))
        self._start()

    def _start(self) -> None:
        if self._closed:
            return
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="send budget")

    async def _work(self) -> None:
        """Tops leases up and gives ended ones back, one round trip for all that is due; sleeps
        until the next lease ends (or more is due) while any is held."""
        while (self._held or self._returning) and not self._closed:
            self._wake.clear()
            now = self._clock()
            for key, entry in list(self._held.items()):
                if now >= entry.expires:
                    del self._held[key]
                    self._give_back(key, entry)
            calls = [
                _Call(key, entry.room_id, 0, 0, entry.used, entry.tokens)
                for key, entry in self._returning
                if entry.tokens or entry.used
            ]
            self._returning.clear()
            topping = []
            for key, entry in self._held.items():
                if entry.topping is not None:
                    if entry.tokens < self.lease_size:
                        topping.append((key, entry, entry.used))
                    else:
                        entry.topped()  # a send's own lease filled it meanwhile
            calls += [
                _Call(key, entry.room_id, 0, self.lease_size - entry.tokens, used)
                for key, entry, used in topping
            ]
            if calls:
                started = self._clock()
                try:
                    results = await self._run(calls)
                    if results is not None:
                        for (key, entry, used), (granted, _) in zip(
                            topping, results[len(calls) - len(topping) :], strict=True
                        ):
                            self._topped_up(key, entry, used, granted, started)
                finally:
                    for _, entry, _ in topping:
                        entry.topped()
                continue
            if not self._held:
                break
            next_end = min(entry.expires for entry in self._held.values())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_end - self._clock()) + 0.01)

    def _topped_up(self, key: str, entry: _Held, used: int, granted: int, started: float) -> None:
        """Redis took note of `used` and granted `granted` more to hold."""
        entry.used -= used
        if not granted:
            return
        if self._held.get(key) is entry:
            entry.tokens += granted
            entry.expires = max(entry.expires, started + self.lease_seconds)
        else:
            # The lease ended meanwhile: these go back with the next call.
            self._returning.append((key, _Held(entry.room_id, granted, 0, 0.0)))

    async def _run(self, calls: Sequence[_Call]) -> list[tuple[int, int]] | None:
        """The calls in one round trip, one script call per room; None when Redis is away."""
        by_room: dict[str, list[int]] = {}
        for index, call in enumerate(calls):
            by_room.setdefault(call.room_id, []).append(index)
        scripted: list[tuple[list[str], list[Any]]] = []
        for indexes in by_room.values():
            keys: list[str] = []
            args: list[Any] = [self.rate, self.burst, self.lease_seconds + LEASE_MARGIN]
            for index in indexes:
                call = calls[index]
                keys.append(call.key)
                args += [call.need, call.want, call.used, call.returned]
            scripted.append((keys, args))

        async def run() -> list[Any]:
            return await run_scripts(self._redis, self._lease, scripted)

        ok, results = await self._guard.call("rate_limit", run)
        if not ok or results is None:
            return None
        answers: list[tuple[int, int]] = [(0, 0)] * len(calls)
        for indexes, result in zip(by_room.values(), results, strict=True):
            for index, (granted, wait) in zip(indexes, result, strict=True):
                answers[index] = (int(granted), int(wait))
        return answers

    async def close(self) -> None:
        """Give back what is held (one last round trip) and stop."""
        self._closed = True
        self._wake.set()
        worker, self._worker = self._worker, None
        if worker is not None:
            # It stops after the call in flight (whose answer it still takes into account).
            await asyncio.gather(worker, return_exceptions=True)
        ending = [*self._held.items(), *self._returning]
        for _, entry in ending:
            entry.topped()
        self._held.clear()
        self._returning.clear()
        calls = [
            _Call(key, entry.room_id, 0, 0, entry.used, entry.tokens)
            for key, entry in ending
            if entry.tokens or entry.used
        ]
        if calls:
            await self._run(calls)

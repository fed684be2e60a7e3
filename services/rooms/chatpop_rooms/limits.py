"""Attempt limits for private-room access codes, kept in Redis under `rooms:`.

Two fixed-window counters per room: one per client (client IP hash, else subject) and one for the
whole room. An attempt is reserved atomically (check and INCR in one script) BEFORE the slow hash is
verified, so concurrent guesses cannot slip past the limit and a locked-out client learns nothing
more about the code. A correct code gives its reservation back: only wrong or missing codes count.
Both keys share a hash tag (the room id), so the scripts also run on Redis Cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chatpop_common.datastores import RedisClient
from chatpop_common.keyslots import tagged

# KEYS: counters; ARGV: one limit per key, then the window in seconds.
# Returns the milliseconds until the longest lock ends when refused; otherwise 0, or minus the sum of
# 2^i over the keys (i from 0) that this very attempt brought to their limit.
_RESERVE = """
local window = tonumber(ARGV[#KEYS + 1])
local wait = 0
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= tonumber(ARGV[i]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      redis.call('EXPIRE', key, window)
      ttl = window * 1000
    end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
local reached = 0
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 or redis.call('PTTL', key) < 0 then
    redis.call('EXPIRE', key, window)
  end
  if count >= tonumber(ARGV[i]) then reached = reached + 2 ^ (i - 1) end
end
return -reached
"""

# Gives a reservation back without ever creating a key or going below zero; TTLs stay as they are.
_RELEASE = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Reservation:
    """The outcome of asking for one attempt: granted, or refused for `retry_after` seconds."""

    keys: tuple[str, ...]
    retry_after: int = 0
    # Whether this attempt used the last one the client / the whole room had: if it fails, the
    # client (or room) is locked out until the window ends.
    last_for_client: bool = False
    last_for_room: bool = False

    @property
    def granted(self) -> bool:
        return self.retry_after == 0


class JoinAttemptLimiter:
    def __init__(
        self,
        redis: RedisClient,
        *,
        client_limit: int,
        room_limit: int,
        window_seconds: int,
    ) -> None:
        self._reserve = redis.register_script(_RESERVE)
        self._release = redis.register_script(_RELEASE)
        self._client_limit = client_limit
        self._room_limit = room_limit
        self._window = window_seconds

    @staticmethod
    def keys_for(room_id: str, client: str) -> tuple[str, str]:
        return (
            tagged("rooms:join-attempts", room_id, "client", client),
            tagged("rooms:join-attempts", room_id, "room"),
        )

    async def reserve(self, room_id: str, client: str) -> Reservation:
        keys = self.keys_for(room_id, client)
        wait_ms = int(
            await self._reserve(keys=list(keys), args=[self._client_limit, self._room_limit, self._window])
        )
        if wait_ms > 0:
            return Reservation(keys=keys, retry_after=max(1, math.ceil(wait_ms / 1000)))
        reached = -wait_ms
        return Reservation(keys=keys, last_for_client=bool(reached & 1), last_for_room=bool(reached & 2))

    async def release(self, reservation: Reservation) -> None:
        await self._release(keys=list(reservation.keys), args=[])

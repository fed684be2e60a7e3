"""Ephemeral room signals (typing, presence changes, room updates, a participant's changed mutes)
published on Redis pub/sub.

A signal is never stored, sequenced or replayed: it goes out on the room's signal channel
(`msg:{<room_id>}:signals`, hash-tagged like the room's other keys) and every messaging process
with a hub for the room hands it to its Subscribe streams. On a Redis Cluster it is a shard channel
(SPUBLISH) of the slot of the room's keys, on the node of the room's live channel. Losing one (Redis
down, a slow subscriber) loses nothing durable, so publishing never raises.
"""

from __future__ import annotations

import logging
from typing import Any

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.datastores import RedisClient
from chatpop_messaging.hotcache import RedisGuard, is_cluster
from chatpop_messaging.metrics import SIGNALS_PUBLISHED

log = logging.getLogger(__name__)

_PREFIX = "msg:{"
_SUFFIX = "}:signals"


def signal_channel(room_id: str) -> str:
    return f"{_PREFIX}{room_id}{_SUFFIX}"


def room_from_signal_channel(channel: bytes | str) -> str | None:
    """The room id of a signal channel name, or None for anything else."""
    name = channel.decode() if isinstance(channel, bytes) else channel
    if name.startswith(_PREFIX) and name.endswith(_SUFFIX):
        return name[len(_PREFIX) : -len(_SUFFIX)]
    return None


class SignalPublisher:
    def __init__(self, redis: RedisClient, guard: RedisGuard) -> None:
        self._redis = redis
        self._guard = guard
        self._sharded = is_cluster(redis)

    async def publish(self, signal: messaging_pb2.Signal) -> bool:
        """Publish to every process subscribed to the room; False when Redis could not take it."""
        payload = signal.SerializeToString()
        channel = signal_channel(signal.room_id)

        async def run() -> Any:
            if self._sharded:
                return await self._redis.spublish(channel, payload)
            return await self._redis.publish(channel, payload)

        ok, _ = await self._guard.call("signal", run)
        if ok:
            SIGNALS_PUBLISHED.labels(signal.WhichOneof("kind") or "unknown").inc()
        return ok

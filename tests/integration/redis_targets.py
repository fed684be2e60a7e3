"""The two kinds of Redis a service may be given: one server, or a Redis Cluster (REDIS_CLUSTER=true)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio.cluster import RedisCluster

from chatpop_common.datastores import RedisClient, create_redis


@dataclass(frozen=True)
class RedisTarget:
    """REDIS_URL and REDIS_CLUSTER for a service under test (the `redis_target` fixture runs a test
    against the session's single Redis and against the session's 3-master cluster)."""

    url: str
    cluster: bool

    @property
    def name(self) -> str:
        return "cluster" if self.cluster else "single"

    def client(self) -> RedisClient:
        return create_redis(self.url, cluster=self.cluster)

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[RedisClient]:
        """A client, a cluster's with its slot table loaded before the first command (as a service's
        readiness probe does: redis-py sends a fresh cluster client's very first command to a default
        node, one MOVED), closed afterwards."""
        client = self.client()
        if isinstance(client, RedisCluster):
            await client.initialize()
        try:
            yield client
        finally:
            await client.aclose()


async def key_slots(redis: RedisClient, keys: list[str]) -> set[int]:
    """The cluster slots of `keys`, as the server computes them (CLUSTER KEYSLOT, answered by a single
    Redis too only in cluster mode; so this is asked of a cluster)."""
    return {int(await redis.execute_command("CLUSTER KEYSLOT", key)) for key in keys}


async def keys_matching(redis: RedisClient, pattern: str) -> list[str]:
    """Every key matching `pattern`, on every master of a cluster or on the one server."""
    if isinstance(redis, RedisCluster):
        found = await redis.keys(pattern, target_nodes=RedisCluster.PRIMARIES)
    else:
        found = await redis.keys(pattern)
    return sorted(key.decode() if isinstance(key, bytes) else str(key) for key in found)

"""Postgres and Redis pools, instrumented for tracing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from chatpop_common.readiness import Datastore
from chatpop_common.settings import ServiceSettings
from chatpop_common.telemetry import tracing_enabled

log = logging.getLogger(__name__)

_instrumented = False


def _instrument() -> None:
    global _instrumented
    if not _instrumented and tracing_enabled():
        AsyncPGInstrumentor().instrument()
        RedisInstrumentor().instrument()
        _instrumented = True


def asyncpg_dsn(url: str) -> str:
    """asyncpg takes postgresql:// URLs; accept SQLAlchemy-style driver suffixes too."""
    for prefix in ("postgresql+asyncpg://", "postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool release hook: our connections hold no session state to reset.

    asyncpg's default reset (RESET ALL, UNLISTEN, CLOSE ALL, advisory unlock) costs a round trip on
    every release; services here set their search_path once at connect and use no other session
    state. An open transaction is still rolled back by the pool itself.
    """


async def create_pg_pool(
    url: str,
    *,
    schema: str,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 3.0,
    server_settings: Mapping[str, str] | None = None,
) -> asyncpg.Pool:
    """A pool whose connections see the service's own schema first (and have `server_settings`).

    A new connection gives up after `connect_timeout` seconds (asyncpg's default is a minute), so a
    call made while Postgres is away fails fast enough to be retried within its deadline.
    """
    _instrument()
    pool = await asyncpg.create_pool(
        asyncpg_dsn(url),
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout,
        server_settings={
            "search_path": f"{schema},public",
            "application_name": f"chatpop-{schema}",
            **(server_settings or {}),
        },
        reset=_keep_session,
    )
    assert pool is not None
    return pool


# A client of either kind: one Redis server, or a Redis Cluster (REDIS_CLUSTER=true).
RedisClient = aioredis.Redis | RedisCluster

_REDIS_OPTIONS: dict[str, Any] = {
    "decode_responses": False,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "health_check_interval": 15,
    "retry_on_timeout": False,
}


def cluster_seeds(url: str) -> list[ClusterNode]:
    """The seed nodes a cluster URL names: `redis://host:port`, several separated by commas
    (`redis://a:7000,redis://b:7000` or `redis://a:7000,b:7000`). Any one of them reachable is enough."""
    seeds: list[ClusterNode] = []
    for part in url.split(","):
        part = part.strip()
        if not part:
            continue
        parsed = urlsplit(part if "://" in part else f"redis://{part}")
        if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
            raise ValueError(f"not a Redis node URL: {part!r}")
        seeds.append(ClusterNode(parsed.hostname, parsed.port or 6379))
    if not seeds:
        raise ValueError("REDIS_URL names no cluster node")
    return seeds


def create_redis(url: str, *, cluster: bool = False) -> RedisClient:
    """The client for `url`: one Redis server, or with `cluster` a Redis Cluster found through the
    seed node(s) the URL names. Commands, pipelines and scripts route by key slot in a cluster, so
    every operation keeps its keys under one hash tag."""
    _instrument()
    if not cluster:
        return aioredis.Redis.from_url(url, **_REDIS_OPTIONS)
    first = urlsplit(url.split(",")[0].strip())
    options = dict(_REDIS_OPTIONS)
    options.pop("retry_on_timeout")
    return RedisCluster(
        startup_nodes=cluster_seeds(url),
        username=first.username or None,
        password=first.password or None,
        ssl=first.scheme == "rediss",
        # Attempts at a command while a shard fails over (a replica takes over within seconds).
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
        **options,
    )


# Seconds a service waits at start-up for a Redis Cluster's slot map.
_WARM_UP_SECONDS = 5.0


async def warm_up_redis(client: RedisClient) -> None:
    """A cluster client reads the slot map before its first commands: otherwise a first burst of
    concurrent commands meets a redirect and a topology refresh that drops the connections they are on.
    Redis being unreachable now is not an error: the map is read again on first use."""
    if not isinstance(client, RedisCluster):
        return
    try:
        async with asyncio.timeout(_WARM_UP_SECONDS):
            await client.initialize()
    except Exception as exc:  # redis-py raises several unrelated types here
        log.warning("the Redis Cluster's slot map could not be read yet: %s", exc)


class PostgresProbe:
    """Can this process reach Postgres? Asked on a connection of its own, so that a busy pool (every
    connection lent out under load) is not mistaken for an unreachable server."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self._dsn = asyncpg_dsn(url)
        self._timeout = timeout
        self._connection: asyncpg.Connection | None = None

    async def __call__(self) -> None:
        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(self._dsn, timeout=self._timeout)
            await self._connection.fetchval("SELECT 1", timeout=self._timeout)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()


class RedisProbe:
    """Can this process reach Redis? A PING on the service's own client."""

    def __init__(self, client: RedisClient, *, timeout: float = 2.0) -> None:
        self._client = client
        self._timeout = timeout

    async def __call__(self) -> None:
        async with asyncio.timeout(self._timeout):
            await self._client.ping()

    async def close(self) -> None:
        """The client belongs to the service, which closes it."""


async def service_pool(
    settings: ServiceSettings,
    schema: str,
    *,
    max_size: int | None = None,
    server_settings: Mapping[str, str] | None = None,
) -> asyncpg.Pool:
    """The service's Postgres pool, sized (unless `max_size` says) and timed by its settings."""
    size = settings.db_pool_max if max_size is None else max_size
    return await create_pg_pool(
        settings.database_url,
        schema=schema,
        min_size=min(settings.db_pool_min, size),
        max_size=size,
        connect_timeout=settings.db_connect_timeout,
        server_settings=server_settings,
    )


def service_datastores(
    settings: ServiceSettings,
    redis: RedisClient | None = None,
) -> list[Datastore]:
    """What a service's readiness watches: Postgres, without which it cannot serve, and Redis (when
    it uses one), which every service can do without for a while and which is only reported."""
    postgres = PostgresProbe(settings.database_url, timeout=settings.readiness_probe_timeout)
    stores = [Datastore("postgres", postgres, required=True, close=postgres.close)]
    if redis is not None:
        stores.append(
            Datastore("redis", RedisProbe(redis, timeout=settings.readiness_probe_timeout), required=False)
        )
    return stores

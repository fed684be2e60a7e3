"""Postgres and Redis pools, instrumented for tracing."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor

from chatpop_common.telemetry import tracing_enabled

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


async def create_pg_pool(url: str, *, schema: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections see the service's own schema first."""
    _instrument()
    pool = await asyncpg.create_pool(
        asyncpg_dsn(url),
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": f"{schema},public", "application_name": f"chatpop-{schema}"},
        reset=_keep_session,
    )
    assert pool is not None
    return pool


def create_redis(url: str) -> aioredis.Redis:  # type: ignore[type-arg]
    _instrument()
    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
        retry_on_timeout=False,
    )

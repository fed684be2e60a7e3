"""An identity server in-process on a free port, for identity's integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from chatpop.identity.v1 import identity_pb2_grpc
from chatpop_common.devstack import free_port
from chatpop_common.server import serve
from chatpop_identity.app import build
from chatpop_identity.settings import Settings

if TYPE_CHECKING:
    from chatpop.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub as Stub

LIGHT_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}
PASSWORD = "correct horse battery"
# The secret services share to prove themselves to identity (chatpop_common.service_auth).
SERVICE_TOKEN_SECRET = "integration-tests-service-token-secret-0123"


@contextlib.asynccontextmanager
async def running_identity(
    database_url: str, redis_url: str, key_file: Path, **overrides: Any
) -> AsyncIterator[Stub]:
    """An identity server on a free port for the duration of the block, and a stub talking to it."""
    settings = Settings(
        grpc_port=free_port(),
        metrics_port=0,
        database_url=database_url,
        redis_url=redis_url,
        identity_signing_key_file=key_file,
        shutdown_grace=1,
        **{"service_token_secret": SERVICE_TOKEN_SECRET, **LIGHT_ARGON2, **overrides},
    )
    stop = asyncio.Event()
    server = asyncio.create_task(
        serve("identity", settings, functools.partial(build, settings), drain_delay=0, stop_event=stop)
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
    try:
        ready = asyncio.ensure_future(channel.channel_ready())
        await asyncio.wait({ready, server}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            ready.cancel()
            server.result()
        assert ready.done(), "the identity server did not come up"
        yield identity_pb2_grpc.IdentityServiceStub(channel)  # type: ignore[misc]
    finally:
        await channel.close()
        stop.set()
        await server

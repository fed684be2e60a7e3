"""Datastore faults on the shared bootstrap: passing failures are retried within the deadline, lasting
ones answer UNAVAILABLE (never INTERNAL), and readiness follows Postgres without flapping.

Postgres is reached through a TCP relay that the tests can cut (dropping every connection and
refusing new ones) and mend, so the real server of the other tests is never disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from chatpop_common.auth import KeyCache, TokenVerifier
from chatpop_common.datastores import PostgresProbe, create_pg_pool
from chatpop_common.devstack import free_port
from chatpop_common.errors import error_details
from chatpop_common.readiness import Datastore, ReadinessWatch
from chatpop_common.server import GrpcApp, Registration, serve
from chatpop_common.settings import ServiceSettings

SERVICE = "chatpop.test.v1.FaultService"


class Relay:
    """A TCP relay to Postgres that can be cut (connections dropped, new ones refused) and mended."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def mend(self) -> None:
        await self.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= {writer, up_writer}


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def relay(database_url: str) -> AsyncIterator[Relay]:
    port = urlsplit(database_url).port
    assert port is not None
    relay = Relay(port)
    await relay.start()
    yield relay
    await relay.cut()


async def _keys() -> Mapping[str, Ed25519PublicKey]:
    return {}


@pytest.fixture
async def fault_service(
    database_url: str, relay: Relay
) -> AsyncIterator[tuple[grpc.aio.Channel, asyncpg.Pool, str]]:
    """A service whose one RPC inserts a row through the relay; retries get at most 1.5 s."""
    table = f"faults_{uuid.uuid4().hex[:8]}"
    direct = await asyncpg.connect(database_url)
    await direct.execute(f"CREATE TABLE public.{table} (id text PRIMARY KEY)")
    pool = await create_pg_pool(
        _through(database_url, relay.port), schema="public", min_size=2, max_size=4, connect_timeout=1
    )

    async def insert(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await pool.execute(f"INSERT INTO {table} VALUES ($1) ON CONFLICT DO NOTHING", request.decode())
        return b"ok"

    def add(_servicer: object, server: grpc.aio.Server) -> None:
        handlers = {"Insert": grpc.unary_unary_rpc_method_handler(insert)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    settings = ServiceSettings(
        grpc_port=free_port(), metrics_port=free_port(), shutdown_grace=1, transient_retry_seconds=1.5
    )

    async def build() -> GrpcApp:
        return GrpcApp(
            registrations=[Registration(SERVICE, add, None)], verifier=TokenVerifier(KeyCache(_keys))
        )

    stop = asyncio.Event()
    task = asyncio.create_task(serve("faults", settings, build, drain_delay=0, stop_event=stop))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
    await asyncio.wait_for(channel.channel_ready(), 10)
    try:
        yield channel, direct, table
    finally:
        stop.set()
        await task
        await channel.close()
        await pool.close()
        await direct.execute(f"DROP TABLE public.{table}")
        await direct.close()


def _retries() -> float:
    return (
        REGISTRY.get_sample_value(
            "chatpop_transient_retries_total", {"grpc_service": SERVICE, "grpc_method": "Insert"}
        )
        or 0.0
    )


async def test_a_call_during_a_short_outage_is_retried_and_succeeds(
    fault_service: tuple[grpc.aio.Channel, asyncpg.Connection, str], relay: Relay
) -> None:
    channel, direct, table = fault_service
    insert = channel.unary_unary(f"/{SERVICE}/Insert")
    assert await insert(b"before", timeout=5) == b"ok"
    retries = _retries()

    await relay.cut()
    call = asyncio.ensure_future(insert(b"during", timeout=5))
    await asyncio.sleep(0.4)
    assert not call.done()
    await relay.mend()

    assert await call == b"ok"
    assert _retries() > retries
    rows = {r["id"] for r in await direct.fetch(f"SELECT id FROM public.{table}")}
    assert rows == {"before", "during"}


async def test_a_lasting_outage_answers_unavailable_with_retry_after_not_internal(
    fault_service: tuple[grpc.aio.Channel, asyncpg.Connection, str], relay: Relay
) -> None:
    channel, direct, table = fault_service
    insert = channel.unary_unary(f"/{SERVICE}/Insert")
    assert await insert(b"warm", timeout=5) == b"ok"

    await relay.cut()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await insert(b"lost", timeout=5)
    elapsed = loop.time() - started
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(failed.value) == ("service_unavailable", 1)
    assert "asyncpg" not in (failed.value.details() or "")
    # Retried for the service's budget (1.5 s), answered well before the caller's deadline: it stops
    # once the next backoff delay (at most 0.8 s) would end past the budget, so no sooner than 0.7 s.
    assert 1.5 - 0.8 <= elapsed < 4.5

    await relay.mend()
    assert await insert(b"after", timeout=5) == b"ok"
    rows = {r["id"] for r in await direct.fetch(f"SELECT id FROM public.{table}")}
    assert rows == {"warm", "after"}


async def test_a_caller_deadline_shorter_than_the_budget_is_respected(
    fault_service: tuple[grpc.aio.Channel, asyncpg.Connection, str], relay: Relay
) -> None:
    channel, _direct, _table = fault_service
    insert = channel.unary_unary(f"/{SERVICE}/Insert")
    await relay.cut()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await insert(b"short", timeout=0.8)
    # Answered UNAVAILABLE in time, or the caller's own deadline struck: retryable either way.
    assert failed.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    await relay.mend()


async def test_readiness_follows_postgres_without_flapping_on_one_blip(
    database_url: str, relay: Relay
) -> None:
    from grpc_health.v1 import health

    servicer = health.aio.HealthServicer()
    await servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    probe = PostgresProbe(_through(database_url, relay.port), timeout=1)
    watch = ReadinessWatch(
        servicer,
        [SERVICE],
        [Datastore("postgres", probe, close=probe.close)],
        interval=0.1,
        failures=3,
        probe_timeout=1,
    )

    async def status() -> int:
        response = await servicer.Check(health_pb2.HealthCheckRequest(service=SERVICE), None)
        return int(response.status)

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert await watch.check() is True
    await relay.cut()
    assert await watch.check() is True  # one failed probe is a blip
    await relay.mend()
    assert await watch.check() is True
    assert await status() == serving

    await relay.cut()
    results = [await watch.check() for _ in range(3)]
    assert results == [True, True, False]
    assert await status() == not_serving
    assert REGISTRY.get_sample_value("chatpop_datastore_up", {"datastore": "postgres"}) == 0

    await relay.mend()
    assert await watch.check() is True
    assert await status() == serving
    assert REGISTRY.get_sample_value("chatpop_datastore_up", {"datastore": "postgres"}) == 1
    await probe.close()


async def test_a_service_reports_not_serving_while_its_database_is_away(
    database_url: str, relay: Relay
) -> None:
    settings = ServiceSettings(
        grpc_port=free_port(),
        metrics_port=free_port(),
        shutdown_grace=1,
        readiness_interval=0.1,
        readiness_failures=3,
        readiness_probe_timeout=0.5,
    )
    probe = PostgresProbe(_through(database_url, relay.port), timeout=0.5)

    async def build() -> GrpcApp:
        return GrpcApp(
            registrations=[Registration(SERVICE, lambda _s, _server: None, None)],
            verifier=TokenVerifier(KeyCache(_keys)),
            datastores=[Datastore("postgres", probe, close=probe.close)],
        )

    stop = asyncio.Event()
    task = asyncio.create_task(serve("faults", settings, build, drain_delay=0, stop_event=stop))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
    health_stub = health_pb2_grpc.HealthStub(channel)

    async def wait_for(status: int) -> None:
        async with asyncio.timeout(10):
            while True:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    response = await health_stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if response.status == status:
                        return
                await asyncio.sleep(0.05)

    try:
        await wait_for(health_pb2.HealthCheckResponse.SERVING)
        await relay.cut()
        await wait_for(health_pb2.HealthCheckResponse.NOT_SERVING)
        await relay.mend()
        await wait_for(health_pb2.HealthCheckResponse.SERVING)
    finally:
        stop.set()
        await task
        await channel.close()

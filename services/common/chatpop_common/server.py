"""The one grpc.aio bootstrap every ChatPop gRPC service runs on.

Start-up: logging, tracing, metrics port, `build()` (pools and servicers), interceptors, health and
reflection, `await server.start()`, then SERVING. On SIGTERM/SIGINT: NOT_SERVING first, a short drain
so balancers notice, `server.stop(grace)` for in-flight calls, then the service's own cleanup
(pools last).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from chatpop_common.auth import TokenVerifier
from chatpop_common.interceptors import ErrorInterceptor, MetricsInterceptor, PrincipalInterceptor
from chatpop_common.logs import configure_logging
from chatpop_common.readiness import Datastore, ReadinessWatch
from chatpop_common.settings import ServiceSettings
from chatpop_common.telemetry import configure_tracing, start_metrics_server, tracing_enabled, tune_gc

log = logging.getLogger(__name__)

Cleanup = Callable[[], Awaitable[None]]


@dataclass
class Registration:
    """One servicer to mount: its full service name (for health and reflection) and add function."""

    full_name: str
    add: Callable[[Any, grpc.aio.Server], None]
    servicer: Any


@dataclass
class GrpcApp:
    """What a service's `build()` returns: servicers, the token verifier, cleanups (run in order), and
    the datastores whose reachability its readiness reports."""

    registrations: list[Registration]
    verifier: TokenVerifier
    cleanups: list[Cleanup] = field(default_factory=list)
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    datastores: list[Datastore] = field(default_factory=list)
    # Called when shutdown begins, before the server stops taking calls: long-lived streams are told
    # to move their work to other processes.
    draining: list[Callable[[], None]] = field(default_factory=list)


async def serve(
    name: str,
    settings: ServiceSettings,
    build: Callable[[], Awaitable[GrpcApp]],
    *,
    drain_delay: float = 0.5,
    stop_event: asyncio.Event | None = None,
) -> None:
    metrics_port = start_metrics_server(settings.grpc_host, settings.metrics_port)
    app = await build()
    tune_gc()
    server = grpc.aio.server(
        interceptors=[
            *([aio_server_interceptor()] if tracing_enabled() else []),
            MetricsInterceptor(),
            ErrorInterceptor(retry_budget=settings.transient_retry_seconds),
            PrincipalInterceptor(app.verifier),
        ],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for registration in app.registrations:
        registration.add(registration.servicer, server)
    names = [r.full_name for r in app.registrations]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    await server.start()
    for full_name in ["", *names]:
        await health_servicer.set(full_name, health_pb2.HealthCheckResponse.SERVING)
    watch = ReadinessWatch(
        health_servicer,
        names,
        app.datastores,
        interval=settings.readiness_interval,
        failures=settings.readiness_failures,
        probe_timeout=settings.readiness_probe_timeout,
    )
    watching = asyncio.create_task(watch.run(), name=f"{name} readiness")
    log.info(
        "%s serving",
        name,
        extra={"grpc_port": port, "metrics_port": metrics_port, "services": names},
    )

    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server_done = asyncio.ensure_future(server.wait_for_termination())
    stop_wait = asyncio.ensure_future(stop.wait())
    await asyncio.wait({server_done, stop_wait}, return_when=asyncio.FIRST_COMPLETED)

    log.info("%s shutting down", name)
    for drain in app.draining:
        drain()
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    await health_servicer.enter_graceful_shutdown()
    await asyncio.sleep(drain_delay)
    await server.stop(settings.shutdown_grace)
    for task in app.background:
        task.cancel()
    await asyncio.gather(*app.background, return_exceptions=True)
    for cleanup in app.cleanups:
        try:
            await cleanup()
        except Exception:
            log.exception("cleanup failed")
    stop_wait.cancel()
    server_done.cancel()
    log.info("%s stopped", name)


def run(name: str, settings: ServiceSettings, build: Callable[[], Awaitable[GrpcApp]]) -> None:
    """Process entry point: configure logging and tracing, then serve until a signal arrives."""
    configure_logging(name, settings.log_level, settings.log_format)
    configure_tracing(name)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    asyncio.run(serve(name, settings, build))

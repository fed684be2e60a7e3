"""OpenTelemetry tracing configured only by the standard OTEL_* variables, and the metrics port."""

from __future__ import annotations

import gc
import os

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from prometheus_client import start_http_server

_tracing = False


def tracing_enabled() -> bool:
    """Whether this process records spans; instrumentation is installed only then."""
    return _tracing


def configure_tracing(service: str) -> None:
    """Install the SDK tracer provider when OTEL_* variables ask for an exporter.

    With OTEL_TRACES_EXPORTER=otlp (the default) and an OTLP endpoint set, spans are exported over
    OTLP/gRPC; OTEL_TRACES_EXPORTER=console prints them. Only then are the gRPC, HTTP, Postgres and
    Redis instrumentations installed (see tracing_enabled): with no exporter nothing could see the
    spans, and creating them would cost CPU on every message. OTEL_SDK_DISABLED=true turns tracing
    off entirely.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    exporter: SpanExporter | None = None
    if exporter_name == "otlp" and endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    elif exporter_name == "console":
        exporter = ConsoleSpanExporter()
    if exporter is None:
        return
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", f"chatpop-{service}")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    global _tracing
    _tracing = True


def tune_gc() -> None:
    """Fewer, cheaper cyclic-GC passes for a long-running server.

    Start-up leaves tens of thousands of long-lived objects (modules, descriptors, settings) that
    every full collection would walk again; freezing them moves them out of the collector's way, and
    a larger first-generation threshold stops a collection every few hundred allocations on the
    message path (each pause lands on some message's latency).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def start_metrics_server(host: str, port: int) -> int:
    """Serve Prometheus /metrics on its own port; returns the port bound (useful when 0)."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)

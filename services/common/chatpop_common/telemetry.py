"""OpenTelemetry tracing configured only by the standard OTEL_* variables, and the metrics port."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import start_http_server


def configure_tracing(service: str) -> None:
    """Install a tracer provider; export over OTLP when OTEL_* variables ask for it.

    OTEL_SDK_DISABLED=true turns tracing off. An exporter is set up when OTEL_TRACES_EXPORTER is
    "otlp" (the default) and an OTLP endpoint is configured; otherwise spans are created (so trace
    ids reach the logs and propagate downstream) but not exported.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", f"chatpop-{service}")})
    provider = TracerProvider(resource=resource)
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if exporter_name == "otlp" and endpoint:
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def start_metrics_server(host: str, port: int) -> int:
    """Serve Prometheus /metrics on its own port; returns the port bound (useful when 0)."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)

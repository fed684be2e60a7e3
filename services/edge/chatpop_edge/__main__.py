"""`python -m chatpop_edge`: the edge under uvicorn (uvloop, httptools, websockets)."""

from __future__ import annotations

import logging
import math
import re
import sys

import uvicorn
from pydantic import ValidationError

from chatpop_common.logs import configure_logging
from chatpop_common.telemetry import configure_tracing, start_metrics_server, tune_gc
from chatpop_edge.app import create_app
from chatpop_edge.settings import EdgeSettings

_TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s\"]+")


class _RedactTokens(logging.Filter):
    """uvicorn logs WebSocket paths with their query string, where the room token travels."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def main() -> int:
    try:
        # Every field comes from the environment; IP_HASH_KEY has no default on purpose.
        settings = EdgeSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        # Fail fast and say which variable is wrong, without echoing secret values.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']).upper()}: {error['msg']}" for error in exc.errors()
        )
        print(f"chatpop-edge: invalid settings: {problems}", file=sys.stderr)
        return 2
    configure_logging("edge", settings.log_level, settings.log_format)
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(_RedactTokens())
    configure_tracing("edge")
    start_metrics_server(settings.http_host, settings.metrics_port)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        # Frames are encoded once per message; per-socket compression would redo work per recipient.
        ws_per_message_deflate=False,
        ws_max_size=settings.max_body_bytes,
        # Forwarded headers are interpreted by the app against TRUSTED_PROXIES, not by uvicorn.
        proxy_headers=False,
        server_header=False,
        date_header=True,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace),
    )
    server = uvicorn.Server(config)
    tune_gc()
    server.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

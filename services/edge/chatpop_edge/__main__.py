"""`python -m chatpop_edge`: the edge under uvicorn (uvloop, httptools, websockets-sansio)."""

from __future__ import annotations

import logging
import math
import re
import resource

import uvicorn

from chatpop_common.logs import configure_logging
from chatpop_common.settings import load_settings
from chatpop_common.telemetry import configure_tracing, start_metrics_server, tune_gc
from chatpop_edge.app import create_app
from chatpop_edge.connections import EdgeServerConfig
from chatpop_edge.settings import EdgeSettings

# Room tokens (WebSocket URLs) and media URL signatures (`s=`).
_TOKEN_IN_QUERY = re.compile(r"((?:token|(?<=[?&])s)=)[^&\s\"]+")


class _RedactTokens(logging.Filter):
    """uvicorn logs WebSocket paths with their query string, where the room token travels (and media
    paths, with their signature)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def _raise_open_files_limit() -> None:
    """Every socket is a file descriptor: take the hard limit, not the often tiny soft default."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        logging.getLogger(__name__).warning("open files limit stays at %d: %s", soft, exc)


def main() -> int:
    # Every field comes from the environment; IP_HASH_KEY has no default on purpose.
    settings = load_settings("edge", lambda: EdgeSettings())  # type: ignore[call-arg]
    configure_logging("edge", settings.log_level, settings.log_format)
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(_RedactTokens())
    configure_tracing("edge")
    start_metrics_server(settings.http_host, settings.metrics_port)
    _raise_open_files_limit()
    # httptools and websockets-sansio, with the edge's connection limits and timeouts (connections.py).
    config = EdgeServerConfig(
        create_app(settings),
        settings,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
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

"""Background jobs that run on a fixed interval for the life of a process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

log = logging.getLogger(__name__)


async def run_every(
    interval: float, job: Callable[[], Awaitable[None]], *, what: str, failures: Counter | None = None
) -> None:
    """Run `job` now and then every `interval` seconds until cancelled.

    A failed run is counted and logged, and the next one goes ahead on schedule: these jobs tidy up
    or measure, so a database hiccup must not end them for the life of the pod.
    """
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            if failures is not None:
                failures.inc()
            log.warning("could not %s", what, exc_info=True)
        await asyncio.sleep(interval)

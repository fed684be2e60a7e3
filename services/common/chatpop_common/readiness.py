"""Readiness that tells the truth: a service that cannot reach its database reports NOT_SERVING.

Each service names its datastores and whether it needs them to serve at all. The bootstrap asks each
one every `interval` seconds; a required store that failed `failures` times in a row turns the gRPC
health status NOT_SERVING (so a single blip never flaps readiness), and the first success turns it
back. A store the service can do without (Redis is a cache and a rate-limit counter) is only
reported: in the `chatpop_datastore_up` gauge and the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from grpc_health.v1 import health, health_pb2
from prometheus_client import Gauge

log = logging.getLogger(__name__)

DATASTORE_UP = Gauge(
    "chatpop_datastore_up",
    "Whether the last probe of a datastore succeeded (1) or failed (0).",
    ["datastore"],
)


@dataclass
class Datastore:
    """A datastore a service uses: how to probe it, and whether the service can serve without it."""

    name: str
    probe: Callable[[], Awaitable[None]]
    required: bool = True
    close: Callable[[], Awaitable[None]] | None = None


class ReadinessWatch:
    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        service_names: Sequence[str],
        datastores: Sequence[Datastore],
        *,
        interval: float,
        failures: int,
        probe_timeout: float,
    ) -> None:
        self._servicer = servicer
        self._names = ["", *service_names]
        self._stores = list(datastores)
        self._interval = interval
        self._failures = max(1, failures)
        self._probe_timeout = probe_timeout
        self._failed = {store.name: 0 for store in self._stores}
        self._serving = True

    async def _probe(self, store: Datastore) -> bool:
        try:
            async with asyncio.timeout(self._probe_timeout):
                await store.probe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed = self._failed[store.name] = self._failed[store.name] + 1
            if failed == 1:
                log.warning("%s is unreachable: %s: %s", store.name, type(exc).__name__, exc)
            DATASTORE_UP.labels(store.name).set(0)
            return False
        if self._failed[store.name]:
            log.info("%s is reachable again", store.name)
        self._failed[store.name] = 0
        DATASTORE_UP.labels(store.name).set(1)
        return True

    async def check(self) -> bool:
        """Probe every store once; returns whether the service should report SERVING."""
        await asyncio.gather(*(self._probe(store) for store in self._stores))
        down = [s.name for s in self._stores if s.required and self._failed[s.name] >= self._failures]
        serving = not down
        if serving != self._serving:
            self._serving = serving
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in self._names:
                await self._servicer.set(name, status)
            if serving:
                log.info("ready again: every required datastore is reachable")
            else:
                log.warning("not ready: cannot reach %s", ", ".join(down))
        return serving

    async def run(self) -> None:
        try:
            while True:
                await self.check()
                await asyncio.sleep(self._interval)
        finally:
            for store in self._stores:
                if store.close is not None:
                    await store.close()

"""The e2e harness: all five services as real processes on free ports, driven through the edge.

The session fixture `stack` starts identity, rooms, messaging, payments and edge exactly as
`make run` does (same command lines and wiring, from chatpop_common.localrun), against the
session's private Postgres and Redis from tests/conftest.py. Each child's output goes to
test-artifacts/e2e/<name>.log (test-artifacts/e2e/gw0/<name>.log and so on when the tier runs
on pytest-xdist workers: tests/artifacts.py); if a service cannot start, the session fails at once
with that service's last output lines instead of hanging.

Tests use `stack.base_url` / `stack.ws_url` (or the `client` fixture), `stack.address(name)` for
direct gRPC calls, `stack.kill(name)` (kill -9) / `stack.restart(name)`, and `stack.stop_redis()` /
`stack.start_redis()` / `stack.restart_redis()`, and `stack.stop_postgres()` / `stack.start_postgres()`.
Each of those has an async twin (`akill`,
`arestart`, …) that runs it in a worker thread, so the event loop keeps serving open sockets.
Every platform here keeps media in the session's private S3 (`s3_server` from tests/conftest.py,
`stack.s3`).
`stack.second_edge()` (async: `asecond_edge()`) starts, on first use, a second edge process (named
`edge-2`, its own port) beside the first, as replicas run in a cluster, and returns its base URL. It
differs in timings only, so tests can watch them pass: SECOND_EDGE_ENV.

`cluster_stack` (one per test module) runs on the session's 3-master Redis Cluster (`redis_cluster`,
REDIS_CLUSTER=true) with two edge and two messaging processes from the start, on a database of its
own; `cluster_ha_stack` (one per test) does the same on a 3+3 cluster of its own (`redis_cluster_ha`),
for a test that kills a master. `stack.edge_urls` / `stack.edge_ws_urls` name each edge process (so a
room's sockets can sit on different ones), `stack.messaging_names` the messaging processes, which
every caller reaches round-robin over one channel (MESSAGING_ADDR lists them all), and
`stack.redis_cluster` the cluster. Their logs go to test-artifacts/e2e/cluster/ and cluster-ha/.

`observed_stack` is a second platform, started only when a test asks for it (the observability
tests): its services export traces over OTLP to the `otlp_receiver` fixture and run with the
default send rate limit. Its logs go to test-artifacts/e2e/observed/.

payments run in test mode (no Stripe; STRIPE_* variables of the environment running the tests never
reach the services). `stripe_stack` is a platform whose payments run against the fake Stripe API
(tests/fakestripe, one platform of it: `stack.stripe`, with its control client) with real signed
webhooks to the edge's endpoint; it has a database of its own, so its payments and the test-mode
ones never share an outbox. Its logs go to test-artifacts/e2e/stripe/. Its payments hear Stripe through
webhooks alone (reconciliation runs at start and then hourly), so a test that holds, reorders or
spoils deliveries knows what payments was told. `reconciling_stripe_stack` is the same with
reconciliation every second (Stripe's list of events read again as in production, only more often),
for what must arrive when a webhook never does; its logs go to test-artifacts/e2e/stripe-reconciling/.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from chatpop_common.devstack import Postgres, Redis, RedisCluster, SeaweedS3, free_ports
from chatpop_common.localrun import (
    GRPC_SERVICES,
    Ports,
    ensure_secrets,
    extra_edge_spec,
    service_specs,
)
from chatpop_common.migrate import SERVICES as MIGRATED
from chatpop_common.migrate import migrate
from chatpop_common.processes import GrpcHealth, ServiceSpec, StartupError, Supervisor
from tests.artifacts import worker_artifacts
from tests.e2e.money import calm_after
from tests.e2e.otlp import OtlpReceiver
from tests.fakestripe import FakeStripe, FakeStripeServer

STARTUP_TIMEOUT = float(os.environ.get("E2E_STARTUP_TIMEOUT", "60"))
SECOND_EDGE = "edge-2"
# Idle sockets closed after 6 s (browsers ping every 4 s), presence refreshed every second and gone
# 4 s after the process dies.
SECOND_EDGE_ENV = {"WS_IDLE_TIMEOUT": "6", "PRESENCE_REFRESH": "1", "PRESENCE_TTL": "4"}
LOG_DIR = worker_artifacts("e2e")
STRIPE_WEBHOOK_PATH = "/api/v1/payments/stripe/webhook"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@dataclass
class Stack:
    """The running platform, and levers to break and mend parts of it."""

    supervisor: Supervisor
    specs: dict[str, ServiceSpec]
    ports: Ports
    database_url: str
    redis_url: str
    # The single Redis; None when the platform runs on `redis_cluster`.
    redis: Redis | None
    log_dir: Path
    # The second edge process, started by second_edge() only when a test needs one.
    second_edge_spec: ServiceSpec
    # The session's Postgres server, for tests that stop it (None when the stack was given only URLs).
    postgres: Postgres | None = None
    # The fake Stripe platform payments run against; None: payments run in test mode.
    stripe: FakeStripe | None = None
    # The S3 the edge and messaging keep media in (the session's `s3_server`); None: media off.
    s3: SeaweedS3 | None = None
    # The Redis Cluster the platform runs on (REDIS_CLUSTER=true); None: the single `redis`.
    redis_cluster: RedisCluster | None = None
    # The edge and messaging processes started with the platform, the platform's own first
    # (`edge`, `messaging`), then their replicas (`edge.2`, `messaging.2`, …).
    edge_names: tuple[str, ...] = ("edge",)
    messaging_names: tuple[str, ...] = ("messaging",)

    @property
    def edge_urls(self) -> list[str]:
        """The base URL (http://…) of each edge process in `edge_names`, in that order."""
        return [f"http://127.0.0.1:{self.specs[name].env['HTTP_PORT']}" for name in self.edge_names]

    @property
    def edge_ws_urls(self) -> list[str]:
        return [url.replace("http://", "ws://", 1) for url in self.edge_urls]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.service['edge']}"

    def second_edge(self) -> str:
        """Start the second edge process unless it runs already; its base URL (http://…)."""
        if not self.supervisor.running(SECOND_EDGE):
            self.supervisor.start(self.second_edge_spec)
            self.supervisor.wait_ready(SECOND_EDGE, STARTUP_TIMEOUT)
        return f"http://127.0.0.1:{self.second_edge_spec.env['HTTP_PORT']}"

    async def asecond_edge(self) -> str:
        return await asyncio.to_thread(self.second_edge)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ports.service['edge']}"

    def address(self, service: str) -> str:
        """host:port of a gRPC service (identity, rooms, messaging, payments)."""
        if service not in GRPC_SERVICES:
            raise KeyError(f"{service!r} is not a gRPC service; choose from {', '.join(GRPC_SERVICES)}")
        return self.ports.address(service)

    @property
    def addresses(self) -> dict[str, str]:
        return {name: self.ports.address(name) for name in GRPC_SERVICES}

    def metrics_url(self, service: str) -> str:
        """The /metrics URL of a process: a service or a replica (`edge.2`, `messaging.2`, …)."""
        port = self.ports.metrics.get(service) or self.specs[service].env["METRICS_PORT"]
        return f"http://127.0.0.1:{port}/metrics"

    def logs(self, service: str) -> list[str]:
        """The service's most recent output lines."""
        return self.supervisor.tail(service)

    # -- services -------------------------------------------------------------------------------

    def kill(self, service: str) -> int:
        """kill -9 the service; returns its exit status. It stays down until start() or restart()."""
        return self.supervisor.kill(service)

    def stop(self, service: str) -> int:
        """SIGTERM (graceful), SIGKILL if it does not stop in time."""
        return self.supervisor.stop(service)

    def start(self, service: str) -> None:
        """Start a stopped or killed service again and wait until it is ready."""
        self.supervisor.start(self.specs[service])
        self.supervisor.wait_ready(service, STARTUP_TIMEOUT)

    def restart(self, service: str) -> None:
        """Stop the service gracefully if it runs, start it again, wait until it is ready."""
        self.supervisor.restart(service, STARTUP_TIMEOUT)

    async def akill(self, service: str) -> int:
        return await asyncio.to_thread(self.kill, service)

    async def astop(self, service: str) -> int:
        return await asyncio.to_thread(self.stop, service)

    async def astart(self, service: str) -> None:
        await asyncio.to_thread(self.start, service)

    async def arestart(self, service: str) -> None:
        await asyncio.to_thread(self.restart, service)

    # -- Redis ----------------------------------------------------------------------------------

    def _single_redis(self) -> Redis:
        assert self.redis is not None, "this platform runs on a Redis Cluster: use stack.redis_cluster"
        return self.redis

    def stop_redis(self) -> None:
        self._single_redis().stop()

    def start_redis(self) -> None:
        """Start Redis again on the same port (empty: the test Redis does not persist)."""
        redis = self._single_redis()
        redis.start(redis.datadir.parent / "redis.log", persist=False)

    def restart_redis(self) -> None:
        self.stop_redis()
        self.start_redis()

    async def astop_redis(self) -> None:
        await asyncio.to_thread(self.stop_redis)

    async def astart_redis(self) -> None:
        await asyncio.to_thread(self.start_redis)

    async def arestart_redis(self) -> None:
        await asyncio.to_thread(self.restart_redis)

    # -- Postgres -------------------------------------------------------------------------------

    def _pg(self) -> Postgres:
        assert self.postgres is not None, "this stack was not given its Postgres server"
        return self.postgres

    def stop_postgres(self, mode: str = "fast") -> None:
        """Stop Postgres: `fast` ends every session as a restart would, `immediate` as a crash."""
        self._pg().stop(mode)

    def start_postgres(self) -> None:
        pg = self._pg()
        pg.start(pg.datadir.parent / "pg.log")

    async def astop_postgres(self, mode: str = "fast") -> None:
        await asyncio.to_thread(self.stop_postgres, mode)

    async def astart_postgres(self) -> None:
        await asyncio.to_thread(self.start_postgres)


@contextlib.contextmanager
def running_stack(
    database_url: str,
    redis_url: str,
    redis: Redis | None,
    *,
    extra_env: Mapping[str, str] | None = None,
    log_dir: Path = LOG_DIR,
    anonymous_limits: bool = False,
    postgres: Postgres | None = None,
    stripe: FakeStripe | None = None,
    s3: SeaweedS3 | None = None,
    redis_cluster: RedisCluster | None = None,
    edges: int = 1,
    messaging_processes: int = 1,
) -> Iterator[Stack]:
    """All five services on free ports; `extra_env` is added to every service's environment.
    With `s3`, the edge and messaging keep media there (its S3_* settings, as `make run` gives them).
    With `redis_cluster` (and `redis_url` its seeds, `redis` None) every service runs with
    REDIS_CLUSTER=true. `edges` and `messaging_processes` start that many of each from the outset, each
    on its own ports; every caller of messaging balances over all of them (MESSAGING_ADDR).

    The anonymous abuse limits are lifted unless `anonymous_limits` keeps the platform's defaults.
    payments run in test mode unless `stripe` names a platform of the fake Stripe API: then they run
    against it, and its webhook endpoints (the platform's and Connect's) point at the edge."""
    ports = Ports.free()
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="chatpop-e2e-") as tmp:
        secrets = ensure_secrets(Path(tmp) / "secrets")
        # Traffic tests send far more than a person would; the send limit itself is covered by
        # messaging's integration tests.
        # The test client is the trusted proxy, so X-Forwarded-For can stand for distinct people.
        env = {
            **{name: value for name, value in os.environ.items() if not name.startswith("STRIPE_")},
            **(stripe.env() if stripe is not None else {}),
            "SEND_RATE_LIMIT": "100000",
            "SEND_RATE_BURST": "1000",
            "TRUSTED_PROXIES": "127.0.0.1/32",
            # The edge's uploads spool here, where the media tests can see that none is left behind.
            "MEDIA_SPOOL_DIR": str(Path(tmp) / "media-spool"),
            # Every test comes from 127.0.0.1 and makes many sessions, rooms and names; the anonymous
            # abuse limits themselves are covered by identity's and rooms' integration tests.
            **(
                {}
                if anonymous_limits
                else {
                    "ANONYMOUS_SESSION_LIMIT": "100000",
                    "ANONYMOUS_SESSION_BURST": "100000",
                    "ANONYMOUS_ROOM_LIMIT": "100000",
                    "ANONYMOUS_USERNAMES_PER_IP": "1000",
                }
            ),
            **({"REDIS_CLUSTER": "true"} if redis_cluster is not None else {}),
            **(extra_env or {}),
        }
        specs = service_specs(
            env, ports, database_url, redis_url, secrets, s3_env=s3.env() if s3 is not None else None
        )
        specs = _with_replicas(specs, edges=edges, messaging_processes=messaging_processes)
        second_edge = extra_edge_spec(specs, SECOND_EDGE, *free_ports(2), env=SECOND_EDGE_ENV)
        supervisor = Supervisor(stream=None, log_dir=log_dir)
        failure = ""
        try:
            supervisor.start_all(specs, timeout=STARTUP_TIMEOUT)
        except StartupError as exc:
            failure = f"the e2e platform did not start: {exc}\n(full logs in {log_dir})"
        except BaseException:
            supervisor.stop_all(timeout=5)
            raise
        if failure:
            supervisor.stop_all(timeout=5)
            pytest.fail(failure, pytrace=False)
        if stripe is not None:
            webhook = f"http://127.0.0.1:{ports.service['edge']}{STRIPE_WEBHOOK_PATH}"
            stripe.control.add_webhook_endpoint(webhook)
            stripe.control.add_webhook_endpoint(webhook, ["account.updated"], connect=True)
        try:
            yield Stack(
                supervisor=supervisor,
                specs={spec.name: spec for spec in [*specs, second_edge]},
                ports=ports,
                database_url=database_url,
                redis_url=redis_url,
                redis=redis,
                log_dir=log_dir,
                second_edge_spec=second_edge,
                postgres=postgres,
                stripe=stripe,
                s3=s3,
                redis_cluster=redis_cluster,
                edge_names=_named(specs, "edge"),
                messaging_names=_named(specs, "messaging"),
            )
        finally:
            supervisor.stop_all()
            # A test that stopped Redis must not leave it down for whoever runs next.
            if redis is not None and redis.process is None:
                redis.start(redis.datadir.parent / "redis.log", persist=False)
            # Nor Postgres.
            if postgres is not None and not (postgres.datadir / "postmaster.pid").exists():
                postgres.start(postgres.datadir.parent / "pg.log")


def _with_replicas(specs: list[ServiceSpec], *, edges: int, messaging_processes: int) -> list[ServiceSpec]:
    """`specs` with edge replicas (`edge.2`, …) and messaging replicas (`messaging.2`, …), each on
    ports of its own, and every process's MESSAGING_ADDR naming all the messaging processes, which
    gRPC's round-robin balancer spreads calls (and so Subscribe streams) over."""
    if edges <= 1 and messaging_processes <= 1:
        return specs
    extra: list[ServiceSpec] = []
    messaging = next(spec for spec in specs if spec.name == "messaging")
    for number in range(2, messaging_processes + 1):
        grpc_port, metrics_port = free_ports(2)
        extra.append(
            dataclasses.replace(
                messaging,
                name=f"messaging.{number}",
                env={**messaging.env, "GRPC_PORT": str(grpc_port), "METRICS_PORT": str(metrics_port)},
                ready=GrpcHealth(f"127.0.0.1:{grpc_port}"),
            )
        )
    for number in range(2, edges + 1):
        http_port, metrics_port = free_ports(2)
        extra.append(extra_edge_spec(specs, f"edge.{number}", http_port, metrics_port))
    everything = [*specs, *extra]
    by_name = {spec.name: spec for spec in everything}
    grpc_ports = [by_name[name].env["GRPC_PORT"] for name in _named(everything, "messaging")]
    if len(grpc_ports) > 1:
        address = "ipv4:///" + ",".join(f"127.0.0.1:{port}" for port in grpc_ports)
        everything = [
            dataclasses.replace(spec, env={**spec.env, "MESSAGING_ADDR": address}) for spec in everything
        ]
    return everything


def _named(specs: list[ServiceSpec], service: str) -> tuple[str, ...]:
    """The names of `service`'s processes among `specs`: the service's own, then its replicas."""
    return tuple(spec.name for spec in specs if spec.name.split(".")[0] == service)


@pytest.fixture(scope="session")
def stack(
    database_url: str, redis_url: str, datastores: tuple[Postgres, Redis], s3_server: SeaweedS3
) -> Iterator[Stack]:
    postgres, redis = datastores
    with running_stack(database_url, redis_url, redis, postgres=postgres, s3=s3_server) as running:
        yield running


def own_database(database_url: str, prefix: str) -> str:
    """A new database on the session's Postgres server, with every service's migrations applied."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = f"{database_url.rsplit('/', 1)[0]}/{name}"
    migrate(url, list(MIGRATED))
    return url


@contextlib.contextmanager
def stripe_platform_stack(
    database_url: str,
    redis_url: str,
    redis: Redis,
    fake_stripe_server: FakeStripeServer,
    *,
    name: str,
    reconcile_interval: float,
    s3: SeaweedS3 | None = None,
) -> Iterator[Stack]:
    """A platform on a database of its own whose payments run against a new platform of the fake
    Stripe API, reconciling with Stripe's list of events every `reconcile_interval` seconds."""
    fake = fake_stripe_server.new_platform()
    try:
        with running_stack(
            own_database(database_url, f"chatpop_{name.replace('-', '_')}"),
            redis_url,
            redis,
            extra_env={"RECONCILE_INTERVAL": str(reconcile_interval)},
            log_dir=LOG_DIR / name,
            stripe=fake,
            s3=s3,
        ) as running:
            yield running
    finally:
        fake.close()


@pytest.fixture(scope="session")
def stripe_stack(
    database_url: str,
    redis_url: str,
    datastores: tuple[Postgres, Redis],
    fake_stripe_server: FakeStripeServer,
    s3_server: SeaweedS3,
) -> Iterator[Stack]:
    """A platform whose payments run against the fake Stripe API, started only for the tests that ask
    for it; `stack.stripe` is its Stripe platform (keys, control client). Webhooks alone bring
    Stripe's news after the first round of reconciliation at start."""
    _, redis = datastores
    with stripe_platform_stack(
        database_url,
        redis_url,
        redis,
        fake_stripe_server,
        name="stripe",
        reconcile_interval=3600,
        s3=s3_server,
    ) as running:
        yield running


@pytest.fixture(scope="session")
def reconciling_stripe_stack(
    database_url: str,
    redis_url: str,
    datastores: tuple[Postgres, Redis],
    fake_stripe_server: FakeStripeServer,
    s3_server: SeaweedS3,
) -> Iterator[Stack]:
    """Like `stripe_stack`, with payments reconciling with Stripe's list of events every second."""
    _, redis = datastores
    with stripe_platform_stack(
        database_url,
        redis_url,
        redis,
        fake_stripe_server,
        name="stripe-reconciling",
        reconcile_interval=1,
        s3=s3_server,
    ) as running:
        yield running


@contextlib.contextmanager
def cluster_platform_stack(database_url: str, cluster: RedisCluster, name: str) -> Iterator[Stack]:
    """A platform on `cluster` (REDIS_CLUSTER=true) with two edge and two messaging processes, on a
    database of its own, media off."""
    with running_stack(
        own_database(database_url, f"chatpop_{name.replace('-', '_')}"),
        cluster.url,
        None,
        log_dir=LOG_DIR / name,
        redis_cluster=cluster,
        edges=2,
        messaging_processes=2,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def cluster_stack(database_url: str, redis_cluster: RedisCluster) -> Iterator[Stack]:
    """The platform on the session's 3-master Redis Cluster, two edges and two messaging processes."""
    with cluster_platform_stack(database_url, redis_cluster, "cluster") as running:
        yield running


@pytest.fixture
def cluster_ha_stack(database_url: str, redis_cluster_ha: RedisCluster) -> Iterator[Stack]:
    """A platform of its own on a 3+3 Redis Cluster of its own (a replica per master), for a test that
    kills a master: two edges and two messaging processes."""
    with cluster_platform_stack(database_url, redis_cluster_ha, "cluster-ha") as running:
        yield running


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/gRPC trace collector on a free port, for the observed stack."""
    receiver = OtlpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="session")
def observed_stack(
    database_url: str,
    redis_url: str,
    datastores: tuple[Postgres, Redis],
    otlp_receiver: OtlpReceiver,
    s3_server: SeaweedS3,
) -> Iterator[Stack]:
    """A second platform, started only for the tests that ask for it: traces exported over OTLP to
    `otlp_receiver` (standard OTEL_* variables only), the default send rate limit, and the payments
    ledger counted often, so metrics and traces can be watched as an SRE would. It has a database of
    its own: on a shared one the session platform's outbox relays could take its rows (a fulfilment
    done, and timed, by the other platform's payments)."""
    _, redis = datastores
    extra_env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "SEND_RATE_LIMIT": "10",
        "SEND_RATE_BURST": "10",
        "LEDGER_METRICS_INTERVAL": "0.2",
    }
    with running_stack(
        own_database(database_url, "chatpop_observed"),
        redis_url,
        redis,
        extra_env=extra_env,
        log_dir=LOG_DIR / "observed",
        s3=s3_server,
    ) as running:
        yield running


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client for the edge (REST)."""
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        yield http


@pytest.fixture
async def stripe_client(stripe_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client for the edge of `stripe_stack`; whatever the test did to the fake Stripe's webhook
    delivery (chaos, holding, pausing) or API (faults) is undone after it."""
    assert stripe_stack.stripe is not None
    async with (
        httpx.AsyncClient(base_url=stripe_stack.base_url, timeout=10) as http,
        calm_after(stripe_stack.stripe),
    ):
        yield http


@pytest.fixture
async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    """The OpenAPI document the running edge serves."""
    return dict((await client.get("/api/v1/openapi.json")).json())

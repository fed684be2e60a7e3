"""Fixtures shared by every tier: private Postgres and Redis on free ports, migrated once, and a
private S3 (SeaweedFS)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatpop_common.devstack import Postgres, Redis, RedisCluster, SeaweedS3, throwaway_datastores
from tests.mailbox import Mailbox, running_mailbox

pytest_plugins = ["tests.fakestripe.fixtures"]


@pytest.fixture(scope="session")
def datastores() -> Iterator[tuple[Postgres, Redis]]:
    root = Path(tempfile.mkdtemp(prefix="chatpop-test-", dir="/tmp"))
    with throwaway_datastores(root) as stores:
        yield stores


@pytest.fixture(scope="session")
def database_url(datastores: tuple[Postgres, Redis]) -> str:
    """A private database with every service's migrations applied."""
    from chatpop_common.migrate import migrate

    pg, _ = datastores
    migrate(pg.url, ["identity", "rooms", "messaging", "payments"])
    return pg.url


@pytest.fixture(scope="session")
def redis_url(datastores: tuple[Postgres, Redis]) -> str:
    return datastores[1].url


@pytest.fixture(scope="session")
def redis_server(datastores: tuple[Postgres, Redis]) -> Redis:
    """The Redis process itself, for tests that restart it."""
    return datastores[1]


@contextlib.contextmanager
def private_redis_cluster(prefix: str, *, replicas: int) -> Iterator[RedisCluster]:
    """A private 3-master Redis Cluster (`replicas` per master) on free ports, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    cluster = RedisCluster.on_free_ports(root / "cluster", masters=3, replicas=replicas)
    cluster.start(root / "redis-cluster.log", persist=False)
    try:
        yield cluster
    finally:
        cluster.stop(kill=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A private 3-master Redis Cluster on free ports for the session (REDIS_CLUSTER=true with
    `redis_cluster.url`)."""
    with private_redis_cluster("chatpop-rc-", replicas=0) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_ha() -> Iterator[RedisCluster]:
    """A private 3+3 Redis Cluster (a replica per master) of its own, for a test that kills a master."""
    with private_redis_cluster("chatpop-rcha-", replicas=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """A private S3 (SeaweedFS) on free ports with its own credentials and bucket, for the session."""
    root = Path(tempfile.mkdtemp(prefix="chatpop-s3-", dir="/tmp"))
    server = SeaweedS3.on_free_ports(root / "s3")
    server.start(root / "s3.log")
    try:
        yield server
    finally:
        server.stop(kill=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd, with AUTH) on a free port; SMTP_URL is `mailbox.url`."""
    with running_mailbox() as server:
        yield server

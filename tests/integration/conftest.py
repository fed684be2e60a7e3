"""Fixtures for the integration tier beyond the shared datastores (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chatpop_identity.keys import write_new_key
from tests.integration.identity_server import running_identity
from tests.integration.redis_targets import RedisTarget

if TYPE_CHECKING:
    from chatpop.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub as Stub


# Module-scoped: each identity test module gets its own signing key and server.
@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("identity-keys") / "signing.pem"
    write_new_key(path)
    return path


@pytest.fixture(scope="module")
async def stub(database_url: str, redis_url: str, key_file: Path) -> AsyncIterator[Stub]:
    """A stub for a running identity server (identity's test modules)."""
    async with running_identity(database_url, redis_url, key_file) as client:
        yield client


@pytest.fixture(params=["single", "cluster"])
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    """The session's single Redis, then the session's 3-master Redis Cluster: a test of a Redis user
    taking this runs against both."""
    if request.param == "cluster":
        return RedisTarget(request.getfixturevalue("redis_cluster").url, cluster=True)
    return RedisTarget(request.getfixturevalue("redis_url"), cluster=False)

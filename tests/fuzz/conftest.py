"""The fuzz tier: requests generated from the edge's OpenAPI document against the running platform.

The whole platform runs as real processes, started exactly as the e2e tier starts it
(`running_stack`); its logs go to test-artifacts/fuzz/. Before the fuzzer starts, a `World` is made
through the public API: an anonymous session, a room it hosts and joined, and that room's token, so
generated requests get past authentication and reach the services behind the edge.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chatpop_common.devstack import Postgres, Redis, SeaweedS3
from tests.artifacts import worker_artifacts
from tests.e2e.conftest import Stack, running_stack

LOG_DIR = worker_artifacts("fuzz")
# Hypothesis keeps what it learns in a directory of its own; here it stays out of the work tree.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(LOG_DIR / "hypothesis"))


@dataclass(frozen=True)
class World:
    """What the fuzzer's requests authenticate with, made through the public API."""

    base_url: str
    access_token: str
    room_code: str
    room_token: str

    def new_room(self) -> str:
        """A fresh room hosted by the session (for requests that use a room up, like closing it)."""
        return _create_room(self.base_url, self.access_token)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create_room(base_url: str, access_token: str) -> str:
    response = httpx.post(
        f"{base_url}/api/v1/rooms", json={"name": "fuzzed room"}, headers=_bearer(access_token), timeout=10
    )
    assert response.status_code == 201, response.text
    return str(response.json()["code"])


@pytest.fixture(scope="session")
def fuzz_stack(
    database_url: str, redis_url: str, datastores: tuple[Postgres, Redis], s3_server: SeaweedS3
) -> Iterator[Stack]:
    _, redis = datastores
    # With media on, so uploads reach the checks rather than stop at `media_disabled`.
    with running_stack(database_url, redis_url, redis, log_dir=LOG_DIR, s3=s3_server) as running:
        yield running


@pytest.fixture(scope="session")
def world(fuzz_stack: Stack) -> World:
    base_url = fuzz_stack.base_url
    session = httpx.post(f"{base_url}/api/v1/auth/anonymous", timeout=10)
    assert session.status_code == 201, session.text
    tokens: dict[str, Any] = session.json()
    access_token = str(tokens["access_token"])
    code = _create_room(base_url, access_token)
    joined = httpx.post(
        f"{base_url}/api/v1/rooms/{code}/join",
        json={"username": "FuzzHost"},
        headers=_bearer(access_token),
        timeout=10,
    )
    assert joined.status_code == 200, joined.text
    return World(
        base_url=base_url,
        access_token=access_token,
        room_code=code,
        room_token=str(joined.json()["room_token"]),
    )

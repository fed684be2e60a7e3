"""The platform starts as real processes and answers through the edge."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack


async def test_liveness_and_readiness(client: httpx.AsyncClient) -> None:
    live = await client.get("/healthz")
    ready = await client.get("/readyz")
    assert live.status_code == 200
    assert ready.status_code == 200


async def test_anonymous_session_through_the_edge(client: httpx.AsyncClient) -> None:
    # The edge's channel reconnects on its own schedule; until then calls fail cleanly with 503.
    for _ in range(300):
        created = await client.post("/api/v1/auth/anonymous")
        if created.status_code != 503:
            break
        assert created.json()["error"]["code"] == "service_unavailable"
        await asyncio.sleep(0.1)
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["identity"]["kind"] == "anonymous"
    assert session["access_token"]
    assert session["refresh_token"]

    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {session['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["identity"]["id"] == session["identity"]["id"]


async def test_every_service_exposes_metrics(stack: Stack, client: httpx.AsyncClient) -> None:
    for service in stack.ports.metrics:
        response = await client.get(stack.metrics_url(service))
        assert response.status_code == 200, service


async def test_api_documents_are_served(client: httpx.AsyncClient) -> None:
    document = await client.get("/api/v1/openapi.json")
    assert document.status_code == 200
    assert "/api/v1/auth/anonymous" in document.json()["paths"]
    docs = await client.get("/api/v1/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]


async def test_a_killed_service_is_restarted_by_the_harness(stack: Stack, client: httpx.AsyncClient) -> None:
    before = stack.supervisor.pid("identity")
    assert await stack.akill("identity") == -9
    assert not stack.supervisor.running("identity")

    await stack.astart("identity")

    after = stack.supervisor.pid("identity")
    assert after is not None
    assert after != before
    # The edge's channel reconnects on its own schedule; until then calls fail cleanly with 503.
    for _ in range(300):
        created = await client.post("/api/v1/auth/anonymous")
        if created.status_code != 503:
            break
        assert created.json()["error"]["code"] == "service_unavailable"
        await asyncio.sleep(0.1)
    assert created.status_code == 201, created.text

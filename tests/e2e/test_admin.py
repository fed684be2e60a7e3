"""Admins and the audit log through the edge: an operator grants the role with the command line
(a separate process on the platform's database), the admin signs in and reads the security events,
and everyone else is refused."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import httpx

from tests.admin_cli import grant_admin
from tests.e2e.chat import anonymous, bearer, documented

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

PASSWORD = "an e2e admin passphrase"
AUDIT = "/api/v1/admin/audit"


def _email() -> str:
    return f"admin-{uuid.uuid4().hex[:12]}@example.com"


async def _register(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    response = await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _login(client: httpx.AsyncClient, email: str, network: str) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/auth/login",
        json={"email": email, "password": PASSWORD},
        headers={"X-Forwarded-For": network},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _audit(
    client: httpx.AsyncClient, openapi: dict[str, Any], token: str | None, status: int, **params: Any
) -> Any:
    response = await client.get(AUDIT, params=params, headers=bearer(token) if token else {})
    assert response.status_code == status, response.text
    return documented(openapi, "GET", AUDIT, response)


async def _is_admin(client: httpx.AsyncClient, openapi: dict[str, Any], token: str) -> bool:
    """What `GET /auth/me` tells the web client, which shows its link to /admin by it."""
    response = await client.get("/api/v1/auth/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    return bool(documented(openapi, "GET", "/api/v1/auth/me", response)["is_admin"])


async def test_an_admin_granted_on_the_command_line_reads_the_login_events(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    email = _email()
    account = (await _register(client, email))["identity"]["id"]
    before = await _login(client, email, "198.51.100.40")
    refused = await _audit(client, openapi, before["access_token"], 403)
    assert refused["error"]["code"] == "forbidden"
    assert await _is_admin(client, openapi, before["access_token"]) is False

    await grant_admin(stack, email)

    # The token issued before the grant still says "not an admin"; signing in again brings the role.
    assert (await _audit(client, openapi, before["access_token"], 403))["error"]["code"] == "forbidden"
    assert await _is_admin(client, openapi, before["access_token"]) is False
    admin = await _login(client, email, "198.51.100.41")
    token = admin["access_token"]
    assert await _is_admin(client, openapi, token) is True

    page = await _audit(client, openapi, token, 200, kind="identity.login_succeeded", actor=account)
    logins = page["events"]
    assert [event["target"] for event in logins] == [account, account]
    assert logins[0]["id"] > logins[1]["id"]
    # The two sign-ins came from two networks; the log holds their keyed hashes, never the IPs.
    hashes = {event["ip_hash"] for event in logins}
    assert len(hashes) == 2 and None not in hashes
    assert not any("198.51.100" in str(event) for event in logins)

    grants = await _audit(client, openapi, token, 200, kind="identity.admin_granted", target=account)
    assert [(event["actor"], event["target"]) for event in grants["events"]] == [("cli", account)]

    # Paging back in time, one event at a time.
    first = await _audit(client, openapi, token, 200, target=account, limit=1)
    assert first["events"][0]["kind"] == "identity.login_succeeded"
    assert first["next_before"] == first["events"][0]["id"]
    second = await _audit(client, openapi, token, 200, target=account, limit=1, before=first["next_before"])
    assert second["events"][0]["kind"] == "identity.admin_granted"
    assert second["events"][0]["id"] < first["events"][0]["id"]

    invalid = await _audit(client, openapi, token, 422, limit=201)
    assert invalid["error"]["code"] == "invalid_request"
    assert (await _audit(client, openapi, token, 422, kind="Login"))["error"]["code"] == "invalid_request"


async def test_everyone_but_admins_is_refused(client: httpx.AsyncClient, openapi: dict[str, Any]) -> None:
    email = _email()
    account = await _register(client, email)
    for token in (await anonymous(client), account["access_token"]):
        body = await _audit(client, openapi, token, 403)
        assert body["error"]["code"] == "forbidden"
    assert (await _audit(client, openapi, None, 401))["error"]["code"] == "unauthenticated"
    assert (await _audit(client, openapi, "not.a.token", 401))["error"]["code"] == "invalid_token"

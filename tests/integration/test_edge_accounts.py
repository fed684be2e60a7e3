"""Accounts through the edge's REST API: forgotten and changed passwords, reserved username changes.

A real edge (uvicorn) in front of the real identity and rooms servers (in-process, on free ports,
against the session's Postgres and Redis); reset mails go to the session's SMTP server. Every
response body is checked against the OpenAPI document the edge serves.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest_asyncio
from prometheus_client import REGISTRY
from test_edge_support import IP_HASH_KEY, assert_matches_openapi, json_or_none, running_edge
from test_rooms_service import identity_server, rooms_serving, signing_key

from chatpop_common.devstack import free_port
from chatpop_edge.settings import EdgeSettings
from tests.mailbox import Mailbox

__all__ = ["signing_key"]

PUBLIC_URL = "https://chat.example.test"
PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"
FORGOT_ANSWER = "If an account uses this address, we sent it a link to reset the password. Check your inbox."
_LETTERS = "bdghjmnpqrvwxz"


def _email() -> str:
    return f"edge-{uuid.uuid4().hex[:12]}@example.com"


def _tail() -> str:
    """Nine consonants: a random name part that never spells a word the profanity filter refuses."""
    return "".join(_LETTERS[b % len(_LETTERS)] for b in uuid.uuid4().bytes[:9])


@dataclass
class Edge:
    http: httpx.AsyncClient
    openapi: dict[str, Any]

    async def call(
        self,
        method: str,
        url: str,
        *,
        expect: int,
        token: str | None = None,
        template: str | None = None,
        **kw: Any,
    ) -> Any:
        """Request, check the status, and check the body against the documented response."""
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await self.http.request(method, url, headers=headers, **kw)
        assert response.status_code == expect, response.text
        body = json_or_none(response.content)
        assert_matches_openapi(self.openapi, method, template or url, response.status_code, body)
        if expect == 429:
            assert int(response.headers["Retry-After"]) == body["error"]["retry_after"] > 0
        return body

    async def register(self, email: str | None = None, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = await self.call(
            "POST",
            "/api/v1/auth/register",
            json={"email": email or _email(), "password": PASSWORD, **fields},
            expect=201,
        )
        return body

    async def login(self, email: str, password: str, expect: int = 200) -> Any:
        return await self.call(
            "POST", "/api/v1/auth/login", json={"email": email, "password": password}, expect=expect
        )

    async def refresh(self, refresh_token: str, expect: int) -> Any:
        return await self.call(
            "POST", "/api/v1/auth/refresh", json={"refresh_token": refresh_token}, expect=expect
        )


def _serve_edge(identity_addr: str, rooms_addr: str, **overrides: Any) -> Any:
    nowhere = f"127.0.0.1:{free_port()}"
    settings = EdgeSettings(
        identity_addr=identity_addr,
        rooms_addr=rooms_addr,
        messaging_addr=nowhere,
        payments_addr=nowhere,
        ip_hash_key=IP_HASH_KEY,
        public_url=PUBLIC_URL,
        http_port=free_port(),
        media_url_key="m" * 32,
        service_token_secret="s" * 32,
        **{"rpc_timeout": 5.0, **overrides},
    )
    return running_edge(settings)


@pytest_asyncio.fixture(scope="module")
async def platform_addresses(
    database_url: str, redis_url: str, signing_key: Path, mailbox: Mailbox
) -> AsyncIterator[tuple[str, str]]:
    # The per-network limit is exercised in identity's tests; here every request comes from 127.0.0.1.
    async with (
        identity_server(
            database_url,
            redis_url,
            signing_key,
            smtp_url=mailbox.url,
            public_url=PUBLIC_URL,
            password_reset_network_limit=1000,
        ) as identity_addr,
        rooms_serving(database_url, redis_url, identity_addr) as rooms_addr,
    ):
        yield identity_addr, rooms_addr


@pytest_asyncio.fixture(scope="module")
async def edge(platform_addresses: tuple[str, str]) -> AsyncIterator[Edge]:
    identity_addr, rooms_addr = platform_addresses
    async with (
        _serve_edge(identity_addr, rooms_addr) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        openapi = (await http.get("/api/v1/openapi.json")).json()
        yield Edge(http, openapi)


def _token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def _error(body: Any) -> tuple[str, str]:
    assert set(body) == {"error"}, body
    return body["error"]["code"], body["error"]["message"]


# --- forgot and reset -------------------------------------------------------------------------


async def test_a_forgotten_password_is_reset_through_the_mailed_link(edge: Edge, mailbox: Mailbox) -> None:
    email = _email()
    registered = await edge.register(email)
    other_device = await edge.login(email, PASSWORD)

    known = await edge.call("POST", "/api/v1/auth/password/forgot", json={"email": email}, expect=202)
    unknown = await edge.call("POST", "/api/v1/auth/password/forgot", json={"email": _email()}, expect=202)
    assert known == unknown == {"message": FORGOT_ANSWER}

    link = (await mailbox.wait_for(email)).reset_link()
    assert link.startswith(f"{PUBLIC_URL}/reset-password?token=")
    reset = await edge.call(
        "POST",
        "/api/v1/auth/password/reset",
        json={"token": _token_of(link), "new_password": NEW_PASSWORD},
        expect=200,
    )
    assert reset["identity"]["id"] == registered["identity"]["id"]
    assert reset["identity"]["email"] == email
    me = await edge.call("GET", "/api/v1/auth/me", token=reset["access_token"], expect=200)
    assert me["identity"]["email"] == email

    # Signed in with the new password only; every earlier session is over.
    assert _error(await edge.login(email, PASSWORD, expect=401))[0] == "invalid_credentials"
    await edge.login(email, NEW_PASSWORD)
    for earlier in (registered["refresh_token"], other_device["refresh_token"]):
        assert _error(await edge.refresh(earlier, 401))[0] in (
            "invalid_refresh_token",
            "refresh_token_reused",
        )
    await edge.refresh(reset["refresh_token"], 200)

    used = await edge.call(
        "POST",
        "/api/v1/auth/password/reset",
        json={"token": _token_of(link), "new_password": "another passphrase"},
        expect=422,
    )
    assert _error(used) == (
        "reset_token_used",
        "This reset link was already used. Ask for a new one if you still need it.",
    )


async def test_reset_and_forgot_refuse_bad_input_clearly(edge: Edge, mailbox: Mailbox) -> None:
    for body, code in (
        ({"email": "not an email"}, "invalid_email"),
        ({}, "invalid_request"),
        ({"email": _email(), "extra": 1}, "invalid_request"),
    ):
        error = await edge.call("POST", "/api/v1/auth/password/forgot", json=body, expect=422)
        assert _error(error)[0] == code
    invalid = await edge.call(
        "POST",
        "/api/v1/auth/password/reset",
        json={"token": "no-such-token", "new_password": NEW_PASSWORD},
        expect=422,
    )
    assert _error(invalid)[0] == "reset_token_invalid"

    email = _email()
    await edge.register(email)
    await edge.call("POST", "/api/v1/auth/password/forgot", json={"email": email}, expect=202)
    token = _token_of((await mailbox.wait_for(email)).reset_link())
    weak = await edge.call(
        "POST", "/api/v1/auth/password/reset", json={"token": token, "new_password": "short"}, expect=422
    )
    assert _error(weak) == ("weak_password", "The password must be at least 8 characters long.")
    # The weak attempt left the link usable.
    await edge.call(
        "POST", "/api/v1/auth/password/reset", json={"token": token, "new_password": NEW_PASSWORD}, expect=200
    )


async def test_reset_requests_for_one_address_are_limited_with_words_for_people(edge: Edge) -> None:
    email = _email()
    for _ in range(3):
        await edge.call("POST", "/api/v1/auth/password/forgot", json={"email": email}, expect=202)
    limited = await edge.call("POST", "/api/v1/auth/password/forgot", json={"email": email}, expect=429)
    assert _error(limited) == (
        "too_many_reset_requests",
        "Too many password reset requests. Try again in 60 minutes.",
    )


# --- change password --------------------------------------------------------------------------


async def test_changing_the_password_signs_other_devices_out(edge: Edge) -> None:
    email = _email()
    registered = await edge.register(email)
    laptop = await edge.login(email, PASSWORD)
    token = registered["access_token"]

    wrong = await edge.call(
        "POST",
        "/api/v1/auth/password",
        token=token,
        json={"current_password": "not it", "new_password": NEW_PASSWORD},
        expect=403,
    )
    assert _error(wrong) == ("current_password_incorrect", "Your current password is not right.")
    weak = await edge.call(
        "POST",
        "/api/v1/auth/password",
        token=token,
        json={"current_password": PASSWORD, "new_password": "1234"},
        expect=422,
    )
    assert _error(weak)[0] == "weak_password"
    unauthenticated = await edge.call(
        "POST",
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        expect=401,
    )
    assert _error(unauthenticated)[0] == "unauthenticated"
    anonymous = await edge.call("POST", "/api/v1/auth/anonymous", expect=201)
    refused = await edge.call(
        "POST",
        "/api/v1/auth/password",
        token=anonymous["access_token"],
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        expect=403,
    )
    assert _error(refused)[0] == "account_required"

    changed = await edge.call(
        "POST",
        "/api/v1/auth/password",
        token=token,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        expect=200,
    )
    assert changed["identity"]["id"] == registered["identity"]["id"]
    for other in (registered["refresh_token"], laptop["refresh_token"]):
        await edge.refresh(other, 401)
    await edge.refresh(changed["refresh_token"], 200)
    await edge.login(email, PASSWORD, expect=401)
    await edge.login(email, NEW_PASSWORD)


# --- reserved username ------------------------------------------------------------------------


async def test_changing_the_reserved_username_takes_the_old_badge_off_and_holds_the_name_back(
    edge: Edge,
) -> None:
    old, new = f"Was_{_tail()}", f"Now_{_tail()}"
    account = await edge.register(reserved_username=old)
    token = account["access_token"]
    host = await edge.call("POST", "/api/v1/auth/anonymous", expect=201)
    room = await edge.call(
        "POST", "/api/v1/rooms", token=host["access_token"], json={"name": "Badges"}, expect=201
    )
    code = room["code"]
    joined = await edge.call(
        "POST",
        f"/api/v1/rooms/{code}/join",
        template="/api/v1/rooms/{code}/join",
        token=token,
        json={},
        expect=200,
    )
    assert (joined["participant"]["username"], joined["participant"]["verified"]) == (old, True)

    changed = await edge.call(
        "PUT", "/api/v1/auth/me/reserved-username", token=token, json={"reserved_username": new}, expect=200
    )
    assert changed["identity"]["reserved_username"] == new
    mine = await edge.call(
        "GET", f"/api/v1/rooms/{code}/me", template="/api/v1/rooms/{code}/me", token=token, expect=200
    )
    assert (mine["participant"]["username"], mine["participant"]["verified"]) == (old, False)

    too_soon = await edge.call(
        "PUT",
        "/api/v1/auth/me/reserved-username",
        token=token,
        json={"reserved_username": f"Again_{_tail()}"},
        expect=429,
    )
    assert _error(too_soon) == (
        "username_change_too_soon",
        "You changed your reserved username recently. You can change it again in 24 hours.",
    )

    stranger = await edge.register()
    availability = await edge.call(
        "GET",
        f"/api/v1/auth/usernames/{old}",
        template="/api/v1/auth/usernames/{name}",
        token=stranger["access_token"],
        expect=200,
    )
    assert (availability["available"], availability["reason"]) == (False, "username_quarantined")
    assert re.fullmatch(
        r"That username was given up recently .* It is free again in 30 days\.", availability["message"]
    )
    taken = await edge.call(
        "PUT",
        "/api/v1/auth/me/reserved-username",
        token=stranger["access_token"],
        json={"reserved_username": old},
        expect=409,
    )
    assert _error(taken)[0] == "username_quarantined"


async def test_the_name_changes_even_when_rooms_cannot_take_the_badge_off(
    platform_addresses: tuple[str, str],
) -> None:
    failures = "chatpop_edge_badge_clear_failures_total"
    before = REGISTRY.get_sample_value(failures) or 0.0
    identity_addr, _rooms = platform_addresses
    # rooms is unreachable for this edge: the change stands, the failure is counted.
    async with (
        _serve_edge(identity_addr, f"127.0.0.1:{free_port()}", rpc_timeout=0.5) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        edge = Edge(http, (await http.get("/api/v1/openapi.json")).json())
        account = await edge.register(reserved_username=f"Old_{_tail()}")
        new = f"New_{_tail()}"
        changed = await edge.call(
            "PUT",
            "/api/v1/auth/me/reserved-username",
            token=account["access_token"],
            json={"reserved_username": new},
            expect=200,
        )
        assert changed["identity"]["reserved_username"] == new
    await asyncio.sleep(0)
    assert (REGISTRY.get_sample_value(failures) or 0.0) == before + 1

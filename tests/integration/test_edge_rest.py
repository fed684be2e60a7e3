"""REST v1 through a real edge (uvicorn) in front of fake gRPC services.

Every response body is checked against the OpenAPI document the edge itself serves.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from test_edge_support import (
    IP_HASH_KEY,
    PUBLIC_URL,
    FakeServices,
    assert_matches_openapi,
    edge_settings,
    fake_services,
    json_or_none,
    running_edge,
    unique,
)

from chatpop_common.devstack import free_port


@dataclass
class Edge:
    fakes: FakeServices
    http: httpx.AsyncClient
    openapi: dict[str, Any]

    async def call(
        self,
        method: str,
        url: str,
        template: str,
        *,
        token: str | None = None,
        expect: int,
        **kwargs: Any,
    ) -> Any:
        """Make a request, check its status and that the body matches the OpenAPI response schema."""
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await self.http.request(method, url, headers=headers, **kwargs)
        assert response.status_code == expect, response.text
        body = json_or_none(response.content)
        assert_matches_openapi(self.openapi, method, template, response.status_code, body)
        return body

    async def anonymous(self) -> str:
        body = await self.call("POST", "/api/v1/auth/anonymous", "/api/v1/auth/anonymous", expect=201)
        return str(body["access_token"])

    async def room(self, token: str, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = await self.call(
            "POST", "/api/v1/rooms", "/api/v1/rooms", token=token, json={"name": "Room", **fields}, expect=201
        )
        return body

    async def join(self, code: str, token: str, username: str | None = None, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = await self.call(
            "POST",
            f"/api/v1/rooms/{code}/join",
            "/api/v1/rooms/{code}/join",
            token=token,
            json={"username": username or unique("user"), **fields},
            expect=200,
        )
        return body


@pytest_asyncio.fixture(scope="module")
async def edge() -> AsyncIterator[Edge]:
    async with fake_services() as fakes:
        settings = edge_settings(fakes, trusted_proxies="127.0.0.1/32", max_body_bytes=4096)
        async with running_edge(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
            openapi = (await http.get("/api/v1/openapi.json")).json()
            yield Edge(fakes, http, openapi)


def ip_hash(ip: str) -> str:
    return hmac.new(IP_HASH_KEY.encode(), ip.encode(), hashlib.sha256).hexdigest()


def error_of(body: Any) -> tuple[str, str]:
    assert set(body) == {"error"}, body
    return body["error"]["code"], body["error"]["message"]


# --- auth ----------------------------------------------------------------------------------------


async def test_anonymous_session_sends_the_hash_of_the_client_ip(edge: Edge) -> None:
    body = await edge.call("POST", "/api/v1/auth/anonymous", "/api/v1/auth/anonymous", expect=201)
    assert body["identity"]["kind"] == "anonymous"
    assert body["access_token"] and body["refresh_token"]
    assert body["token_type"] == "Bearer"
    assert edge.fakes.identity.ip_hashes[-1] == ip_hash("127.0.0.1")

    # The socket peer (127.0.0.1) is a trusted proxy here, so the forwarded client counts.
    await edge.call(
        "POST",
        "/api/v1/auth/anonymous",
        "/api/v1/auth/anonymous",
        headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"},
        expect=201,
    )
    assert edge.fakes.identity.ip_hashes[-1] == ip_hash("203.0.113.9")
    assert "203.0.113.9" not in edge.fakes.identity.ip_hashes


async def test_register_login_refresh_logout_and_me(edge: Edge) -> None:
    email = f"{unique()}@example.test"
    registered = await edge.call(
        "POST",
        "/api/v1/auth/register",
        "/api/v1/auth/register",
        json={"email": email, "password": "correct horse", "reserved_username": "Reserved_1"},
        expect=201,
    )
    assert registered["identity"] == {
        **registered["identity"],
        "kind": "user",
        "email": email,
        "reserved_username": "Reserved_1",
    }

    body = await edge.call(
        "POST",
        "/api/v1/auth/register",
        "/api/v1/auth/register",
        json={"email": email, "password": "x"},
        expect=409,
    )
    assert error_of(body)[0] == "email_taken"

    login = await edge.call(
        "POST",
        "/api/v1/auth/login",
        "/api/v1/auth/login",
        json={"email": email, "password": "correct horse"},
        expect=200,
    )
    assert login["identity"]["id"] == registered["identity"]["id"]
    body = await edge.call(
        "POST",
        "/api/v1/auth/login",
        "/api/v1/auth/login",
        json={"email": email, "password": "wrong"},
        expect=401,
    )
    assert error_of(body)[0] == "invalid_credentials"

    me = await edge.call("GET", "/api/v1/auth/me", "/api/v1/auth/me", token=login["access_token"], expect=200)
    assert me["identity"]["id"] == registered["identity"]["id"]

    refreshed = await edge.call(
        "POST",
        "/api/v1/auth/refresh",
        "/api/v1/auth/refresh",
        json={"refresh_token": login["refresh_token"]},
        expect=200,
    )
    assert refreshed["refresh_token"] != login["refresh_token"]
    body = await edge.call(
        "POST",
        "/api/v1/auth/refresh",
        "/api/v1/auth/refresh",
        json={"refresh_token": login["refresh_token"]},
        expect=401,
    )
    assert error_of(body)[0] == "invalid_refresh_token"

    await edge.call(
        "POST",
        "/api/v1/auth/logout",
        "/api/v1/auth/logout",
        json={"refresh_token": refreshed["refresh_token"]},
        expect=204,
    )
    body = await edge.call(
        "POST",
        "/api/v1/auth/logout",
        "/api/v1/auth/logout",
        json={"refresh_token": refreshed["refresh_token"]},
        expect=401,
    )
    assert error_of(body)[0] == "invalid_refresh_token"


async def test_me_without_a_token_is_401(edge: Edge) -> None:
    response = await edge.http.get("/api/v1/auth/me")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert error_of(response.json())[0] == "unauthenticated"
    assert_matches_openapi(edge.openapi, "GET", "/api/v1/auth/me", 401, response.json())


async def test_service_errors_keep_their_code_and_internal_errors_hide_details(edge: Edge) -> None:
    body = await edge.call(
        "POST",
        "/api/v1/auth/register",
        "/api/v1/auth/register",
        json={"email": "not-an-email", "password": "long enough"},
        expect=422,
    )
    assert error_of(body) == ("invalid_email", "email is not valid")

    body = await edge.call(
        "POST",
        "/api/v1/auth/register",
        "/api/v1/auth/register",
        json={"email": f"explode{unique()}@example.test", "password": "long enough"},
        expect=500,
    )
    assert error_of(body) == ("internal", "Something went wrong on our side.")
    assert "hunter2" not in str(body)


async def test_jwks_lists_identity_keys(edge: Edge) -> None:
    response = await edge.http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    body = response.json()
    assert_matches_openapi(edge.openapi, "GET", "/.well-known/jwks.json", 200, body)
    assert body["keys"] == [
        {
            "kid": edge.fakes.signer.kid,
            "kty": "OKP",
            "crv": "Ed25519",
            "x": edge.fakes.signer.jwk_x(),
            "alg": "EdDSA",
            "use": "sig",
        }
    ]
    assert "max-age" in response.headers["Cache-Control"]


# --- request validation and transport errors ------------------------------------------------------


async def test_validation_errors_name_the_field(edge: Edge) -> None:
    body = await edge.call(
        "POST", "/api/v1/auth/login", "/api/v1/auth/login", json={"email": "a@example.test"}, expect=422
    )
    code, message = error_of(body)
    assert code == "invalid_request"
    assert message.startswith("password:")

    body = await edge.call(
        "POST",
        "/api/v1/auth/login",
        "/api/v1/auth/login",
        json={"email": "a@example.test", "password": "x", "remember": True},
        expect=422,
    )
    assert error_of(body)[1].startswith("remember:")


async def test_malformed_json_is_400(edge: Edge) -> None:
    body = await edge.call(
        "POST",
        "/api/v1/auth/login",
        "/api/v1/auth/login",
        content=b'{"email": "a@example.test", "password": ',
        headers={"Content-Type": "application/json"},
        expect=400,
    )
    assert error_of(body)[0] == "malformed_json"


async def test_oversized_body_is_413_before_parsing(edge: Edge) -> None:
    big = {"email": "a@example.test", "password": "x" * 5000}
    body = await edge.call("POST", "/api/v1/auth/login", "/api/v1/auth/login", json=big, expect=413)
    assert error_of(body)[0] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    # Without a Content-Length (chunked), the limit still holds.
    response = await edge.http.post(
        "/api/v1/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert error_of(response.json())[0] == "payload_too_large"


async def test_unknown_route_and_method_get_error_json(edge: Edge) -> None:
    response = await edge.http.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert error_of(response.json())[0] == "not_found"
    response = await edge.http.put("/api/v1/auth/me")
    assert response.status_code == 405
    assert error_of(response.json())[0] == "method_not_allowed"


async def test_security_headers_on_every_response(edge: Edge) -> None:
    responses = [
        await edge.http.get("/healthz"),
        await edge.http.get("/api/v1/nothing-here"),
        await edge.http.post("/api/v1/auth/login", content=b"x" * 5000),
        await edge.http.post("/api/v1/auth/login", json={}),
    ]
    for response in responses:
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-eval" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Strict-Transport-Security" not in response.headers


async def test_hsts_only_when_a_trusted_proxy_saw_tls(edge: Edge) -> None:
    response = await edge.http.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_docs_page_is_served_with_a_strict_policy(edge: Edge) -> None:
    response = await edge.http.get("/api/v1/docs")
    assert response.status_code == 200
    assert "/api/v1/openapi.json" in response.text
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp


# --- health ---------------------------------------------------------------------------------------


async def test_healthz_and_readyz(edge: Edge) -> None:
    assert await edge.call("GET", "/healthz", "/healthz", expect=200) == {"status": "ok"}
    assert await edge.call("GET", "/readyz", "/readyz", expect=200) == {"status": "ready"}


async def test_readyz_and_calls_fail_with_503_when_services_are_down(edge: Edge) -> None:
    dead = f"127.0.0.1:{free_port()}"
    settings = edge_settings(edge.fakes, rooms_addr=dead, payments_addr=dead, rpc_timeout=2.0)
    async with running_edge(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/readyz")
        assert response.status_code == 503
        code, message = error_of(response.json())
        assert code == "not_ready"
        assert "payments" in message and "rooms" in message
        assert_matches_openapi(edge.openapi, "GET", "/readyz", 503, response.json())

        response = await http.get("/api/v1/rooms/ABCDEFGH")
        assert response.status_code == 503
        assert error_of(response.json())[0] == "service_unavailable"
        assert_matches_openapi(edge.openapi, "GET", "/api/v1/rooms/{code}", 503, response.json())


# --- rooms ----------------------------------------------------------------------------------------


async def test_create_get_and_update_a_room(edge: Edge) -> None:
    host = await edge.anonymous()
    response = await edge.http.post(
        "/api/v1/rooms",
        json={"name": "Friday", "description": "chat", "theme": "ocean-blue", "media": {"photo": True}},
        headers={"Authorization": f"Bearer {host}"},
    )
    assert response.status_code == 201
    room = response.json()
    assert_matches_openapi(edge.openapi, "POST", "/api/v1/rooms", 201, room)
    assert room["url"] == f"{PUBLIC_URL}/c/{room['code']}"
    assert response.headers["Location"] == f"/api/v1/rooms/{room['code']}"
    assert (room["name"], room["theme"], room["visibility"]) == ("Friday", "ocean-blue", "public")
    assert room["media"] == {"photo": True, "voice": False, "video": False}
    assert room["retention_days"] == 30
    assert "access_code" not in room and "host_id" not in room

    fetched = await edge.call("GET", f"/api/v1/rooms/{room['code']}", "/api/v1/rooms/{code}", expect=200)
    assert fetched == room

    updated = await edge.call(
        "PATCH",
        f"/api/v1/rooms/{room['code']}",
        "/api/v1/rooms/{code}",
        token=host,
        json={"name": "Saturday", "retention_days": 0},
        expect=200,
    )
    assert (updated["name"], updated["retention_days"], updated["theme"]) == ("Saturday", 0, "ocean-blue")

    stranger = await edge.anonymous()
    body = await edge.call(
        "PATCH",
        f"/api/v1/rooms/{room['code']}",
        "/api/v1/rooms/{code}",
        token=stranger,
        json={"name": "Mine now"},
        expect=403,
    )
    assert error_of(body)[0] == "not_host"


async def test_room_errors(edge: Edge) -> None:
    body = await edge.call("POST", "/api/v1/rooms", "/api/v1/rooms", json={"name": "x"}, expect=401)
    assert error_of(body)[0] == "unauthenticated"

    token = await edge.anonymous()
    body = await edge.call(
        "POST", "/api/v1/rooms", "/api/v1/rooms", token=token, json={"name": "x", "theme": "neon"}, expect=422
    )
    assert error_of(body)[1].startswith("theme:")

    body = await edge.call(
        "POST",
        "/api/v1/rooms",
        "/api/v1/rooms",
        token=token,
        json={"name": "x", "visibility": "private"},
        expect=422,
    )
    assert error_of(body)[0] == "access_code_required"

    response = await edge.http.post(
        "/api/v1/rooms", json={"name": "too-many"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "42"
    assert error_of(response.json())[0] == "room_limit"
    assert_matches_openapi(edge.openapi, "POST", "/api/v1/rooms", 429, response.json())

    body = await edge.call("GET", "/api/v1/rooms/NOSUCHROOM", "/api/v1/rooms/{code}", expect=404)
    assert error_of(body)[0] == "room_not_found"
    body = await edge.call(
        "PATCH",
        "/api/v1/rooms/NOSUCHROOM",
        "/api/v1/rooms/{code}",
        token=token,
        json={"name": "y"},
        expect=404,
    )
    assert error_of(body)[0] == "room_not_found"


async def test_join_returns_a_room_token_and_hashes_the_ip(edge: Edge) -> None:
    host = await edge.anonymous()
    room = await edge.room(host, visibility="private", access_code="sesame")
    guest = await edge.anonymous()
    username = unique("Guest")

    joined = await edge.join(room["code"], guest, username, access_code="sesame")
    assert joined["participant"]["username"] == username
    assert joined["participant"]["room_id"] == room["id"]
    assert joined["room"]["id"] == room["id"]
    assert joined["room_token"] and joined["room_token_expires_in"] > 0
    assert edge.fakes.rooms.join_ip_hashes[-1] == ip_hash("127.0.0.1")

    other = await edge.anonymous()
    body = await edge.call(
        "POST",
        f"/api/v1/rooms/{room['code']}/join",
        "/api/v1/rooms/{code}/join",
        token=other,
        json={"username": username.upper(), "access_code": "sesame"},
        expect=409,
    )
    assert error_of(body)[0] == "username_taken"
    body = await edge.call(
        "POST",
        f"/api/v1/rooms/{room['code']}/join",
        "/api/v1/rooms/{code}/join",
        token=other,
        json={"username": unique("u"), "access_code": "wrong"},
        expect=403,
    )
    assert error_of(body)[0] == "wrong_access_code"
    body = await edge.call(
        "POST",
        "/api/v1/rooms/NOSUCHROOM/join",
        "/api/v1/rooms/{code}/join",
        token=other,
        json={"username": unique("u")},
        expect=404,
    )
    assert error_of(body)[0] == "room_not_found"


# --- messages -------------------------------------------------------------------------------------


async def test_send_is_idempotent_and_history_pages_backwards(edge: Edge) -> None:
    host = await edge.anonymous()
    room = await edge.room(host)
    token = (await edge.join(room["code"], host))["room_token"]
    url = f"/api/v1/rooms/{room['code']}/messages"
    template = "/api/v1/rooms/{code}/messages"

    first = await edge.call(
        "POST", url, template, token=token, json={"client_msg_id": "m-1", "text": "hello"}, expect=201
    )
    assert first["created"] is True
    assert first["message"]["seq"] == 1 and first["message"]["text"] == "hello"
    assert first["message"]["client_msg_id"] == "m-1"
    assert first["message"]["reply_to_seq"] is None

    retry = await edge.call(
        "POST", url, template, token=token, json={"client_msg_id": "m-1", "text": "hello"}, expect=200
    )
    assert retry["created"] is False and retry["message"] == first["message"]

    for index in range(2, 6):
        await edge.call(
            "POST",
            url,
            template,
            token=token,
            json={"client_msg_id": f"m-{index}", "text": f"text {index}", "reply_to_seq": 1},
            expect=201,
        )

    page = await edge.call("GET", url, template, token=token, params={"limit": 2}, expect=200)
    assert [m["seq"] for m in page["messages"]] == [5, 4]
    assert page["has_more"] is True and page["last_seq"] == 5
    assert page["messages"][0]["reply_to_seq"] == 1
    page = await edge.call(
        "GET", url, template, token=token, params={"before_seq": 4, "limit": 5}, expect=200
    )
    assert [m["seq"] for m in page["messages"]] == [3, 2, 1]
    assert page["has_more"] is False

    body = await edge.call("GET", url, template, token=token, params={"limit": 0}, expect=422)
    assert error_of(body)[1].startswith("query.limit:")


async def test_message_endpoints_check_the_room_token(edge: Edge) -> None:
    host = await edge.anonymous()
    room_a = await edge.room(host)
    room_b = await edge.room(host)
    token_a = (await edge.join(room_a["code"], host))["room_token"]
    url_b = f"/api/v1/rooms/{room_b['code']}/messages"
    template = "/api/v1/rooms/{code}/messages"

    body = await edge.call("GET", url_b, template, token=token_a, expect=403)
    assert error_of(body)[0] == "wrong_room"
    body = await edge.call(
        "POST", url_b, template, token=token_a, json={"client_msg_id": "x", "text": "hi"}, expect=403
    )
    assert error_of(body)[0] == "wrong_room"
    assert edge.fakes.messaging.log[room_b["id"]] == []

    body = await edge.call("GET", url_b, template, token=host, expect=401)
    assert error_of(body)[0] == "invalid_token"
    body = await edge.call("GET", url_b, template, token="not-a-jwt", expect=401)
    assert error_of(body)[0] == "invalid_token"
    body = await edge.call("GET", url_b, template, expect=401)
    assert error_of(body)[0] == "unauthenticated"


async def test_send_errors_are_mapped(edge: Edge) -> None:
    host = await edge.anonymous()
    room = await edge.room(host)
    token = (await edge.join(room["code"], host))["room_token"]
    url = f"/api/v1/rooms/{room['code']}/messages"
    template = "/api/v1/rooms/{code}/messages"

    response = await edge.http.post(
        url, json={"client_msg_id": "a", "text": "slow down"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json() == {
        "error": {"code": "rate_limited", "message": "too many messages", "retry_after": 7}
    }
    assert_matches_openapi(edge.openapi, "POST", template, 429, response.json())

    body = await edge.call(
        "POST", url, template, token=token, json={"client_msg_id": "b", "text": "   "}, expect=422
    )
    assert error_of(body)[0] == "invalid_text"
    body = await edge.call(
        "POST", url, template, token=token, json={"client_msg_id": "", "text": "hi"}, expect=422
    )
    assert error_of(body)[1].startswith("client_msg_id:")


@pytest.mark.parametrize("path", ["/api/v1/rooms/bad%20code", "/api/v1/rooms/" + "A" * 40])
async def test_malformed_room_codes_are_rejected(edge: Edge, path: str) -> None:
    body = await edge.call("GET", path, "/api/v1/rooms/{code}", expect=422)
    assert error_of(body)[1].startswith("path.code:")

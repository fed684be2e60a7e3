"""The OpenAPI document is a valid contract that documents every error, and errors stay JSON."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate

from chatpop_edge.app import create_app
from chatpop_edge.settings import EdgeSettings

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(
        EdgeSettings.model_validate(
            {
                "ip_hash_key": "unit-test-ip-hash-key",
                "media_url_key": "m" * 32,
                "service_token_secret": "s" * 32,
            }
        )
    )


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)  # type: ignore[arg-type]


def test_every_rest_v1_endpoint_is_documented(document: dict[str, Any]) -> None:
    operations = {(m.upper(), p) for p, item in document["paths"].items() for m in item if m in METHODS}
    assert {
        ("POST", "/api/v1/auth/anonymous"),
        ("POST", "/api/v1/auth/register"),
        ("POST", "/api/v1/auth/login"),
        ("POST", "/api/v1/auth/refresh"),
        ("POST", "/api/v1/auth/logout"),
        ("GET", "/api/v1/auth/me"),
        ("GET", "/.well-known/jwks.json"),
        ("POST", "/api/v1/rooms"),
        ("GET", "/api/v1/rooms/{code}"),
        ("PATCH", "/api/v1/rooms/{code}"),
        ("POST", "/api/v1/rooms/{code}/join"),
        ("GET", "/api/v1/rooms/{code}/messages"),
        ("POST", "/api/v1/rooms/{code}/messages"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    } <= operations


def test_every_error_response_uses_the_error_schema(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS or path == "/healthz":
                continue
            statuses = {int(s) for s in operation["responses"]}
            assert {400, 413, 422, 500, 503} <= statuses, (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)


async def test_unexpected_errors_are_500_json_with_security_headers() -> None:
    app = create_app(
        EdgeSettings.model_validate(
            {
                "ip_hash_key": "unit-test-ip-hash-key",
                "media_url_key": "m" * 32,
                "service_token_secret": "s" * 32,
            }
        )
    )

    @app.get("/explode")
    async def explode() -> None:
        raise RuntimeError("secret internals")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        response = await client.get("/explode")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "Something went wrong on our side."}}
    assert "secret" not in response.text
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]

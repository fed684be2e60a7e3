"""Liveness, readiness, the JWKS document and the API docs page."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from chatpop_edge import models
from chatpop_edge.deps import BackendsDep
from chatpop_edge.errors import error_response, error_responses

router = APIRouter()

OPENAPI_URL = "/api/v1/openapi.json"
DOCS_URL = "/api/v1/docs"
_SWAGGER_CDN = "https://cdn.jsdelivr.net"


@router.get(
    "/healthz",
    response_model=models.Status,
    responses=error_responses(),
    tags=["health"],
    summary="The process is alive",
)
async def healthz() -> models.Status:
    return models.Status(status="ok")


@router.get(
    "/readyz",
    response_model=models.Status,
    responses=error_responses(503),
    tags=["health"],
    summary="Every service this edge calls reports SERVING",
)
async def readyz(backends: BackendsDep) -> JSONResponse | models.Status:
    health = await backends.health()
    down = sorted(name for name, serving in health.items() if not serving)
    if down:
        return error_response(503, "not_ready", f"Not serving: {', '.join(down)}.")
    return models.Status(status="ready")


@router.get(
    "/.well-known/jwks.json",
    response_model=models.Jwks,
    responses=error_responses(503),
    tags=["auth"],
    summary="Public keys that verify access and room tokens",
)
async def jwks(backends: BackendsDep, response: Response) -> models.Jwks:
    keys = await backends.public_keys()
    response.headers["Cache-Control"] = "public, max-age=60"
    return models.Jwks.from_proto(keys)


def _docs_page() -> HTMLResponse:
    """Swagger UI with a CSP that allows exactly its CDN assets and its one inline script."""
    page = get_swagger_ui_html(openapi_url=OPENAPI_URL, title="ChatPop API v1")
    html = page.body.decode() if isinstance(page.body, bytes) else str(page.body)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    )
    policy = (
        f"default-src 'self'; script-src 'self' {_SWAGGER_CDN} {hashes}; "
        f"style-src 'self' {_SWAGGER_CDN} 'unsafe-inline'; "
        "img-src 'self' data: https://fastapi.tiangolo.com; "
        "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": policy, "Cache-Control": "no-cache"})


@router.get(DOCS_URL, include_in_schema=False)
async def docs() -> HTMLResponse:
    return _docs_page()

"""Pure ASGI middleware: security headers, body size limit, HTTP metrics and a last-resort 500.

Pure ASGI (not BaseHTTPMiddleware) so WebSockets pass straight through and nothing buffers
responses.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatpop_edge.client_ip import ClientAddressResolver
from chatpop_edge.errors import error_body
from chatpop_edge.metrics import HTTP_DURATION, HTTP_REQUESTS

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _headers(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", ()) if key == name]


def peer_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response (a route may set its own CSP)."""

    def __init__(self, app: ASGIApp, resolver: ClientAddressResolver) -> None:
        self.app = app
        self.resolver = resolver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        over_tls = scope.get("scheme") == "https" or self.resolver.forwarded_https(
            peer_host(scope), _header(scope, b"x-forwarded-proto")
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {key.lower() for key, _ in headers}
                defaults = [
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"cache-control", b"no-store"),
                ]
                if over_tls:
                    defaults.append((b"strict-transport-security", HSTS.encode()))
                headers.extend((key, value) for key, value in defaults if key not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """Rejects bodies larger than `max_bytes` with 413 before anything parses them.

    The body is read here (it is small by definition) and replayed to the app, so a chunked upload
    that grows past the limit is cut off without being buffered whole. Requests `exempt` names (media
    uploads) pass untouched: their route streams the body to disk under a limit of its own.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: Callable[[Scope], bool] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def _too_large(self, send: Send) -> None:
        await _send_json(
            send,
            413,
            error_body("payload_too_large", f"The request body is larger than {self.max_bytes:,} bytes."),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt is not None and self.exempt(scope)):
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _send_json(send, 400, error_body("bad_request", "Content-Length is not a number."))
                return
            if int(length) > self.max_bytes:
                await self._too_large(send)
                return
        elif _header(scope, b"transfer-encoding") is None:
            await self.app(scope, receive, send)
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away while sending its body: there is no one to answer.
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class HttpMetricsMiddleware:
    """Counts requests by method, route template and status; times them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            route = scope.get("route")
            template = str(getattr(route, "path", "")) or "unmatched"
            method = scope.get("method", "OTHER")
            method = method if method in _KNOWN_METHODS else "OTHER"
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_DURATION.labels(method, template).observe(time.perf_counter() - started)


class UnexpectedErrorMiddleware:
    """Anything no handler expected becomes 500 `internal`, logged here, never shown to the client.

    It sits inside the security headers, so even this response carries them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            log.exception("unhandled error", extra={"path": scope.get("path", "")})
            if started:
                raise
            await _send_json(send, 500, error_body("internal", "Something went wrong on our side."))

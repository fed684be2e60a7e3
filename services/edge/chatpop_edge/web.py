"""The web client's files, built by `make web` into services/edge/web/dist.

- The app's pages (`/`, `/create`, `/login`, `/signup`, `/forgot-password`, `/reset-password`,
  `/account`, `/admin`, `/earnings`, `/payouts`, `/payouts/test-onboarding`, `/payments`,
  `/c/{code}`, `/c/{code}/back-room`) all answer with index.html, which is revalidated on every
  load (`no-cache` plus an ETag), so a new build reaches people at once.
- `/assets/*` are content-hashed by the build: a name never changes content, so they are cached for a
  year as `immutable`, and sent precompressed (`.br`, `.gz` made at build time) when the browser
  accepts it.
- Nothing is inline, so the pages run under the edge's strict Content-Security-Policy unchanged.
  Only when ChatPop takes real payments (STRIPE_PUBLISHABLE_KEY is set) do the pages widen it, for
  Stripe alone: Stripe.js from https://js.stripe.com, its frames from js.stripe.com and
  hooks.stripe.com, its calls to https://api.stripe.com. In test mode nothing may load from
  another origin.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse, HTMLResponse

from chatpop_edge.errors import ApiError
from chatpop_edge.middleware import CONTENT_SECURITY_POLICY

log = logging.getLogger(__name__)

DEFAULT_WEB_ROOT = Path(__file__).resolve().parents[1] / "web" / "dist"
APP_PATHS = (
    "/",
    "/create",
    "/login",
    "/signup",
    "/forgot-password",
    "/reset-password",
    "/account",
    "/admin",
    "/earnings",
    "/payouts",
    "/payouts/test-onboarding",
    "/payments",
    "/c/{code}",
    "/c/{code}/back-room",
)
ASSETS_PATH = "/assets"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# Unknown addresses under these answer with JSON errors, whoever asks.
_NEVER_PAGES = ("/api/", "/ws/", "/assets/", "/.well-known/", "/healthz", "/readyz", "/metrics")

_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".txt": "text/plain; charset=utf-8",
}
# Best first; each is a file the build wrote beside the original.
_ENCODINGS = (("br", ".br"), ("gzip", ".gz"))

# What Stripe.js needs (https://docs.stripe.com/security/guide#content-security-policy), added to the
# pages' policy only when payments go through Stripe.
_STRIPE_SOURCES = {
    "script-src": ("https://js.stripe.com",),
    "frame-src": ("https://js.stripe.com", "https://hooks.stripe.com"),
    "connect-src": ("https://api.stripe.com",),
}


def page_security_policy(stripe: bool) -> str:
    """The pages' Content-Security-Policy: the edge's strict one, widened for Stripe when `stripe`."""
    if not stripe:
        return CONTENT_SECURITY_POLICY
    directives: dict[str, list[str]] = {}
    for directive in CONTENT_SECURITY_POLICY.split(";"):
        name, *sources = directive.split()
        directives[name] = sources
    for name, extra in _STRIPE_SOURCES.items():
        # A directive the policy lacks falls back to default-src ('self'), which it keeps.
        sources = directives.setdefault(name, list(directives.get("default-src", ["'self'"])))
        sources.extend(source for source in extra if source not in sources)
    return "; ".join(" ".join([name, *sources]) for name, sources in directives.items())


_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ChatPop</title></head>
<body><h1>ChatPop's web client is not built</h1>
<p>Run <code>make web</code> (or <code>make run</code>, which builds it) and reload this page.
The API is up: <a href="/api/v1/docs">/api/v1/docs</a>.</p></body></html>
"""


@dataclass(frozen=True)
class _Page:
    mtime_ns: int
    body: bytes
    etag: str


def _accepted(header: str) -> set[str]:
    """Encodings the client accepts by name (`q=0` refuses one)."""
    accepted: set[str] = set()
    for item in header.split(","):
        name, _, params = item.partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if name.strip() and quality > 0:
            accepted.add(name.strip().lower())
    return accepted


class WebClient:
    """Serves one build folder; reads index.html again when the build changes it."""

    def __init__(self, root: Path, *, stripe: bool = False) -> None:
        self.root = root.resolve()
        self.security_policy = page_security_policy(stripe)
        self.assets = (self.root / ASSETS_PATH.strip("/")).resolve()
        self._page: _Page | None = None
        if not (self.root / "index.html").is_file():
            log.warning("web client not built: %s has no index.html (run `make web`)", self.root)

    def _index(self) -> _Page | None:
        path = self.root / "index.html"
        try:
            mtime_ns = path.stat().st_mtime_ns
        except OSError:
            return None
        page = self._page
        if page is None or page.mtime_ns != mtime_ns:
            body = path.read_bytes()
            page = _Page(mtime_ns, body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
            self._page = page
        return page

    async def page(self, request: Request) -> Response:
        page = self._index()
        if page is None:
            return HTMLResponse(_NOT_BUILT, status_code=503, headers={"Cache-Control": REVALIDATE})
        headers = {
            "Cache-Control": REVALIDATE,
            "ETag": page.etag,
            "Content-Security-Policy": self.security_policy,
        }
        if page.etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
            return Response(status_code=304, headers=headers)
        return HTMLResponse(page.body, headers=headers)

    async def missing(self, request: Request) -> Response | None:
        """The app's own "page not found" for a browser that opened an unknown address (404), or None
        for API clients and for paths that are never pages, which get the JSON error instead."""
        if request.method not in ("GET", "HEAD") or request.url.path.startswith(_NEVER_PAGES):
            return None
        if "text/html" not in request.headers.get("accept", ""):
            return None
        page = self._index()
        if page is None:
            return None
        return HTMLResponse(
            page.body,
            status_code=404,
            headers={"Cache-Control": REVALIDATE, "Content-Security-Policy": self.security_policy},
        )

    async def asset(self, path: str, request: Request) -> Response:
        if not path or any(part.startswith(".") for part in path.split("/")):
            raise ApiError(404, "not_found", "No such file.")
        target = (self.assets / path).resolve()
        if not target.is_relative_to(self.assets) or not target.is_file():
            raise ApiError(404, "not_found", "No such file.")
        content_type = _CONTENT_TYPES.get(target.suffix.lower())
        if content_type is None or target.suffix.lower() in (".br", ".gz"):
            raise ApiError(404, "not_found", "No such file.")
        headers = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
        accepted = _accepted(request.headers.get("accept-encoding", ""))
        for encoding, suffix in _ENCODINGS:
            compressed = target.with_name(target.name + suffix)
            if encoding in accepted and compressed.is_file():
                headers["Content-Encoding"] = encoding
                return FileResponse(compressed, media_type=content_type, headers=headers)
        return FileResponse(target, media_type=content_type, headers=headers)


def install_web_client(app: FastAPI, root: Path | None, *, stripe: bool = False) -> WebClient:
    """Add the web client's routes (left out of the OpenAPI document: they are not the API). `stripe`:
    payments go through Stripe, so the pages may load Stripe.js."""
    client = WebClient(root or DEFAULT_WEB_ROOT, stripe=stripe)
    router = APIRouter(include_in_schema=False)

    async def page(request: Request) -> Response:
        return await client.page(request)

    async def asset(path: str, request: Request) -> Response:
        return await client.asset(path, request)

    for path in APP_PATHS:
        router.add_api_route(path, page, methods=["GET", "HEAD"])
    router.add_api_route(ASSETS_PATH + "/{path:path}", asset, methods=["GET", "HEAD"])
    app.include_router(router)
    app.state.web = client
    return client

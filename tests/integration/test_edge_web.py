"""The edge serving the web client's build: app pages, hashed assets, caching and compression."""

from __future__ import annotations

import gzip
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from test_edge_support import edge_settings, fake_services, running_edge

from chatpop_edge.middleware import CONTENT_SECURITY_POLICY
from chatpop_edge.settings import EdgeSettings

INDEX = b'<!doctype html><title>ChatPop</title><script type="module" src="/assets/app-1a2b3c.js"></script>'
SCRIPT = b"console.log('chatpop');\n" * 40


@dataclass
class Served:
    http: httpx.AsyncClient
    root: Path


@pytest_asyncio.fixture(scope="module")
async def web(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    root = tmp_path_factory.mktemp("web-dist")
    assets = root / "assets"
    assets.mkdir()
    (root / "index.html").write_bytes(INDEX)
    (assets / "app-1a2b3c.js").write_bytes(SCRIPT)
    (assets / "app-1a2b3c.js.gz").write_bytes(gzip.compress(SCRIPT))
    # Not real brotli: the test only needs to see which file was chosen.
    (assets / "app-1a2b3c.js.br").write_bytes(b"brotli bytes")
    (assets / "style-9f8e7d.css").write_bytes(b"body{margin:0}")
    (assets / ".hidden.js").write_bytes(b"secret")
    (root / "secret.txt").write_bytes(b"outside assets")
    async with (
        fake_services() as fakes,
        running_edge(edge_settings(fakes, web_root=str(root))) as base_url,
        httpx.AsyncClient(base_url=base_url) as http,
    ):
        yield Served(http, root)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/create",
        "/login",
        "/signup",
        "/forgot-password",
        "/reset-password?token=abc",
        "/account",
        "/admin",
        "/earnings",
        "/payouts",
        "/payouts/test-onboarding",
        "/c/ABCD2345/back-room",
        "/payments",
        "/c/K7M2QX9P",
        "/c/k7m2qx9p",
    ],
)
async def test_app_pages_are_index_html_revalidated_on_every_load(web: Served, path: str) -> None:
    response = await web.http.get(path)
    assert response.status_code == 200
    assert response.content == INDEX
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    etag = response.headers["etag"]
    again = await web.http.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""


async def test_a_new_build_is_served_at_once(web: Served) -> None:
    before = await web.http.get("/")
    index = web.root / "index.html"
    rebuilt = INDEX.replace(b"1a2b3c", b"4d5e6f")
    index.write_bytes(rebuilt)
    stat = index.stat()
    os.utime(index, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        after = await web.http.get("/", headers={"If-None-Match": before.headers["etag"]})
        assert after.status_code == 200
        assert after.content == rebuilt
        assert after.headers["etag"] != before.headers["etag"]
    finally:
        index.write_bytes(INDEX)
        os.utime(index, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


async def test_hashed_assets_are_immutable_and_sent_compressed_when_accepted(web: Served) -> None:
    path = "/assets/app-1a2b3c.js"
    plain = await web.http.get(path, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.content == SCRIPT
    assert plain.headers["content-type"] == "text/javascript; charset=utf-8"
    assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert plain.headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in plain.headers

    brotli = await web.http.get(path, headers={"Accept-Encoding": "gzip, deflate, br"})
    assert brotli.headers["content-encoding"] == "br"
    assert brotli.headers["cache-control"] == "public, max-age=31536000, immutable"

    # httpx decodes gzip itself: the bytes that arrive are the script.
    gzipped = await web.http.get(path, headers={"Accept-Encoding": "gzip, br;q=0"})
    assert gzipped.headers["content-encoding"] == "gzip"
    assert gzipped.content == SCRIPT

    css = await web.http.get("/assets/style-9f8e7d.css", headers={"Accept-Encoding": "gzip, br"})
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert "content-encoding" not in css.headers

    head = await web.http.head(path, headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(SCRIPT))
    assert head.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/assets/missing-000000.js",
        "/assets/.hidden.js",
        "/assets/app-1a2b3c.js.br",
        "/assets/..%2Fsecret.txt",
        "/assets/%2E%2E/secret.txt",
        "/assets/",
    ],
)
async def test_only_built_assets_are_served(web: Served, path: str) -> None:
    response = await web.http.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert b"outside assets" not in response.content


async def test_pages_stay_out_of_the_api_contract(web: Served) -> None:
    paths = (await web.http.get("/api/v1/openapi.json")).json()["paths"]
    assert not [
        path
        for path in paths
        # Signed media URLs (`/media/…`) are API too: served bytes, never a page.
        if not path.startswith(("/api/", "/healthz", "/readyz", "/.well-known", "/media/"))
    ]
    unknown = await web.http.get("/no-such-page")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/no-such-page", "/c/K7M2QX9P/extra", "/rooms/old/link"])
async def test_a_browser_at_an_unknown_address_gets_the_app_and_a_404(web: Served, path: str) -> None:
    """The app renders its own "page not found"; the status still says there is nothing here."""
    page = await web.http.get(path, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 404
    assert page.content == INDEX
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("path", ["/api/v1/nothing", "/ws/v1/nothing", "/assets/missing-000000.js"])
async def test_unknown_api_addresses_stay_json_even_for_browsers(web: Served, path: str) -> None:
    response = await web.http.get(path, headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_pages_let_stripe_js_load_only_when_payments_go_through_stripe(web: Served) -> None:
    """Test mode (no publishable key): the strict policy, nothing from another origin."""
    strict = (await web.http.get("/c/K7M2QX9P")).headers["content-security-policy"]
    assert "stripe" not in strict
    async with fake_services() as fakes:
        settings = edge_settings(fakes, web_root=str(web.root), stripe_publishable_key="pk_test_123")
        async with running_edge(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
            page = await http.get("/c/K7M2QX9P")
            missing = await http.get("/no-such-page", headers={"Accept": "text/html"})
            api = await http.get("/healthz")
    policy = {
        name: sources
        for name, *sources in (part.split() for part in page.headers["content-security-policy"].split(";"))
    }
    assert policy["script-src"] == ["'self'", "https://js.stripe.com"]
    assert policy["frame-src"] == ["'self'", "https://js.stripe.com", "https://hooks.stripe.com"]
    assert policy["connect-src"] == ["'self'", "https://api.stripe.com"]
    # Everything else stays as strict as ever.
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert missing.headers["content-security-policy"] == page.headers["content-security-policy"]
    # Only the pages load Stripe: API answers keep the strict policy.
    assert api.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_a_secret_key_is_never_taken_for_the_publishable_one() -> None:
    with pytest.raises(ValueError, match="publishable"):
        EdgeSettings(
            ip_hash_key="k" * 32,
            media_url_key="m" * 32,
            service_token_secret="s" * 32,
            stripe_publishable_key="sk_live_123",
        )


async def test_without_a_build_pages_say_how_to_build_and_the_api_still_answers(
    tmp_path: Path,
) -> None:
    async with fake_services() as fakes:
        settings = edge_settings(fakes, web_root=str(tmp_path / "not-built"))
        async with running_edge(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
            page = await http.get("/c/K7M2QX9P")
            assert page.status_code == 503
            assert page.headers["content-type"].startswith("text/html")
            assert "make web" in page.text
            assert (await http.get("/healthz")).status_code == 200

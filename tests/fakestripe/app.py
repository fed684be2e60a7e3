"""The HTTP application: Stripe's API under /v1, the fake's control API under /_fake, and the pages a
host sees during Connect onboarding under /connect/onboarding.

Every /v1 request goes through the same steps as at Stripe: the key (Bearer or basic auth) names the
platform, a publishable key reaches only what Stripe.js may call, the parameters are decoded from
Stripe's bracket notation, a POST's Idempotency-Key replays the first answer (or refuses other
parameters), the handler runs, and `expand[]` replaces ids by objects.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route as HttpRoute

from tests.fakestripe import api, connect
from tests.fakestripe.control import control_routes
from tests.fakestripe.errors import StripeApiError
from tests.fakestripe.events import Ctx
from tests.fakestripe.forms import decode, decode_text
from tests.fakestripe.store import API_VERSION, Fault, IdempotentResult, Platform, Store, new_id, snapshot
from tests.fakestripe.webhooks import Deliverer

log = logging.getLogger(__name__)
PUBLISHABLE_REFUSED = (
    "This API call cannot be made with a publishable API key. Please use a secret API key. You can find a "
    "list of your API keys at https://dashboard.stripe.com/account/apikeys."
)


class FakeStripeApp:
    def __init__(self, store: Store, deliverer: Deliverer) -> None:
        self.store = store
        self.deliverer = deliverer

    def build(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            await self.deliverer.start()
            try:
                yield
            finally:
                await self.deliverer.stop()

        routes = [
            HttpRoute("/v1/{path:path}", self.stripe_api, methods=["GET", "POST", "DELETE"]),
            HttpRoute("/connect/onboarding/{account}", self.onboarding_page, methods=["GET"]),
            HttpRoute("/connect/onboarding/{account}/{action}", self.onboarding_action, methods=["POST"]),
            *control_routes(self),
        ]
        return Starlette(routes=routes, lifespan=lifespan)

    def ctx(self, platform: Platform, **fields: Any) -> Ctx:
        return Ctx(platform, self.deliverer.publish, **fields)

    # -- /v1 -----------------------------------------------------------------------------------------

    def authenticate(self, request: Request) -> tuple[Platform, str, str]:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        key = ""
        if scheme.lower() == "bearer":
            key = credential.strip()
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(credential).decode().split(":", 1)[0]
            except ValueError:
                key = ""
        if not key:
            raise StripeApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        found = self.store.by_key(key)
        if found is None:
            shown = key[:8] + "*" * max(0, len(key) - 12) + key[-4:]
            raise StripeApiError(401, f"Invalid API Key provided: {shown}")
        platform, kind = found
        return platform, kind, key

    async def stripe_api(self, request: Request) -> Response:
        request_id = new_id("req", 14)
        started = time.time()
        path = request.url.path
        method = request.method
        entry: dict[str, Any] = {"id": request_id, "method": method, "path": path, "at": started}
        platform: Platform | None = None
        headers = {
            "Request-Id": request_id,
            "Stripe-Version": request.headers.get("stripe-version", API_VERSION),
        }
        try:
            platform, kind, key = self.authenticate(request)
            body = (await request.body()).decode()
            params = decode_text(body) if method == "POST" else decode(request.query_params.multi_items())
            idempotency_key = request.headers.get("idempotency-key") if method == "POST" else None
            entry.update(params=params, idempotency_key=idempotency_key, key=kind)
            platform.requests.append(entry)
            if idempotency_key:
                headers["Idempotency-Key"] = idempotency_key
            fault = _take_fault(platform, method, path)
            if fault is not None and not fault.after:
                return await _fault_response(fault, request_id, headers, entry)
            if idempotency_key:
                replay = _replay(platform, key, idempotency_key, method, path, params)
                if replay is not None:
                    entry.update(status=replay.status, replayed=True)
                    headers.update(
                        {"Idempotent-Replayed": "true", "Original-Request": replay.body.get("_request", "")}
                    )
                    return _json(_without_request(replay.body), replay.status, headers)
            status, answer, saved = self._run(request, platform, kind, params, request_id, idempotency_key)
            if idempotency_key and saved:
                answer["_request"] = request_id
                platform.idempotency[(key, idempotency_key)] = IdempotentResult(
                    method, path, params, status, answer
                )
            if fault is not None:
                return await _fault_response(fault, request_id, headers, entry)
            entry["status"] = status
            return _json(_without_request(answer), status, headers)
        except StripeApiError as exc:
            entry["status"] = exc.status
            if platform is None:
                entry.setdefault("params", {})
            return _json(exc.body(request_id), exc.status, {**headers, **exc.headers})

    def _run(
        self,
        request: Request,
        platform: Platform,
        kind: str,
        params: dict[str, Any],
        request_id: str,
        idempotency_key: str | None,
    ) -> tuple[int, dict[str, Any], bool]:
        """The answer's status and body, and whether an idempotency key keeps it."""
        try:
            route, ids = api.resolve(request.method, request.url.path)
            if kind == "publishable" and not route.publishable:
                raise StripeApiError(401, PUBLISHABLE_REFUSED)
            on_behalf = request.headers.get("stripe-account")
            if on_behalf is not None:
                if not route.on_behalf:
                    raise StripeApiError(
                        400,
                        "The fake Stripe API takes Stripe-Account only for events and /v1/account.",
                    )
                if on_behalf not in platform.collection("accounts"):
                    raise StripeApiError(
                        403,
                        f"The provided key does not have access to account '{on_behalf}' (or that account "
                        "does not exist). Application access may have been revoked.",
                        code="account_invalid",
                    )
            ctx = self.ctx(
                platform, request_id=request_id, idempotency_key=idempotency_key, account=on_behalf
            )
            call = api.Call(
                ctx, params, ids, kind == "publishable", str(request.base_url).rstrip("/"), self.deliverer
            )
            answer = snapshot(route.handler(call))
            api.expand(call, answer, api.expand_paths(params))
            return 200, answer, True
        except StripeApiError as exc:
            return exc.status, exc.body(request_id), exc.saved
        except Exception as exc:
            # A fault of the fake itself: say so in Stripe's shape, so the test shows it plainly.
            log.exception("fake Stripe API failed on %s %s", request.method, request.url.path)
            error = StripeApiError(500, f"The fake Stripe API failed: {exc!r}", type="api_error")
            return 500, error.body(request_id), False

    # -- onboarding pages ----------------------------------------------------------------------------

    def _link(self, token: str) -> tuple[Platform, dict[str, Any]] | None:
        for platform in self.store.platforms.values():
            link = platform.account_links.get(token)
            if link is not None:
                return platform, link
        return None

    async def onboarding_page(self, request: Request) -> Response:
        account = request.path_params["account"]
        token = request.query_params.get("link", "")
        found = self._link(token)
        if found is None or found[1]["account"] != account:
            return HTMLResponse("<h1>This onboarding link is not valid.</h1>", status_code=404)
        platform, link = found
        if link["used"] or link["expires_at"] < platform.now():
            return RedirectResponse(link["refresh_url"], status_code=302)
        quoted = html.escape(token, quote=True)
        page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Fake Stripe onboarding</title></head>
<body><h1>Set up payouts for {html.escape(account)}</h1>
<form method="post" action="/connect/onboarding/{html.escape(account)}/finish">
<input type="hidden" name="link" value="{quoted}"><button type="submit">Finish onboarding</button></form>
<form method="post" action="/connect/onboarding/{html.escape(account)}/leave">
<input type="hidden" name="link" value="{quoted}"><button type="submit">Leave for now</button></form>
</body></html>"""
        return HTMLResponse(page)

    async def onboarding_action(self, request: Request) -> Response:
        account_id = request.path_params["account"]
        action = request.path_params["action"]
        token = decode_text((await request.body()).decode()).get("link", "")
        found = self._link(token) if isinstance(token, str) else None
        if found is None or found[1]["account"] != account_id or action not in ("finish", "leave"):
            return HTMLResponse("<h1>This onboarding link is not valid.</h1>", status_code=404)
        platform, link = found
        if link["used"] or link["expires_at"] < platform.now():
            return RedirectResponse(link["refresh_url"], status_code=303)
        link["used"] = True
        if action == "finish":
            connect.finish_onboarding(self.ctx(platform), platform.collection("accounts")[account_id])
        return RedirectResponse(link["return_url"], status_code=303)


def _json(body: dict[str, Any], status: int, headers: dict[str, str]) -> Response:
    return Response(
        json.dumps(body, indent=2), status_code=status, headers=headers, media_type="application/json"
    )


def _without_request(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "_request"}


def _replay(
    platform: Platform, key: str, idempotency_key: str, method: str, path: str, params: dict[str, Any]
) -> IdempotentResult | None:
    earlier = platform.idempotency.get((key, idempotency_key))
    if earlier is None:
        return None
    if (earlier.method, earlier.path) != (method, path):
        raise StripeApiError(
            400,
            "Keys for idempotent requests can only be used for the same endpoint they were first used for "
            f"('{method} {path}' vs '{earlier.method} {earlier.path}'). Try using a key other than "
            f"'{idempotency_key}' if you meant to execute a different request.",
            type="idempotency_error",
        )
    if earlier.params != params:
        raise StripeApiError(
            400,
            "Keys for idempotent requests can only be used with the same parameters they were first used "
            f"with. Try using a key other than '{idempotency_key}' if you meant to execute a different "
            "request.",
            type="idempotency_error",
        )
    return earlier


def _take_fault(platform: Platform, method: str, path: str) -> Fault | None:
    for fault in platform.faults:
        if (
            fault.count > 0
            and fault.method in (None, method)
            and (fault.path_prefix is None or path.startswith(fault.path_prefix))
        ):
            fault.count -= 1
            return fault
    return None


async def _fault_response(
    fault: Fault, request_id: str, headers: dict[str, str], entry: dict[str, Any]
) -> Response:
    if fault.delay:
        await asyncio.sleep(fault.delay)
    error = StripeApiError(
        fault.status,
        "An error occurred with our connection to Stripe. (Injected by the fake Stripe API.)",
        type="api_error",
    )
    if fault.should_retry is not None:
        headers = {**headers, "Stripe-Should-Retry": "true" if fault.should_retry else "false"}
    entry.update(status=fault.status, fault="after" if fault.after else "before")
    return _json(error.body(request_id), fault.status, headers)

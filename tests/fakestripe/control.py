"""The fake's own control API under /_fake (JSON in and out), for tests to act as a buyer, a host, the
card network or a flaky network, and to look at everything the fake holds.

Calls are made with the platform's secret key (Bearer), except `POST /_fake/platforms`, which makes a
new platform with its own keys, and `GET /_fake/health`. `FakeStripeControl` (client.py) wraps them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakestripe import connect, payments, refunds
from tests.fakestripe.errors import StripeApiError, invalid_request
from tests.fakestripe.store import COLLECTIONS, Fault, Platform, snapshot
from tests.fakestripe.webhooks import Chaos, Endpoint, api_view

if TYPE_CHECKING:
    from tests.fakestripe.app import FakeStripeApp

Body = dict[str, Any]
Action = Callable[["FakeStripeApp", Platform, Request, Body], Awaitable[Any]]
INSPECTABLE = sorted({collection for collection, _ in COLLECTIONS.values()})


def platform_view(platform: Platform, url: str) -> Body:
    return {
        "url": url,
        "account_id": platform.account_id,
        "secret_key": platform.secret_key,
        "publishable_key": platform.publishable_key,
        "webhook_secret": platform.webhook_secret,
        "clock_offset": platform.clock_offset,
        "refunds_pending": platform.refunds_pending,
    }


def _endpoints(app: FakeStripeApp, platform: Platform, body: Body) -> list[Endpoint]:
    return app.deliverer.chosen(platform, body.get("endpoint"))


async def _platform(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    return platform_view(platform, str(request.base_url).rstrip("/"))


async def _settings(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    if "refunds_pending" in body:
        platform.refunds_pending = bool(body["refunds_pending"])
    if "advance_clock" in body:
        platform.clock_offset += float(body["advance_clock"])
    if "retry_delays" in body:
        app.deliverer.settings(platform).retry_delays = [float(delay) for delay in body["retry_delays"]]
    view = platform_view(platform, str(request.base_url).rstrip("/"))
    view["retry_delays"] = app.deliverer.settings(platform).retry_delays
    return view


async def _pay(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    intent = platform.collection("payment_intents").get(request.path_params["id"])
    if intent is None:
        raise invalid_request(f"No such payment_intent: '{request.path_params['id']}'")
    ctx = app.ctx(platform)
    try:
        payments.confirm(ctx, intent, body.get("payment_method", "pm_card_visa"))
    except StripeApiError as exc:
        if exc.status != 402:
            raise
        return {"payment_intent": snapshot(intent), "error": exc.body("")["error"]}
    return {"payment_intent": snapshot(intent), "error": None}


async def _dispute(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    charge_id = body.get("charge")
    if charge_id is None:
        intent = platform.get(str(body.get("payment_intent", "")), param="payment_intent")
        charge_id = intent["latest_charge"]
    charge = platform.get(str(charge_id), param="charge")
    return payments.create_dispute(
        app.ctx(platform), charge, reason=body.get("reason", "fraudulent"), amount=body.get("amount")
    )


async def _onboard(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    account = platform.collection("accounts").get(request.path_params["id"])
    if account is None:
        raise invalid_request(f"No such account: '{request.path_params['id']}'")
    return connect.finish_onboarding(
        app.ctx(platform),
        account,
        charges_enabled=bool(body.get("charges_enabled", True)),
        payouts_enabled=bool(body.get("payouts_enabled", True)),
        details_submitted=bool(body.get("details_submitted", True)),
    )


async def _settle(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    refund = platform.get(request.path_params["id"])
    return refunds.settle_refund(app.ctx(platform), refund, str(body.get("status", "succeeded")))


async def _add_endpoint(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    if "url" not in body:
        raise invalid_request("url is required", param="url")
    endpoint = app.deliverer.add_endpoint(
        platform,
        url=str(body["url"]),
        enabled_events=list(body.get("enabled_events", ["*"])),
        connect=bool(body.get("connect", False)),
        secret=body.get("secret") or platform.webhook_secret,
    )
    return api_view(endpoint, with_secret=True)


async def _set_secret(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    endpoint = app.deliverer.endpoint(platform, request.path_params["id"])
    if "secret" in body:
        endpoint.obj["_secret"] = str(body["secret"])
    return api_view(endpoint, with_secret=True)


async def _chaos(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    changes = {name: value for name, value in body.items() if name != "endpoint"}
    if body.get("endpoint") is None:
        app.deliverer.settings(platform).defaults.update(changes)
    for endpoint in _endpoints(app, platform, body):
        endpoint.chaos.update(changes)
    return app.deliverer.status(platform)


async def _calm(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    if body.get("endpoint") is None:
        app.deliverer.settings(platform).defaults = Chaos()
    for endpoint in _endpoints(app, platform, body):
        endpoint.chaos = Chaos()
    return app.deliverer.status(platform)


def _pausing(paused: bool) -> Action:
    async def action(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
        if body.get("endpoint") is None:
            app.deliverer.settings(platform).paused = paused
        app.deliverer.set_paused(_endpoints(app, platform, body), paused)
        return app.deliverer.status(platform)

    return action


async def _release(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    released = sum(app.deliverer.release(endpoint) for endpoint in _endpoints(app, platform, body))
    return {"released": released}


async def _replay(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    event = platform.get(request.path_params["id"])
    queued = app.deliverer.replay(platform, event, body.get("endpoint"), body.get("signature"))
    return {"queued": queued}


async def _status(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    return app.deliverer.status(platform)


async def _wait_idle(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    idle = await app.deliverer.wait_idle(platform, float(body.get("timeout", 10.0)))
    status = app.deliverer.status(platform)
    if not idle:
        raise StripeApiError(409, "Webhook delivery did not become idle in time: " + json.dumps(status))
    return status


async def _deliveries(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    records = app.deliverer.settings(platform).records
    filters = {
        name: request.query_params[name]
        for name in ("event", "endpoint", "type", "outcome")
        if name in request.query_params
    }
    return [record for record in records if all(str(record.get(k)) == v for k, v in filters.items())]


async def _objects(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    name = request.path_params["collection"]
    if name not in INSPECTABLE:
        raise invalid_request(f"Unknown collection {name}; one of {', '.join(INSPECTABLE)}")
    if name == "webhook_endpoints":
        return [api_view(endpoint, with_secret=True) for endpoint in app.deliverer.endpoints(platform)]
    return [snapshot(obj) for obj in platform.oldest_first(name)]


async def _object(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    return snapshot(platform.get(request.path_params["id"]))


async def _requests(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    method = request.query_params.get("method")
    prefix = request.query_params.get("path")
    return [
        entry
        for entry in platform.requests
        if (method is None or entry["method"] == method)
        and (prefix is None or entry["path"].startswith(prefix))
    ]


async def _add_fault(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    fault = Fault(
        count=int(body.get("count", 1)),
        status=int(body.get("status", 500)),
        method=body.get("method"),
        path_prefix=body.get("path"),
        after=bool(body.get("after", False)),
        delay=float(body.get("delay", 0.0)),
        should_retry=body.get("should_retry"),
    )
    platform.faults.append(fault)
    return {"faults": len(platform.faults)}


async def _clear_faults(app: FakeStripeApp, platform: Platform, request: Request, body: Body) -> Any:
    platform.faults.clear()
    return {"faults": 0}


_ACTIONS: list[tuple[str, str, Action]] = [
    ("GET", "/_fake/platform", _platform),
    ("POST", "/_fake/settings", _settings),
    ("POST", "/_fake/payment_intents/{id}/pay", _pay),
    ("POST", "/_fake/disputes", _dispute),
    ("POST", "/_fake/accounts/{id}/onboarding", _onboard),
    ("POST", "/_fake/refunds/{id}/settle", _settle),
    ("POST", "/_fake/webhook_endpoints", _add_endpoint),
    ("POST", "/_fake/webhook_endpoints/{id}", _set_secret),
    ("POST", "/_fake/webhooks/chaos", _chaos),
    ("POST", "/_fake/webhooks/calm", _calm),
    ("POST", "/_fake/webhooks/pause", _pausing(True)),
    ("POST", "/_fake/webhooks/resume", _pausing(False)),
    ("POST", "/_fake/webhooks/release", _release),
    ("GET", "/_fake/webhooks", _status),
    ("POST", "/_fake/webhooks/wait_idle", _wait_idle),
    ("POST", "/_fake/events/{id}/replay", _replay),
    ("GET", "/_fake/deliveries", _deliveries),
    ("GET", "/_fake/objects/{collection}", _objects),
    ("GET", "/_fake/object/{id}", _object),
    ("GET", "/_fake/requests", _requests),
    ("POST", "/_fake/faults", _add_fault),
    ("DELETE", "/_fake/faults", _clear_faults),
]


def control_routes(app: FakeStripeApp) -> list[Route]:
    def wrap(action: Action) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                platform, kind, _ = app.authenticate(request)
                if kind != "secret":
                    raise StripeApiError(401, "The control API takes the platform's secret key.")
                raw = await request.body()
                body = json.loads(raw) if raw else {}
                if not isinstance(body, dict):
                    raise invalid_request("The body must be a JSON object.")
                return JSONResponse(await action(app, platform, request, body))
            except StripeApiError as exc:
                return JSONResponse(exc.body("control"), status_code=exc.status)

        return endpoint

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def new_platform(request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        try:
            platform = app.store.new_platform(
                secret_key=body.get("secret_key"),
                publishable_key=body.get("publishable_key"),
                webhook_secret=body.get("webhook_secret"),
            )
        except ValueError as exc:
            return JSONResponse(
                {"error": {"type": "invalid_request_error", "message": str(exc)}}, status_code=400
            )
        return JSONResponse(platform_view(platform, str(request.base_url).rstrip("/")))

    routes = [
        Route("/_fake/health", health, methods=["GET"]),
        Route("/_fake/platforms", new_platform, methods=["POST"]),
    ]
    routes += [Route(path, wrap(action), methods=[method]) for method, path, action in _ACTIONS]
    return routes

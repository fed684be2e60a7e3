"""The Stripe API routes (`/v1/...`): which handler answers which method and path, and with what key.

A handler takes the `Call` (the platform's context, the decoded parameters and the ids from the
path) and returns the object to answer with, or raises `StripeApiError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.fakestripe import connect, payments, refunds, webhooks
from tests.fakestripe.errors import StripeApiError, invalid_request, no_such
from tests.fakestripe.events import Ctx, list_events, retrieve_event
from tests.fakestripe.forms import param_str, refuse_unknown
from tests.fakestripe.listing import PAGING, created_filter, page
from tests.fakestripe.store import COLLECTIONS, snapshot


@dataclass
class Call:
    ctx: Ctx
    params: dict[str, Any]
    ids: tuple[str, ...]
    publishable: bool
    base_url: str
    deliverer: webhooks.Deliverer


Handler = Callable[[Call], dict[str, Any]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    # Stripe.js calls these with the publishable key and the intent's client secret.
    publishable: bool = False
    # These act for a connected account named by a Stripe-Account header.
    on_behalf: bool = False


def _owned(call: Call, collection: str, object_id: str) -> dict[str, Any]:
    obj = call.ctx.platform.collection(collection).get(object_id)
    if obj is None:
        kind = next((name for coll, name in COLLECTIONS.values() if coll == collection), "object")
        raise no_such(kind, object_id)
    return obj


def _retrieve(collection: str) -> Handler:
    def handler(call: Call) -> dict[str, Any]:
        refuse_unknown(call.params, [])
        return _owned(call, collection, call.ids[0])

    return handler


def _list(collection: str, url: str, kind: str, filters: tuple[str, ...] = ()) -> Handler:
    def handler(call: Call) -> dict[str, Any]:
        refuse_unknown(call.params, ["created", *filters, *PAGING])
        items = call.ctx.platform.newest_first(collection)
        for name in filters:
            wanted = param_str(call.params, name)
            if wanted is not None:
                items = [item for item in items if item.get(name) == wanted]
        return page(created_filter(call.params, items), call.params, url, kind)

    return handler


def _intent(call: Call) -> dict[str, Any]:
    intent = _owned(call, "payment_intents", call.ids[0])
    if call.publishable:
        payments.check_client_secret(intent, call.params)
    return intent


def _retrieve_intent(call: Call) -> dict[str, Any]:
    refuse_unknown(call.params, ["client_secret"])
    intent = _intent(call)
    return payments.public_view(intent) if call.publishable else intent


def _confirm_intent(call: Call) -> dict[str, Any]:
    refuse_unknown(call.params, ["payment_method", "return_url", "client_secret", "use_stripe_sdk"])
    if not call.publishable and "client_secret" in call.params:
        raise invalid_request("Received unknown parameter: client_secret", param="client_secret")
    intent = payments.confirm(call.ctx, _intent(call), param_str(call.params, "payment_method"))
    return payments.public_view(intent) if call.publishable else intent


def _cancel_intent(call: Call) -> dict[str, Any]:
    return payments.cancel(call.ctx, _owned(call, "payment_intents", call.ids[0]), call.params)


def _transfer_reversals(call: Call) -> dict[str, Any]:
    transfer = _owned(call, "transfers", call.ids[0])
    refuse_unknown(call.params, list(PAGING))
    items = [
        item
        for item in call.ctx.platform.newest_first("transfer_reversals")
        if item["transfer"] == transfer["id"]
    ]
    return page(items, call.params, f"/v1/transfers/{transfer['id']}/reversals", "transfer reversal")


def _own_account(call: Call) -> dict[str, Any]:
    if call.ctx.account is not None:
        return _owned(call, "accounts", call.ctx.account)
    platform = call.ctx.platform
    return {
        "id": platform.account_id,
        "object": "account",
        "business_profile": {"name": "ChatPop (fake Stripe platform)"},
        "charges_enabled": True,
        "country": "US",
        "default_currency": "usd",
        "details_submitted": True,
        "payouts_enabled": True,
        "type": "standard",
    }


def _update_account(call: Call) -> dict[str, Any]:
    return connect.update_account(call.ctx, _owned(call, "accounts", call.ids[0]), call.params)


def _endpoint(call: Call) -> webhooks.Endpoint:
    return call.deliverer.endpoint(call.ctx.platform, call.ids[0])


def _delete_endpoint(call: Call) -> dict[str, Any]:
    endpoint = _endpoint(call)
    call.deliverer.remove_endpoint(endpoint)
    return {"id": endpoint.id, "object": "webhook_endpoint", "deleted": True}


def _event(call: Call) -> dict[str, Any]:
    refuse_unknown(call.params, [])
    return retrieve_event(call.ctx, call.ids[0])


_ID = r"([A-Za-z0-9_]+)"


def _route(method: str, path: str, handler: Handler, **flags: bool) -> Route:
    return Route(method, re.compile("^" + path.replace("{id}", _ID) + "$"), handler, **flags)


ROUTES = [
    _route("POST", "/v1/payment_intents", lambda c: payments.create_intent(c.ctx, c.params)),
    _route("GET", "/v1/payment_intents", lambda c: payments.list_intents(c.ctx, c.params)),
    _route("GET", "/v1/payment_intents/{id}", _retrieve_intent, publishable=True),
    _route("POST", "/v1/payment_intents/{id}/confirm", _confirm_intent, publishable=True),
    _route("POST", "/v1/payment_intents/{id}/cancel", _cancel_intent),
    _route("GET", "/v1/charges", _list("charges", "/v1/charges", "charge", ("payment_intent",))),
    _route("GET", "/v1/charges/{id}", _retrieve("charges")),
    _route("GET", "/v1/payment_methods/{id}", _retrieve("payment_methods")),
    _route("POST", "/v1/refunds", lambda c: refunds.create_refund(c.ctx, c.params)),
    _route("GET", "/v1/refunds", lambda c: refunds.list_refunds(c.ctx, c.params)),
    _route("GET", "/v1/refunds/{id}", _retrieve("refunds")),
    _route(
        "POST",
        "/v1/refunds/{id}",
        lambda c: refunds.update_refund(c.ctx, _owned(c, "refunds", c.ids[0]), c.params),
    ),
    _route("GET", "/v1/transfers", _list("transfers", "/v1/transfers", "transfer", ("destination",))),
    _route("GET", "/v1/transfers/{id}", _retrieve("transfers")),
    _route("GET", "/v1/transfers/{id}/reversals", _transfer_reversals),
    _route(
        "GET",
        "/v1/application_fees",
        _list("application_fees", "/v1/application_fees", "application fee", ("charge",)),
    ),
    _route("GET", "/v1/application_fees/{id}", _retrieve("application_fees")),
    _route("GET", "/v1/disputes", _list("disputes", "/v1/disputes", "dispute", ("charge", "payment_intent"))),
    _route("GET", "/v1/disputes/{id}", _retrieve("disputes")),
    _route("POST", "/v1/accounts", lambda c: connect.create_account(c.ctx, c.params)),
    _route("GET", "/v1/accounts", lambda c: connect.list_accounts(c.ctx, c.params)),
    _route("GET", "/v1/accounts/{id}", _retrieve("accounts")),
    _route("POST", "/v1/accounts/{id}", _update_account),
    _route("GET", "/v1/account", _own_account, on_behalf=True),
    _route("POST", "/v1/account_links", lambda c: connect.create_link(c.ctx, c.params, c.base_url)),
    _route("GET", "/v1/events", lambda c: list_events(c.ctx, c.params), on_behalf=True),
    _route("GET", "/v1/events/{id}", _event, on_behalf=True),
    _route("POST", "/v1/webhook_endpoints", lambda c: webhooks.create_endpoint(c.ctx, c.deliverer, c.params)),
    _route(
        "GET",
        "/v1/webhook_endpoints",
        lambda c: webhooks.list_endpoints(c.deliverer, c.ctx.platform, c.params),
    ),
    _route("GET", "/v1/webhook_endpoints/{id}", lambda c: webhooks.api_view(_endpoint(c))),
    _route("POST", "/v1/webhook_endpoints/{id}", lambda c: webhooks.update_endpoint(_endpoint(c), c.params)),
    _route("DELETE", "/v1/webhook_endpoints/{id}", _delete_endpoint),
]


def resolve(method: str, path: str) -> tuple[Route, tuple[str, ...]]:
    for route in ROUTES:
        if route.method == method:
            match = route.pattern.match(path)
            if match:
                return route, match.groups()
    raise StripeApiError(
        404, f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs"
    )


def expand(call: Call, obj: dict[str, Any], paths: list[str]) -> None:
    """Replace ids by the objects they name, along each dotted path (`latest_charge`, `data.charge`)."""

    def walk(node: Any, parts: list[str], path: str) -> None:
        if not parts or not isinstance(node, dict):
            return
        head, rest = parts[0], parts[1:]
        if head == "data" and node.get("object") == "list":
            for item in node["data"]:
                walk(item, rest, path)
            return
        if head not in node:
            raise invalid_request(f"This property cannot be expanded ({path}).", param="expand")
        value = node[head]
        if isinstance(value, str):
            found = call.ctx.platform.find(value)
            if found is None:
                raise invalid_request(f"This property cannot be expanded ({path}).", param="expand")
            value = node[head] = snapshot(found)
        walk(value, rest, path)

    for path in paths:
        walk(obj, path.split("."), path)


def expand_paths(params: Mapping[str, Any]) -> list[str]:
    value = params.get("expand")
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise invalid_request("Invalid array", param="expand")

"""Events: every change of state is recorded, in order, as a Stripe `event`, and handed to the
webhook deliverer. An event about a connected account carries `account` and is listed only with a
`Stripe-Account` header naming it, as in Stripe, where it also reaches Connect endpoints only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.fakestripe.errors import invalid_request, no_such
from tests.fakestripe.forms import param_list, param_str, refuse_unknown
from tests.fakestripe.listing import PAGING, created_filter, page
from tests.fakestripe.store import API_VERSION, Platform, new_id, snapshot

Publisher = Callable[[Platform, dict[str, Any]], None]


@dataclass
class Ctx:
    """The platform a request acts for, and where its events go."""

    platform: Platform
    publish: Publisher
    request_id: str | None = None
    idempotency_key: str | None = None
    # The connected account named by a Stripe-Account header, if any.
    account: str | None = None

    def emit(
        self,
        type: str,
        obj: dict[str, Any],
        *,
        account: str | None = None,
        previous: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"object": snapshot(obj)}
        if previous:
            data["previous_attributes"] = snapshot(dict(previous))
        event: dict[str, Any] = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.platform.now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 0,
            "request": {"id": self.request_id, "idempotency_key": self.idempotency_key},
            "type": type,
        }
        if account is not None:
            event["account"] = account
        self.platform.add("events", event)
        self.publish(self.platform, event)
        return event


def _matches(event_type: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern


def list_events(ctx: Ctx, params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, ["type", "types", "created", *PAGING])
    one = param_str(params, "type")
    many = param_list(params, "types")
    if one and many:
        raise invalid_request("You may only specify one of these parameters: type, types.", param="types")
    if len(many) > 20:
        raise invalid_request("You may pass at most 20 types.", param="types")
    patterns = many or ([one] if one else [])
    items = [
        event
        for event in ctx.platform.newest_first("events")
        if event.get("account") == ctx.account
        and (not patterns or any(_matches(event["type"], pattern) for pattern in patterns))
    ]
    return page(created_filter(params, items), params, "/v1/events", "event")


def retrieve_event(ctx: Ctx, event_id: str) -> dict[str, Any]:
    event = ctx.platform.get(event_id)
    if event.get("account") != ctx.account:
        raise no_such("event", event_id)
    return event

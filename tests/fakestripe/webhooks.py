"""Webhook endpoints and the delivery of events to them, as Stripe delivers, plus chaos on demand.

Each event goes to every enabled endpoint of its platform that subscribes to its type (Connect
endpoints get the events of connected accounts, the others the platform's own). A delivery is a POST
of the event's JSON with `Stripe-Signature: t=<unix>,v1=<HMAC-SHA256(secret, "<t>.<payload>")>`,
signed afresh for each attempt. A non-2xx answer or a connection error is retried after each of the
retry delays in turn, then given up. Every attempt is recorded.

Each endpoint has one sender, so events reach it in the order they happened unless chaos says
otherwise: `duplicates` extra copies of each delivery, `delay` seconds before each, `drop_next`
deliveries lost for good, `drop_types` lost for good by type, `hold` the next N events then deliver
them `reversed` or `shuffled`, and `signature` `stale` / `future` (timestamp `signature_skew` seconds
off) or `wrong_secret`. Delivery may be paused and resumed; any past event may be replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.fakestripe.errors import invalid_request, no_such
from tests.fakestripe.events import Ctx
from tests.fakestripe.forms import param_bool, param_list, param_metadata, param_str, refuse_unknown
from tests.fakestripe.listing import PAGING, page
from tests.fakestripe.store import Platform, new_id, snapshot

SIGNATURES = ("valid", "stale", "future", "wrong_secret")
HOLD_ORDERS = ("reversed", "shuffled")
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def sign(payload: str, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass
class Chaos:
    duplicates: int = 0
    delay: float = 0.0
    drop_next: int = 0
    drop_types: set[str] = field(default_factory=set)
    hold: int = 0
    hold_order: str = "reversed"
    seed: int | None = None
    signature: str = "valid"
    signature_skew: int = 600

    def view(self) -> dict[str, Any]:
        return {
            "duplicates": self.duplicates,
            "delay": self.delay,
            "drop_next": self.drop_next,
            "drop_types": sorted(self.drop_types),
            "hold": self.hold,
            "hold_order": self.hold_order,
            "seed": self.seed,
            "signature": self.signature,
            "signature_skew": self.signature_skew,
        }

    def update(self, changes: Mapping[str, Any]) -> None:
        for name, value in changes.items():
            if name not in self.view():
                raise invalid_request(f"Unknown chaos setting: {name}", param=name)
            if name == "signature" and value not in SIGNATURES:
                raise invalid_request(f"signature must be one of {', '.join(SIGNATURES)}", param=name)
            if name == "hold_order" and value not in HOLD_ORDERS:
                raise invalid_request(f"hold_order must be one of {', '.join(HOLD_ORDERS)}", param=name)
            setattr(self, name, set(value) if name == "drop_types" else value)


@dataclass
class Item:
    event: dict[str, Any]
    kind: str  # "event", "duplicate" or "replay"
    attempt: int = 1
    not_before: float = 0.0
    # Decided when the delivery is queued, so a later change of chaos does not reach it.
    signature: str = "valid"


@dataclass
class Endpoint:
    platform: Platform
    obj: dict[str, Any]
    chaos: Chaos
    paused: bool = False
    busy: bool = False
    queue: deque[Item] = field(default_factory=deque)
    held: list[dict[str, Any]] = field(default_factory=list)
    timers: set[asyncio.TimerHandle] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def secret(self) -> str:
        return str(self.obj["_secret"])

    def wants(self, event: Mapping[str, Any]) -> bool:
        events = self.obj["enabled_events"]
        return (
            self.obj["status"] == "enabled"
            and bool(self.obj["_connect"]) == ("account" in event)
            and ("*" in events or event["type"] in events)
        )

    def idle(self) -> bool:
        return not self.busy and not self.timers and (self.paused or not self.queue)


@dataclass
class PlatformDelivery:
    """A platform's delivery settings, its endpoints' defaults and its record of attempts."""

    retry_delays: list[float]
    defaults: Chaos = field(default_factory=Chaos)
    paused: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)


class Deliverer:
    def __init__(self, retry_delays: Iterable[float], timeout: float) -> None:
        self._retry_delays = list(retry_delays)
        self._timeout = timeout
        self._endpoints: dict[str, Endpoint] = {}
        self._platforms: dict[str, PlatformDelivery] = {}
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout)

    async def stop(self) -> None:
        for endpoint in self._endpoints.values():
            for timer in endpoint.timers:
                timer.cancel()
            if endpoint.worker is not None:
                endpoint.worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await endpoint.worker
        if self._client is not None:
            await self._client.aclose()

    def settings(self, platform: Platform) -> PlatformDelivery:
        found = self._platforms.get(platform.account_id)
        if found is None:
            found = self._platforms[platform.account_id] = PlatformDelivery(list(self._retry_delays))
        return found

    def endpoints(self, platform: Platform) -> list[Endpoint]:
        return [ep for ep in self._endpoints.values() if ep.platform is platform]

    def endpoint(self, platform: Platform, endpoint_id: str) -> Endpoint:
        found = self._endpoints.get(endpoint_id)
        if found is None or found.platform is not platform:
            raise no_such("webhook endpoint", endpoint_id)
        return found

    def chosen(self, platform: Platform, endpoint_id: str | None) -> list[Endpoint]:
        return [self.endpoint(platform, endpoint_id)] if endpoint_id else self.endpoints(platform)

    # -- endpoints -----------------------------------------------------------------------------------

    def add_endpoint(
        self,
        platform: Platform,
        *,
        url: str,
        enabled_events: list[str],
        connect: bool = False,
        secret: str | None = None,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
        api_version: str | None = None,
    ) -> Endpoint:
        obj: dict[str, Any] = {
            "id": new_id("we"),
            "object": "webhook_endpoint",
            "api_version": api_version,
            "application": None,
            "created": platform.now(),
            "description": description,
            "enabled_events": enabled_events,
            "livemode": False,
            "metadata": metadata or {},
            "status": "enabled",
            "url": url,
            "_connect": connect,
            "_secret": secret or new_id("whsec", 32),
        }
        platform.add("webhook_endpoints", obj)
        settings = self.settings(platform)
        endpoint = Endpoint(platform, obj, Chaos(**settings.defaults.view()), paused=settings.paused)
        endpoint.chaos.drop_types = set(settings.defaults.drop_types)
        self._endpoints[endpoint.id] = endpoint
        return endpoint

    def remove_endpoint(self, endpoint: Endpoint) -> None:
        self._endpoints.pop(endpoint.id, None)
        endpoint.platform.collection("webhook_endpoints").pop(endpoint.id, None)
        for timer in endpoint.timers:
            timer.cancel()
        if endpoint.worker is not None:
            endpoint.worker.cancel()

    # -- events --------------------------------------------------------------------------------------

    def publish(self, platform: Platform, event: dict[str, Any]) -> None:
        for endpoint in self.endpoints(platform):
            if endpoint.wants(event):
                self._offer(endpoint, event)

    def _offer(self, endpoint: Endpoint, event: dict[str, Any]) -> None:
        chaos = endpoint.chaos
        if event["type"] in chaos.drop_types:
            self._record_drop(endpoint, event, "drop_types")
            return
        if chaos.drop_next > 0:
            chaos.drop_next -= 1
            self._record_drop(endpoint, event, "drop_next")
            return
        event["pending_webhooks"] += 1
        if chaos.hold > 0:
            endpoint.held.append(event)
            if len(endpoint.held) >= chaos.hold:
                self.release(endpoint)
            return
        self._enqueue(endpoint, event)

    def release(self, endpoint: Endpoint) -> int:
        """Send the held events now, in the chaos order, and stop holding."""
        held, endpoint.held = endpoint.held, []
        endpoint.chaos.hold = 0
        if endpoint.chaos.hold_order == "shuffled":
            random.Random(endpoint.chaos.seed).shuffle(held)
        else:
            held.reverse()
        for event in held:
            self._enqueue(endpoint, event)
        return len(held)

    def _enqueue(self, endpoint: Endpoint, event: dict[str, Any]) -> None:
        chaos = endpoint.chaos
        not_before = time.time() + chaos.delay
        endpoint.queue.append(Item(event, "event", not_before=not_before, signature=chaos.signature))
        for _ in range(chaos.duplicates):
            endpoint.queue.append(Item(event, "duplicate", not_before=not_before, signature=chaos.signature))
        self._wake(endpoint)

    def replay(
        self, platform: Platform, event: dict[str, Any], endpoint_id: str | None, signature: str | None
    ) -> int:
        if signature is not None and signature not in SIGNATURES:
            raise invalid_request(f"signature must be one of {', '.join(SIGNATURES)}", param="signature")
        targets = (
            [self.endpoint(platform, endpoint_id)]
            if endpoint_id
            else [ep for ep in self.endpoints(platform) if ep.wants(event)]
        )
        for endpoint in targets:
            endpoint.queue.append(Item(event, "replay", signature=signature or endpoint.chaos.signature))
            self._wake(endpoint)
        return len(targets)

    def set_paused(self, endpoints: list[Endpoint], paused: bool) -> None:
        for endpoint in endpoints:
            endpoint.paused = paused
            self._wake(endpoint)

    def _wake(self, endpoint: Endpoint) -> None:
        if endpoint.worker is None or endpoint.worker.done():
            endpoint.worker = asyncio.get_running_loop().create_task(self._work(endpoint))
        endpoint.wake.set()

    # -- sending -------------------------------------------------------------------------------------

    async def _work(self, endpoint: Endpoint) -> None:
        while True:
            while endpoint.paused or not endpoint.queue:
                endpoint.wake.clear()
                await endpoint.wake.wait()
            item = endpoint.queue.popleft()
            endpoint.busy = True
            try:
                wait = item.not_before - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if endpoint.paused:
                    endpoint.queue.appendleft(item)
                    continue
                await self._attempt(endpoint, item)
            finally:
                endpoint.busy = False

    async def _attempt(self, endpoint: Endpoint, item: Item) -> None:
        assert self._client is not None
        mode = item.signature
        now = int(time.time())
        skew = endpoint.chaos.signature_skew
        timestamp = {"stale": now - skew, "future": now + skew}.get(mode, now)
        secret = new_id("whsec", 32) if mode == "wrong_secret" else endpoint.secret
        payload = json.dumps(snapshot(item.event), indent=2)
        record: dict[str, Any] = {
            "id": new_id("wdel"),
            "event": item.event["id"],
            "type": item.event["type"],
            "endpoint": endpoint.id,
            "url": endpoint.obj["url"],
            "kind": item.kind,
            "attempt": item.attempt,
            "signature": mode,
            "timestamp": timestamp,
            "started_at": time.time(),
        }
        status: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(
                endpoint.obj["url"],
                content=payload.encode(),
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": USER_AGENT,
                    "Stripe-Signature": sign(payload, secret, timestamp),
                },
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        succeeded = status is not None and 200 <= status < 300
        record.update(
            status=status,
            error=error,
            outcome="succeeded" if succeeded else "failed",
            finished_at=time.time(),
        )
        settings = self.settings(endpoint.platform)
        settings.records.append(record)
        if succeeded:
            if item.kind == "event":
                item.event["pending_webhooks"] = max(0, item.event["pending_webhooks"] - 1)
            return
        if item.attempt <= len(settings.retry_delays):
            delay = settings.retry_delays[item.attempt - 1]
            retry = Item(item.event, item.kind, attempt=item.attempt + 1, signature=item.signature)
            record["retry_in"] = delay
            self._schedule(endpoint, retry, delay)

    def _schedule(self, endpoint: Endpoint, item: Item, delay: float) -> None:
        def requeue() -> None:
            endpoint.timers.discard(timer)
            if endpoint.obj["id"] in self._endpoints:
                endpoint.queue.append(item)
                self._wake(endpoint)

        timer = asyncio.get_running_loop().call_later(delay, requeue)
        endpoint.timers.add(timer)

    def _record_drop(self, endpoint: Endpoint, event: dict[str, Any], reason: str) -> None:
        self.settings(endpoint.platform).records.append(
            {
                "id": new_id("wdel"),
                "event": event["id"],
                "type": event["type"],
                "endpoint": endpoint.id,
                "url": endpoint.obj["url"],
                "kind": "event",
                "attempt": 0,
                "outcome": "dropped",
                "reason": reason,
                "status": None,
                "error": None,
                "started_at": time.time(),
                "finished_at": time.time(),
            }
        )

    # -- state ---------------------------------------------------------------------------------------

    def idle(self, platform: Platform) -> bool:
        return all(endpoint.idle() for endpoint in self.endpoints(platform))

    async def wait_idle(self, platform: Platform, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.idle(platform):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def status(self, platform: Platform) -> dict[str, Any]:
        return {
            "idle": self.idle(platform),
            "paused": self.settings(platform).paused,
            "endpoints": [
                {
                    "id": endpoint.id,
                    "url": endpoint.obj["url"],
                    "paused": endpoint.paused,
                    "queued": len(endpoint.queue),
                    "held": len(endpoint.held),
                    "retries_pending": len(endpoint.timers),
                    "sending": endpoint.busy,
                    "chaos": endpoint.chaos.view(),
                }
                for endpoint in self.endpoints(platform)
            ],
        }


# -- the webhook_endpoints API ------------------------------------------------------------------------

_CREATE = ["url", "enabled_events", "connect", "description", "metadata", "api_version"]


def api_view(endpoint: Endpoint, *, with_secret: bool = False) -> dict[str, Any]:
    view = snapshot(endpoint.obj)
    if with_secret:
        view["secret"] = endpoint.secret
    return view


def create_endpoint(ctx: Ctx, deliverer: Deliverer, params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, _CREATE)
    url = param_str(params, "url", required=True)
    assert url is not None
    events = param_list(params, "enabled_events")
    if not events:
        raise invalid_request(
            "Missing required param: enabled_events.", param="enabled_events", code="parameter_missing"
        )
    if not url.startswith(("http://", "https://")):
        raise invalid_request("Invalid URL: must be an http or https URL", param="url", code="url_invalid")
    endpoint = deliverer.add_endpoint(
        ctx.platform,
        url=url,
        enabled_events=events,
        connect=param_bool(params, "connect"),
        description=param_str(params, "description"),
        metadata=param_metadata(params),
        api_version=param_str(params, "api_version"),
    )
    return api_view(endpoint, with_secret=True)


def update_endpoint(endpoint: Endpoint, params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, ["url", "enabled_events", "disabled", "description", "metadata"])
    obj = endpoint.obj
    if "url" in params:
        obj["url"] = param_str(params, "url", required=True)
    if "enabled_events" in params:
        obj["enabled_events"] = param_list(params, "enabled_events")
    if "disabled" in params:
        obj["status"] = "disabled" if param_bool(params, "disabled") else "enabled"
    if "description" in params:
        obj["description"] = param_str(params, "description")
    obj["metadata"] = param_metadata(params, obj["metadata"])
    return api_view(endpoint)


def list_endpoints(deliverer: Deliverer, platform: Platform, params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, list(PAGING))
    items = [api_view(endpoint) for endpoint in reversed(deliverer.endpoints(platform))]
    return page(items, params, "/v1/webhook_endpoints", "webhook endpoint")

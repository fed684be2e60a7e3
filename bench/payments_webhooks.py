"""Stripe webhooks through the platform (a benchmark, not a test), against the fake Stripe API.

Two measurements, each run on fresh rooms whose hosts finished Stripe's onboarding at the fake:

1. Paid pins. In every room a buyer orders a pin over REST (each one outbidding the last), pays at
   the fake with a test card (its control API, as Stripe.js would), and an observer's WebSocket in
   the room waits for the `paid_pin` frame. `webhook_to_pin_visible_ms` runs from the moment the
   fake began the POST of `payment_intent.succeeded` that the edge accepted (the fake records it;
   same machine, same clock) to the frame; `pay_to_pin_visible_ms` from the card's confirmation.
   Rooms run side by side, one pin in flight per room.
2. Webhook throughput with duplicates. Tip orders are created and paid at the fake while its
   endpoint to the edge is disabled (so it delivers nothing), then their `payment_intent.succeeded`
   events, a share of them duplicated, are shuffled and POSTed to the edge's webhook endpoint
   concurrently, signed with the endpoint's secret as Stripe signs. It reports deliveries answered
   per second (duplicates included), the time until every tip was fulfilled, and whether each
   order was fulfilled exactly once (order states, the rooms' history and the observers' frames).

By default it starts a private platform: Postgres, Redis, the fake Stripe API as a process of its
own and the five services (bench/harness.py's private platform), with payments pointed at the fake and
the fake's webhooks at the edge. `--url` with `--stripe-url` and `--stripe-key` drives a running one.

    .venv/bin/python bench/payments_webhooks.py
    .venv/bin/python bench/payments_webhooks.py --pins 100 --events 500 --duplicates 0.5 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
from harness import (
    CpuMeter,
    bearer,
    create_room,
    emit,
    install_uvloop,
    join,
    machine,
    min_median_max,
    ms_stats,
    private_platform,
    raise_for,
    to_ws_url,
)

if TYPE_CHECKING:
    from tests.fakestripe import FakeStripeControl

REPO_ROOT = Path(__file__).resolve().parents[1]
WEBHOOK_PATH = "/api/v1/payments/stripe/webhook"
PASSWORD = "a long bench passphrase"
# Seconds to wait for a frame, an order or the fake before a run is declared stuck.
FRAME_TIMEOUT = 30.0
FULFIL_TIMEOUT = 180.0
# The observers ping the edge this often (it closes sockets that stay silent for WS_IDLE_TIMEOUT).
PING_INTERVAL = 5.0
# Reconciliation would apply the throughput run's events from Stripe's list behind the webhooks'
# back; the private platform runs it once a day.
RECONCILE_INTERVAL = "86400"


def cpu_report(used: Mapping[str, float], count: int, unit: str) -> dict[str, Any]:
    """CPU ms per `unit` by process, and the sum of the platform's processes (neither the load
    generator nor the fake Stripe API)."""
    if not used or not count:
        return {}
    platform = sum(seconds for name, seconds in used.items() if name not in ("load-generator", "fake-stripe"))
    return {
        f"cpu_ms_per_{unit}": {name: round(1000 * s / count, 3) for name, s in sorted(used.items())},
        f"cpu_ms_per_{unit}_all_services": round(1000 * platform / count, 3),
    }


class Meter:
    """CPU of the platform's processes (harness's CpuMeter) and of this process alone: the services
    of a private platform are its children, measured each on their own."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._meter = CpuMeter(dict(pids))
        self._own = 0.0

    def start(self) -> None:
        self._meter.start()
        self._own = time.process_time()

    def stop(self) -> dict[str, float]:
        own = time.process_time() - self._own
        return {**self._meter.stop().used, "load-generator": own}


# -- the fake Stripe API as a process -----------------------------------------------------------------


@dataclass
class Stripe:
    """The fake's platform the payments service runs against, and the edge's endpoint on it."""

    url: str
    secret_key: str
    control: FakeStripeControl
    endpoint_id: str = ""
    endpoint_secret: str = ""

    async def set_endpoint_disabled(self, disabled: bool) -> None:
        """Through Stripe's own API, as an operator would in the dashboard."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            answer = await http.post(
                f"/v1/webhook_endpoints/{self.endpoint_id}",
                data={"disabled": "true" if disabled else "false"},
                headers={"Authorization": f"Bearer {self.secret_key}"},
            )
            answer.raise_for_status()


def _import_fake() -> None:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


@contextlib.contextmanager
def fake_stripe_process() -> Iterator[tuple[dict[str, str], int]]:
    """`python -m tests.fakestripe` on a free port with fresh keys; its platform and pid."""
    from chatpop_common.devstack import free_ports

    key = uuid.uuid4().hex
    command = [
        sys.executable,
        "-m",
        "tests.fakestripe",
        "--port",
        str(free_ports(1)[0]),
        "--secret-key",
        f"sk_test_bench{key}",
        "--publishable-key",
        f"pk_test_bench{key}",
        "--webhook-secret",
        f"whsec_bench{key}",
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        platform = json.loads(process.stdout.readline())
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{platform['url']}/_fake/health", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fake Stripe API did not start")
            time.sleep(0.1)
        yield platform, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def platform_with_stripe() -> Iterator[tuple[str, dict[str, int], Stripe]]:
    """The fake Stripe API, then Postgres, Redis and the five services with payments pointed at it,
    then the fake's webhook endpoints (the platform's and Connect's) pointed at the edge."""
    _import_fake()
    from chatpop_payments.events import TYPES
    from tests.fakestripe import FakeStripeControl

    with contextlib.ExitStack() as stack:
        platform, fake_pid = stack.enter_context(fake_stripe_process())
        stripe_env = {
            "STRIPE_API_BASE": platform["url"],
            "STRIPE_SECRET_KEY": platform["secret_key"],
            "STRIPE_PUBLISHABLE_KEY": platform["publishable_key"],
            "STRIPE_WEBHOOK_SECRET": platform["webhook_secret"],
            "RECONCILE_INTERVAL": RECONCILE_INTERVAL,
        }
        running = stack.enter_context(private_platform(extra_env=stripe_env))
        base_url, pids = running.base_url, running.measured("postgres", "redis")
        control = FakeStripeControl(platform["url"], platform["secret_key"])
        stack.callback(control.close)
        webhook = f"{base_url}{WEBHOOK_PATH}"
        # Subscribed to what payments acts on, as the endpoint is set up in Stripe's dashboard.
        endpoint = control.add_webhook_endpoint(webhook, [t for t in TYPES if t != "account.updated"])
        control.add_webhook_endpoint(webhook, ["account.updated"], connect=True)
        stripe = Stripe(
            url=platform["url"],
            secret_key=platform["secret_key"],
            control=control,
            endpoint_id=endpoint["id"],
            endpoint_secret=endpoint["secret"],
        )
        yield base_url, {**pids, "fake-stripe": fake_pid}, stripe


def attach_stripe(url: str, secret_key: str, base_url: str) -> Stripe:
    """A running fake whose platform endpoint (the one that gets payment_intent.succeeded) already
    points at the edge."""
    _import_fake()
    from tests.fakestripe import FakeStripeControl

    control = FakeStripeControl(url, secret_key)
    for endpoint in control.objects("webhook_endpoints"):
        events = endpoint["enabled_events"]
        if endpoint["url"] == f"{base_url}{WEBHOOK_PATH}" and (
            "*" in events or "payment_intent.succeeded" in events
        ):
            return Stripe(url, secret_key, control, endpoint["id"], endpoint["secret"])
    raise SystemExit(f"the fake at {url} has no webhook endpoint for {base_url}{WEBHOOK_PATH}")


# -- rooms, people and what the observers see ---------------------------------------------------------


@dataclass
class Room:
    code: str
    buyers: list[str]  # room tokens
    targets: list[int] = field(default_factory=list)  # seqs of messages to pin
    observer: aiohttp.ClientWebSocketResponse | None = None


@dataclass
class Seen:
    """Frames the observers received, by order id, with their arrival times (time.time())."""

    pins: dict[str, float] = field(default_factory=dict)
    tips: dict[str, list[float]] = field(default_factory=dict)
    pin_waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    tips_missing: set[str] = field(default_factory=set)
    all_tips: asyncio.Event = field(default_factory=asyncio.Event)

    def frame(self, frame: dict[str, Any], now: float) -> None:
        kind = frame.get("type")
        if kind == "paid_pin":
            order_id = frame["paid_pin"]["id"]
            self.pins.setdefault(order_id, now)
            waiter = self.pin_waiters.pop(order_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(now)
        elif kind == "tip":
            order_id = frame["tip"]["order_id"]
            self.tips.setdefault(order_id, []).append(now)
            if order_id in self.tips_missing:
                self.tips_missing.discard(order_id)
                if not self.tips_missing:
                    self.all_tips.set()

    def expect_pin(self, order_id: str) -> asyncio.Future[float]:
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if order_id in self.pins:
            waiter.set_result(self.pins[order_id])
        else:
            self.pin_waiters[order_id] = waiter
        return waiter

    def expect_tips(self, order_ids: set[str]) -> None:
        self.tips_missing = set(order_ids) - set(self.tips)
        if self.tips_missing:
            self.all_tips.clear()
        else:
            self.all_tips.set()


async def observe(ws: aiohttp.ClientWebSocketResponse, seen: Seen) -> None:
    async def ping() -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            await ws.send_str('{"type":"ping"}')

    pinger = asyncio.create_task(ping())
    try:
        async for raw in ws:
            now = time.time()
            if raw.type is not aiohttp.WSMsgType.TEXT:
                break
            seen.frame(json.loads(raw.data), now)
    finally:
        pinger.cancel()


async def onboarded_room(http: httpx.AsyncClient, stripe: Stripe, index: int) -> str:
    """A host with an account who finished Stripe's onboarding (at the fake), and their room."""
    email = f"bench-host-{uuid.uuid4().hex[:12]}@example.com"
    registered = raise_for(
        await http.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    )
    headers = bearer(registered["access_token"])
    room = await create_room(http, registered["access_token"], name=f"bench money {index}")
    started = raise_for(
        await http.post("/api/v1/payments/payout-account/onboarding", json={}, headers=headers)
    )
    await asyncio.to_thread(stripe.control.complete_onboarding, started["account"]["stripe_account_id"])
    # account.updated reaches payments through the edge's webhook (the Connect endpoint).
    deadline = time.monotonic() + FRAME_TIMEOUT
    while not raise_for(await http.get("/api/v1/payments/payout-account", headers=headers))["account"][
        "can_receive"
    ]:
        if time.monotonic() > deadline:
            raise RuntimeError("the host's onboarding never reached payments")
        await asyncio.sleep(0.05)
    return str(room["code"])


async def setup_rooms(
    http: httpx.AsyncClient, ws_session: aiohttp.ClientSession, ws_base: str, stripe: Stripe, count: int
) -> list[Room]:
    async def one(index: int) -> Room:
        code = await onboarded_room(http, stripe, index)
        buyers = [(await join(http, code, f"buyer{index}_{n}"))["room_token"] for n in range(2)]
        room = Room(code=code, buyers=buyers)
        observer_token = (await join(http, code, f"watcher{index}"))["room_token"]
        room.observer = await ws_session.ws_connect(f"{ws_base}/ws/v1/rooms/{code}?token={observer_token}")
        ready = json.loads(await room.observer.receive_str())
        assert ready.get("type") == "ready", ready
        return room

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def post_targets(http: httpx.AsyncClient, room: Room, count: int) -> None:
    """Messages the buyers will pin, one per pin."""
    for index in range(count):
        token = room.buyers[index % len(room.buyers)]
        sent = raise_for(
            await http.post(
                f"/api/v1/rooms/{room.code}/messages",
                json={"client_msg_id": uuid.uuid4().hex, "text": f"worth pinning {index}"},
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        room.targets.append(int(sent["message"]["seq"]))


async def create_order(
    http: httpx.AsyncClient, room: Room, buyer: str, item: dict[str, Any]
) -> tuple[str, str]:
    """The order's id and its PaymentIntent's id (from the client secret Stripe.js would get)."""
    created = raise_for(
        await http.post(
            f"/api/v1/rooms/{room.code}/orders",
            json={"idempotency_key": f"bench-{uuid.uuid4().hex}", **item},
            headers={"Authorization": f"Bearer {buyer}"},
        )
    )
    return str(created["order"]["id"]), str(created["client_secret"]).split("_secret_")[0]


async def pay(stripe: Stripe, intent: str) -> None:
    paid = await asyncio.to_thread(stripe.control.pay, intent, "pm_card_visa")
    if paid["error"] is not None:
        raise RuntimeError(f"the test card was declined: {paid['error']}")


# -- 1. paid pins: webhook to the frame ---------------------------------------------------------------


@dataclass
class PinTiming:
    order_id: str
    intent: str
    paid_at: float
    visible_at: float | None


async def pins_run(
    http: httpx.AsyncClient, rooms: list[Room], seen: Seen, stripe: Stripe, pins: int, pids: dict[str, int]
) -> dict[str, Any]:
    from chatpop_common.pricing import PIN_TIERS

    per_room = [pins // len(rooms) + (i < pins % len(rooms)) for i in range(len(rooms))]
    await asyncio.gather(*(post_targets(http, room, n) for room, n in zip(rooms, per_room, strict=True)))
    timings: list[PinTiming] = []

    async def room_pins(room: Room, count: int) -> None:
        for index in range(count):
            # Every pin outbids the one before it by one tier.
            item = {"pin": {"target_seq": room.targets[index], "tier_cents": PIN_TIERS[index][0]}}
            order_id, intent = await create_order(http, room, room.buyers[index % len(room.buyers)], item)
            waiter = seen.expect_pin(order_id)
            paid_at = time.time()
            await pay(stripe, intent)
            visible_at = None
            with contextlib.suppress(TimeoutError):
                visible_at = await asyncio.wait_for(waiter, FRAME_TIMEOUT)
            timings.append(PinTiming(order_id, intent, paid_at, visible_at))

    meter = Meter(pids)
    meter.start()
    started = time.perf_counter()
    await asyncio.gather(*(room_pins(room, n) for room, n in zip(rooms, per_room, strict=True)))
    elapsed = time.perf_counter() - started
    cpu = meter.stop()
    # When the fake began the POST of each payment_intent.succeeded that the edge accepted.
    events = await asyncio.to_thread(stripe.control.events, "payment_intent.succeeded")
    event_of = {event["data"]["object"]["id"]: event["id"] for event in events}
    records = await asyncio.to_thread(stripe.control.deliveries, type="payment_intent.succeeded")
    accepted: dict[str, dict[str, Any]] = {}
    failed_attempts = 0
    wanted = {event_of.get(t.intent) for t in timings}
    for record in records:
        if record["event"] not in wanted:
            continue
        if record["outcome"] == "succeeded":
            accepted.setdefault(record["event"], record)
        else:
            failed_attempts += 1
    to_visible, pay_to_visible, answered = [], [], []
    for timing in timings:
        delivery = accepted.get(event_of.get(timing.intent, ""))
        if timing.visible_at is None:
            continue
        pay_to_visible.append(1000 * (timing.visible_at - timing.paid_at))
        if delivery is not None:
            to_visible.append(1000 * (timing.visible_at - delivery["started_at"]))
            answered.append(1000 * (delivery["finished_at"] - delivery["started_at"]))
    visible = sum(t.visible_at is not None for t in timings)
    return {
        "pins": len(timings),
        "rooms": len(rooms),
        "pins_visible": visible,
        "pins_missing": len(timings) - visible,
        "webhook_attempts_failed": failed_attempts,
        "duration_s": round(elapsed, 2),
        "pins_per_s": round(len(timings) / elapsed, 1),
        "webhook_to_pin_visible_ms": ms_stats(to_visible),
        "pay_to_pin_visible_ms": ms_stats(pay_to_visible),
        "webhook_answered_ms": ms_stats(answered),
        **cpu_report(cpu, visible, "pin"),
    }


# -- 2. webhook throughput with duplicates ------------------------------------------------------------


async def paid_tips(
    http: httpx.AsyncClient, rooms: list[Room], stripe: Stripe, count: int, concurrency: int
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """`count` tip orders paid at the fake while it delivers nothing to the edge: the orders (id by
    room code) and their payment_intent.succeeded events."""
    limit = asyncio.Semaphore(concurrency)
    orders: dict[str, str] = {}
    intents: set[str] = set()

    async def one(index: int) -> None:
        room = rooms[index % len(rooms)]
        buyer = room.buyers[(index // len(rooms)) % len(room.buyers)]
        async with limit:
            item = {"tip": {"amount_cents": 100 + index % 400, "note": f"bench tip {index}"}}
            order_id, intent = await create_order(http, room, buyer, item)
            await pay(stripe, intent)
        orders[order_id] = room.code
        intents.add(intent)

    await stripe.set_endpoint_disabled(True)
    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await stripe.set_endpoint_disabled(False)
    events = await asyncio.to_thread(stripe.control.events, "payment_intent.succeeded")
    return orders, [event for event in events if event["data"]["object"]["id"] in intents]


def deliveries_with_duplicates(
    events: list[dict[str, Any]], share: float, copies: int, seed: int
) -> tuple[list[dict[str, Any]], int]:
    """Each event once, plus `copies` more of a `share` of them, shuffled (copies may race)."""
    rng = random.Random(seed)
    items = list(events)
    duplicated = rng.sample(events, round(share * len(events)))
    for event in duplicated:
        items.extend([event] * copies)
    rng.shuffle(items)
    return items, len(duplicated) * copies


async def verify_tips(http: httpx.AsyncClient, rooms: list[Room], orders: dict[str, str]) -> dict[str, Any]:
    """Order states (each buyer's own orders) and the tip entries in every room's history."""
    states: dict[str, str] = {}
    for room in rooms:
        for buyer in room.buyers:
            before = None
            while True:
                query = {"limit": 100, **({"before": before} if before else {})}
                page = raise_for(
                    await http.get(
                        "/api/v1/payments/orders", params=query, headers={"Authorization": f"Bearer {buyer}"}
                    )
                )
                for order in page["orders"]:
                    if order["id"] in orders:
                        states[order["id"]] = order["state"]
                if not page["has_more"] or not page["orders"]:
                    break
                before = page["orders"][-1]["id"]
    entries: dict[str, int] = {}
    for room in rooms:
        before_seq = None
        while True:
            query = {"limit": 100, **({"before_seq": before_seq} if before_seq else {})}
            page = raise_for(
                await http.get(
                    f"/api/v1/rooms/{room.code}/messages",
                    params=query,
                    headers={"Authorization": f"Bearer {room.buyers[0]}"},
                )
            )
            for message in page["messages"]:
                tip = message.get("tip")
                if message.get("kind") == "tip" and tip and tip["order_id"] in orders:
                    entries[tip["order_id"]] = entries.get(tip["order_id"], 0) + 1
            if not page["has_more"] or not page["messages"]:
                break
            before_seq = min(message["seq"] for message in page["messages"])
    by_state: dict[str, int] = {}
    for order_id in orders:
        state = states.get(order_id, "unknown")
        by_state[state] = by_state.get(state, 0) + 1
    return {
        "order_states": by_state,
        "tip_entries": sum(entries.values()),
        "orders_with_one_tip_entry": sum(entries.get(order_id) == 1 for order_id in orders),
    }


async def events_run(
    http: httpx.AsyncClient,
    rooms: list[Room],
    seen: Seen,
    stripe: Stripe,
    base_url: str,
    pids: dict[str, int],
    args: argparse.Namespace,
    seed: int,
) -> dict[str, Any]:
    from tests.fakestripe.webhooks import sign

    orders, events = await paid_tips(http, rooms, stripe, args.events, args.concurrency)
    if len(events) != len(orders):
        raise RuntimeError(f"{len(orders)} tips paid but {len(events)} payment_intent.succeeded events")
    items, duplicates = deliveries_with_duplicates(events, args.duplicates, args.copies, seed)
    # The body as the fake sends it (and Stripe, pretty-printed), signed afresh for each delivery.
    bodies = {event["id"]: json.dumps(event, indent=2) for event in events}
    seen.expect_tips(set(orders))
    statuses: dict[str, int] = {}
    first_receipts = 0
    latencies: list[float] = []
    queue = iter(items)
    meter = Meter(pids)

    async def deliver(session: aiohttp.ClientSession) -> None:
        nonlocal first_receipts
        for event in queue:
            body = bodies[event["id"]]
            signature = sign(body, stripe.endpoint_secret, int(time.time()))
            sent = time.perf_counter()
            async with session.post(
                f"{base_url}{WEBHOOK_PATH}",
                data=body.encode(),
                headers={"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": signature},
            ) as answer:
                receipt = await answer.json(content_type=None)
            latencies.append(1000 * (time.perf_counter() - sent))
            statuses[str(answer.status)] = statuses.get(str(answer.status), 0) + 1
            if answer.status == 200 and not receipt.get("duplicate"):
                first_receipts += 1

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        meter.start()
        started = time.perf_counter()
        started_wall = time.time()
        await asyncio.gather(*(deliver(session) for _ in range(args.concurrency)))
        answered_s = time.perf_counter() - started
    fulfilled_in_time = True
    try:
        await asyncio.wait_for(seen.all_tips.wait(), FULFIL_TIMEOUT)
    except TimeoutError:
        fulfilled_in_time = False
    cpu = meter.stop()
    arrivals = [times[0] for order_id, times in seen.tips.items() if order_id in orders]
    all_fulfilled_s = max(arrivals) - started_wall if fulfilled_in_time and arrivals else None
    checks = await verify_tips(http, rooms, orders)
    frames_per_order = [len(seen.tips.get(order_id, [])) for order_id in orders]
    fulfilled_once = (
        fulfilled_in_time
        and checks["order_states"] == {"fulfilled": len(orders)}
        and checks["orders_with_one_tip_entry"] == len(orders)
        and checks["tip_entries"] == len(orders)
        and all(count == 1 for count in frames_per_order)
        and first_receipts == len(orders)
    )
    return {
        "orders": len(orders),
        "rooms": len(rooms),
        "deliveries": len(items),
        "duplicate_deliveries": duplicates,
        "concurrency": args.concurrency,
        "answers": statuses,
        "first_receipts": first_receipts,
        "answered_s": round(answered_s, 2),
        "webhook_events_per_s": round(len(items) / answered_s, 1),
        "webhook_answer_ms": ms_stats(latencies),
        "all_fulfilled_s": None if all_fulfilled_s is None else round(all_fulfilled_s, 2),
        "orders_fulfilled_per_s": round(len(orders) / all_fulfilled_s, 1) if all_fulfilled_s else None,
        "fulfilled_once": fulfilled_once,
        "checks": {**checks, "tip_frames_per_order_max": max(frames_per_order, default=0)},
        # Measured from the first delivery until the last tip was seen: the fulfilment of each order
        # (outbox, messaging, fan-out) is in it, once per order, not per delivery.
        **cpu_report(cpu, len(items), "webhook_event"),
        **cpu_report(cpu, len(orders), "order"),
    }


# -- a run and the spread of runs ---------------------------------------------------------------------


async def one_run(
    base_url: str, pids: dict[str, int], stripe: Stripe, args: argparse.Namespace, index: int
) -> dict[str, Any]:
    from chatpop_common.pricing import PIN_TIERS

    ws_base = to_ws_url(base_url)
    rooms_needed = max(args.rooms, math.ceil(args.pins / len(PIN_TIERS)))
    seen = Seen()
    limits = httpx.Limits(max_connections=max(20, args.concurrency * 2))
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http,
        aiohttp.ClientSession() as ws_session,
    ):
        rooms = await setup_rooms(http, ws_session, ws_base, stripe, rooms_needed)
        observers = [asyncio.create_task(observe(room.observer, seen)) for room in rooms if room.observer]
        try:
            result: dict[str, Any] = {"run": index + 1}
            if args.pins:
                result["pins"] = await pins_run(http, rooms, seen, stripe, args.pins, pids)
            if args.events:
                result["webhook_events"] = await events_run(
                    http, rooms, seen, stripe, base_url, pids, args, seed=args.seed + index
                )
        finally:
            for room in rooms:
                if room.observer is not None:
                    await room.observer.close()
            for task in observers:
                task.cancel()
            await asyncio.gather(*observers, return_exceptions=True)
    return result


def spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {"runs": len(runs)}
    pins = [run["pins"] for run in runs if "pins" in run]
    if pins:
        for q in ("p50", "p95", "p99", "max"):
            result[f"webhook_to_pin_visible_{q}_ms"] = min_median_max(
                [p["webhook_to_pin_visible_ms"][q] for p in pins]
            )
        result["pay_to_pin_visible_p50_ms"] = min_median_max(
            [p["pay_to_pin_visible_ms"]["p50"] for p in pins]
        )
        result["cpu_ms_per_pin_all_services"] = min_median_max(
            [p.get("cpu_ms_per_pin_all_services") for p in pins]
        )
    events = [run["webhook_events"] for run in runs if "webhook_events" in run]
    if events:
        result["webhook_events_per_s"] = min_median_max([e["webhook_events_per_s"] for e in events])
        result["all_fulfilled_s"] = min_median_max([e["all_fulfilled_s"] for e in events])
        result["cpu_ms_per_webhook_event_all_services"] = min_median_max(
            [e.get("cpu_ms_per_webhook_event_all_services") for e in events]
        )
        result["fulfilled_once"] = all(e["fulfilled_once"] for e in events)
    return result


async def main_async(
    args: argparse.Namespace, base_url: str, pids: dict[str, int], stripe: Stripe
) -> list[dict[str, Any]]:
    return [await one_run(base_url, pids, stripe, args, index) for index in range(args.repeat)]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pins", type=int, default=200, help="paid pins bought and timed (0: skip)")
    parser.add_argument(
        "--rooms", type=int, default=10, help="rooms the pins and tips are spread over (more when needed)"
    )
    parser.add_argument(
        "--events", type=int, default=1000, help="tip orders whose events are delivered (0: skip)"
    )
    parser.add_argument(
        "--duplicates", type=float, default=0.3, help="share of the events delivered again (0-1, default 0.3)"
    )
    parser.add_argument("--copies", type=int, default=1, help="extra deliveries of each duplicated event")
    parser.add_argument("--concurrency", type=int, default=16, help="webhook POSTs in flight at once")
    parser.add_argument("--repeat", type=int, default=1, help="runs on the same platform (adds a `spread`)")
    parser.add_argument("--seed", type=int, default=1, help="how duplicates are chosen and shuffled")
    parser.add_argument("--url", help="a running edge (default: start a private platform)")
    parser.add_argument("--stripe-url", help="with --url: the fake Stripe API payments runs against")
    parser.add_argument("--stripe-key", help="with --url: that platform's secret key (sk_test_…)")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.repeat < 1 or args.concurrency < 1 or args.copies < 1 or not 0 <= args.duplicates <= 1:
        parser.error("--repeat, --concurrency and --copies take 1 or more; --duplicates a share from 0 to 1")
    if args.url and not (args.stripe_url and args.stripe_key):
        parser.error("--url needs --stripe-url and --stripe-key")
    install_uvloop()
    if args.url:
        base_url = args.url.rstrip("/")
        stripe = attach_stripe(args.stripe_url.rstrip("/"), args.stripe_key, base_url)
        runs = asyncio.run(main_async(args, base_url, {}, stripe))
    else:
        with platform_with_stripe() as (base_url, pids, stripe):
            runs = asyncio.run(main_async(args, base_url, pids, stripe))
    document: dict[str, Any] = {
        "benchmark": "payments_webhooks",
        "machine": machine(),
        "settings": {
            "pins": args.pins,
            "events": args.events,
            "duplicates": args.duplicates,
            "copies": args.copies,
            "concurrency": args.concurrency,
        },
        "results": runs,
    }
    if args.repeat > 1:
        document["spread"] = spread(runs)
    emit(document, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

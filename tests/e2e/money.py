"""Money through the edge for the e2e tests: hosts whose payouts are set up at the fake Stripe, orders
paid with its test cards, and what a room's clients show of paid pins and tips.

A room's state is read three ways, which must agree: by a client whose socket was open all along
(live), by one that went away and resumed after the last seq it had (resumed), and by one reading
history now (fresh: the board's live paid pins and the tips among the messages).

The fake's control client is synchronous: every call goes through `asyncio.to_thread` (`control`),
so the test's event loop keeps reading its sockets meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from tests.e2e.chat import ChatSocket, Frame, bearer, create_room, join
from tests.fakestripe import FakeStripe
from tests.fakestripe.server import DEFAULT_RETRY_DELAYS

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

WAIT = 20.0
PASSWORD = "a long passphrase for payouts"
# Frames that are entries of the room's log (each has its own seq).
ENTRY_FRAMES = ("message", "tip", "paid_pin", "paid_pin_removed")

T = TypeVar("T")


async def until(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = WAIT) -> T:
    """The first truthy answer of `check`, asked again until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await check()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        await asyncio.sleep(0.05)


async def stays(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 1.0) -> None:
    """`check` holds each time it is asked for `seconds`: what must not happen, watched for a while."""
    deadline = time.monotonic() + seconds
    while True:
        assert await check(), what
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.1)


def error_code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, str(response.json()["error"]["code"])


async def control(fake: FakeStripe, call: str, *args: Any, **kwargs: Any) -> Any:
    """A call of the fake Stripe's control API, off the event loop."""
    return await asyncio.to_thread(getattr(fake.control, call), *args, **kwargs)


def fake_of(stack: Stack) -> FakeStripe:
    assert stack.stripe is not None, "this platform runs payments in test mode"
    return stack.stripe


@contextlib.asynccontextmanager
async def calm_after(fake: FakeStripe) -> AsyncIterator[FakeStripe]:
    """The fake as the test leaves it, then plain delivery of every webhook again, nothing held or
    paused, no API fault, Stripe's own retry delays and refunds that succeed at once."""
    try:
        yield fake
    finally:
        await control(fake, "clear_faults")
        await control(fake, "release_held")
        await control(fake, "calm")
        await control(fake, "resume")
        await control(fake, "set_retry_delays", DEFAULT_RETRY_DELAYS)
        await control(fake, "set_refunds_pending", False)


# --- people -----------------------------------------------------------------------------------------


@dataclass
class Person:
    """Someone in a room: their participant and room token."""

    username: str
    joined: dict[str, Any]

    @property
    def token(self) -> str:
        return str(self.joined["room_token"])

    @property
    def id(self) -> str:
        return str(self.joined["participant"]["id"])


@dataclass
class Host:
    """An account hosting a room; `account` is its Stripe Connect account ("" when it has none)."""

    access: str
    account: str
    code: str
    room_id: str
    me: Person


async def register(http: httpx.AsyncClient, prefix: str = "host") -> str:
    email = f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"
    registered = await http.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    return str(registered.json()["access_token"])


async def enter(http: httpx.AsyncClient, code: str, username: str, token: str | None = None) -> Person:
    return Person(username, await join(http, code, username, token=token))


async def host_with_room(
    http: httpx.AsyncClient, fake: FakeStripe | None, *, onboard: bool = True, name: str = "HostHolly"
) -> Host:
    """A registered host and their room. With `fake`, the host starts payout onboarding at Stripe and,
    with `onboard`, finishes it there; payments learn it from Stripe (asked at once, whatever becomes
    of the account.updated webhook)."""
    access = await register(http)
    account = ""
    if fake is not None:
        started = await http.post(
            "/api/v1/payments/payout-account/onboarding", json={}, headers=bearer(access)
        )
        assert started.status_code == 200, started.text
        account = started.json()["account"]["stripe_account_id"]
        if onboard:
            await control(fake, "complete_onboarding", account)
            refreshed = await http.get(
                "/api/v1/payments/payout-account", params={"refresh": "true"}, headers=bearer(access)
            )
            assert refreshed.status_code == 200, refreshed.text
            assert refreshed.json()["account"]["can_receive"] is True, refreshed.text
    room = await create_room(http, access, name=f"{name}'s room")
    me = await enter(http, room["code"], name, token=access)
    return Host(access, account, room["code"], room["id"], me)


async def say(http: httpx.AsyncClient, code: str, person: Person, text: str) -> int:
    """Send a message over REST; its seq."""
    sent = await http.post(
        f"/api/v1/rooms/{code}/messages",
        json={"client_msg_id": uuid.uuid4().hex, "text": text},
        headers=bearer(person.token),
    )
    assert sent.status_code in (200, 201), sent.text
    return int(sent.json()["message"]["seq"])


# --- orders -----------------------------------------------------------------------------------------


def new_key() -> str:
    return f"order-{uuid.uuid4().hex}"


async def order(
    http: httpx.AsyncClient,
    code: str,
    buyer: Person,
    item: dict[str, Any],
    *,
    key: str | None = None,
    expect: int = 201,
) -> dict[str, Any]:
    """POST an order for `item` ({"pin": …}, {"extension": …} or {"tip": …}); its answer."""
    body = {"idempotency_key": key or new_key(), **item}
    answer = await http.post(f"/api/v1/rooms/{code}/orders", json=body, headers=bearer(buyer.token))
    assert answer.status_code == expect, answer.text
    return dict(answer.json())


def intent_of(created: dict[str, Any]) -> str:
    """The PaymentIntent an order's client secret belongs to (as Stripe.js reads it)."""
    secret = str(created["client_secret"])
    assert "_secret_" in secret, created
    return secret.split("_secret_")[0]


async def pay(fake: FakeStripe, intent: str, card: str = "pm_card_visa") -> dict[str, Any]:
    """The buyer confirms the PaymentIntent with a test card, as Stripe.js would."""
    return dict(await control(fake, "pay", intent, card))


async def read_order(http: httpx.AsyncClient, token: str, order_id: str) -> dict[str, Any]:
    answer = await http.get(f"/api/v1/payments/orders/{order_id}", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["order"])


async def order_in(
    http: httpx.AsyncClient, token: str, order_id: str, *states: str, timeout: float = WAIT
) -> dict[str, Any]:
    """The order once it reached one of `states`."""

    async def reached() -> dict[str, Any] | None:
        current = await read_order(http, token, order_id)
        return current if current["state"] in states else None

    return await until(reached, f"order {order_id} reaching {'/'.join(states)}", timeout)


async def sales(http: httpx.AsyncClient, code: str, token: str | None = None) -> dict[str, Any]:
    answer = await http.get(f"/api/v1/rooms/{code}/sales", headers=bearer(token) if token is not None else {})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def stripe_objects(fake: FakeStripe, collection: str, **match: Any) -> list[dict[str, Any]]:
    """The fake's objects of a collection whose fields have the given values."""
    found = await control(fake, "objects", collection)
    return [obj for obj in found if all(obj.get(name) == value for name, value in match.items())]


async def webhook_event(fake: FakeStripe, event_type: str, object_id: str) -> dict[str, Any]:
    """The event of this type about this object (a PaymentIntent, a charge…), once Stripe made it."""

    async def made() -> dict[str, Any] | None:
        for event in await control(fake, "events", event_type):
            if event["data"]["object"]["id"] == object_id:
                return dict(event)
        return None

    return await until(made, f"Stripe's {event_type} of {object_id}")


# --- what clients show ------------------------------------------------------------------------------


@dataclass
class MoneyView:
    """What a client shows of a room's paid pins and tips, from frames or from history."""

    seqs: set[int] = field(default_factory=set)
    pins: list[dict[str, Any]] = field(default_factory=list)
    pins_state_seq: int = 0
    tips: dict[int, tuple[str, int, str]] = field(default_factory=dict)
    # The seqs of the paid_pin (granted or extended) and tip entries this client was given.
    pin_entries: list[int] = field(default_factory=list)
    tip_entries: list[int] = field(default_factory=list)

    def apply(self, frame: Frame) -> None:
        kind = frame["type"]
        if kind not in ENTRY_FRAMES:
            return
        self.seqs.add(frame["seq"])
        if kind == "paid_pin":
            self.pin_entries.append(frame["seq"])
        if kind in ("paid_pin", "paid_pin_removed") and frame["paid_pins_state_seq"] > self.pins_state_seq:
            self.pins, self.pins_state_seq = frame["paid_pins"], frame["paid_pins_state_seq"]
        elif kind == "tip":
            self.tip_entries.append(frame["seq"])
            self.tip(frame)

    def tip(self, item: dict[str, Any]) -> None:
        self.tips[item["seq"]] = (
            item["sender"]["username"],
            item["tip"]["amount_cents"],
            item["tip"]["note"],
        )

    def pinned(self) -> list[tuple[str, int, int, str, str]]:
        """(id, message seq, amount, buyer, expires_at) of the live paid pins, top first."""
        return [
            (pin["id"], pin["target_seq"], pin["amount_cents"], pin["username"], pin["expires_at"])
            for pin in self.pins
        ]

    def shown(self) -> tuple[list[tuple[str, int, int, str, str]], dict[int, tuple[str, int, str]]]:
        return self.pinned(), dict(sorted(self.tips.items()))


def view_of(frames: list[Frame]) -> MoneyView:
    view = MoneyView()
    for frame in frames:
        view.apply(frame)
    return view


async def fresh_view(http: httpx.AsyncClient, code: str, token: str) -> tuple[MoneyView, int]:
    """A client reading the whole history now, page by page: the view and the room's last seq."""
    view = MoneyView()
    before: int | None = None
    last = 0
    while True:
        params: dict[str, int] = {"limit": 50} | ({"before_seq": before} if before else {})
        answer = await http.get(f"/api/v1/rooms/{code}/messages", params=params, headers=bearer(token))
        assert answer.status_code == 200, answer.text
        page = answer.json()
        if before is None:
            last = page["last_seq"]
            view.pins, view.pins_state_seq = page["board"]["paid_pins"], page["board"]["paid_pins_state_seq"]
        for item in page["messages"]:
            if item["kind"] == "tip":
                view.tip_entries.append(item["seq"])
                view.tip(item)
        view.seqs |= set(range(page["low_seq"], (before or last + 1)))
        if not page["has_more"]:
            return view, last
        before = page["low_seq"]


def reached(seq: int) -> Callable[[Frame], bool]:
    return lambda frame: frame["type"] in ENTRY_FRAMES and frame["seq"] >= seq


@dataclass
class Audience:
    """Two people watching a room: `live` keeps a socket open throughout; `away` closes theirs at
    `leave()` (holding what it had) and comes back at `views()` resuming after it."""

    stack: Stack
    http: httpx.AsyncClient
    code: str
    live: Person
    away: Person
    live_socket: ChatSocket
    away_socket: ChatSocket
    away_top: int = 0

    @classmethod
    async def gather(cls, stack: Stack, http: httpx.AsyncClient, code: str) -> Audience:
        live = await enter(http, code, "LiveLena")
        away = await enter(http, code, "AwayArlo")
        live_socket = await ChatSocket.open(stack.ws_url, code, live.token)
        away_socket = await ChatSocket.open(stack.ws_url, code, away.token)
        return cls(stack, http, code, live, away, live_socket, away_socket)

    async def leave(self) -> None:
        """`away` leaves with everything up to the room's last seq now."""
        _, last = await fresh_view(self.http, self.code, self.away.token)
        if last:
            await self.away_socket.wait_for(reached(last))
        self.away_top = last
        await self.away_socket.close()

    async def views(self) -> tuple[MoneyView, MoneyView, MoneyView]:
        """(live, resumed, fresh) once each reached the room's last seq; they must show the same."""
        fresh, last = await fresh_view(self.http, self.code, self.away.token)
        await self.live_socket.wait_for(reached(last))
        if not self.away_socket.closed:
            await self.leave()
        resumed_socket = await ChatSocket.open(
            self.stack.ws_url, self.code, self.away.token, after_seq=self.away_top
        )
        try:
            if last > self.away_top:
                await resumed_socket.wait_for(reached(last))
        finally:
            await resumed_socket.close()
        live = view_of(self.live_socket.frames)
        resumed = view_of(self.away_socket.frames + resumed_socket.frames)
        assert live.shown() == fresh.shown(), "the live client and history disagree"
        assert resumed.shown() == fresh.shown(), "the resumed client and history disagree"
        assert fresh.seqs == set(range(1, last + 1)), "history skipped a seq"
        assert set(range(self.away_top + 1, last + 1)) <= resumed.seqs, "the resume skipped a seq"
        return live, resumed, fresh

    async def close(self) -> None:
        for socket in (self.live_socket, self.away_socket):
            await socket.close()


@contextlib.asynccontextmanager
async def audience(stack: Stack, http: httpx.AsyncClient, code: str) -> AsyncIterator[Audience]:
    watching = await Audience.gather(stack, http, code)
    try:
        yield watching
    finally:
        await watching.close()

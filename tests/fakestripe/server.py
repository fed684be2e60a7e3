"""Running the fake: `FakeStripeServer` serves it from a thread of the current process (a real
socket on 127.0.0.1, so other processes reach it too); `python -m tests.fakestripe` runs it as a
process of its own. `FakeStripe` is one platform on a running fake: its keys, its control client, a
configured `stripe.StripeClient`, and the environment a payments process needs."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

import httpx
import stripe
import uvicorn

from tests.fakestripe.app import FakeStripeApp
from tests.fakestripe.client import FakeStripeControl
from tests.fakestripe.store import Store
from tests.fakestripe.webhooks import Deliverer

# Seconds before each retry of a failed webhook delivery (Stripe's spread over three days, shrunk).
DEFAULT_RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
DEFAULT_DELIVERY_TIMEOUT = 10.0


@dataclass
class FakeStripe:
    """One platform (a Stripe account with its own keys and objects) on a running fake."""

    url: str
    account_id: str
    secret_key: str
    publishable_key: str
    webhook_secret: str
    control: FakeStripeControl

    def client(self, **options: object) -> stripe.StripeClient:
        """The official client, talking to the fake."""
        return stripe.StripeClient(self.secret_key, base_addresses={"api": self.url}, **options)  # type: ignore[arg-type]

    def env(self) -> dict[str, str]:
        """The payments service's Stripe settings for this platform."""
        return {
            "STRIPE_API_BASE": self.url,
            "STRIPE_SECRET_KEY": self.secret_key,
            "STRIPE_PUBLISHABLE_KEY": self.publishable_key,
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
        }

    def onboarded_account(self, email: str = "host@example.com") -> str:
        """A connected Express account that finished onboarding (can receive destination charges)."""
        account = self.client().v1.accounts.create(
            params={
                "type": "express",
                "country": "US",
                "email": email,
                "capabilities": {"card_payments": {"requested": True}, "transfers": {"requested": True}},
            }
        )
        self.control.complete_onboarding(account.id)
        return account.id

    def close(self) -> None:
        self.control.close()


def new_platform(
    url: str,
    *,
    secret_key: str | None = None,
    publishable_key: str | None = None,
    webhook_secret: str | None = None,
) -> FakeStripe:
    """A fresh platform on the fake at `url` (keys are generated unless given)."""
    body = {
        name: value
        for name, value in (
            ("secret_key", secret_key),
            ("publishable_key", publishable_key),
            ("webhook_secret", webhook_secret),
        )
        if value is not None
    }
    response = httpx.post(f"{url}/_fake/platforms", json=body, timeout=10)
    response.raise_for_status()
    return _handle(url, response.json())


def attach(url: str, secret_key: str) -> FakeStripe:
    """The platform owning `secret_key` on the fake at `url` (one started as a process, say)."""
    control = FakeStripeControl(url, secret_key)
    return _handle(url, control.platform(), control)


def _handle(url: str, info: dict[str, str], control: FakeStripeControl | None = None) -> FakeStripe:
    return FakeStripe(
        url=url,
        account_id=info["account_id"],
        secret_key=info["secret_key"],
        publishable_key=info["publishable_key"],
        webhook_secret=info["webhook_secret"],
        control=control or FakeStripeControl(url, info["secret_key"]),
    )


class FakeStripeServer:
    """The fake Stripe API on 127.0.0.1, served by uvicorn from a background thread."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        retry_delays: Iterable[float] = DEFAULT_RETRY_DELAYS,
        delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT,
    ) -> None:
        self.store = Store()
        application = FakeStripeApp(self.store, Deliverer(retry_delays, delivery_timeout)).build()
        config = uvicorn.Config(application, log_level="warning", access_log=False, lifespan="on")
        self._server = uvicorn.Server(config)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host = host
        self.port = int(self._socket.getsockname()[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="fake-stripe", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake Stripe API did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self._socket.close()

    def new_platform(
        self,
        *,
        secret_key: str | None = None,
        publishable_key: str | None = None,
        webhook_secret: str | None = None,
    ) -> FakeStripe:
        return new_platform(
            self.url, secret_key=secret_key, publishable_key=publishable_key, webhook_secret=webhook_secret
        )

    def __enter__(self) -> FakeStripeServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

"""pytest fixtures for the fake Stripe API (exposed to every tier by tests/conftest.py).

- `fake_stripe_server` (session): one fake per test session, in a thread, on a free port.
- `fake_stripe` (function): a fresh platform on it for each test — new keys, so nothing of another
  test is seen (objects, events, idempotency keys, webhook endpoints, chaos settings).
- `webhook_receiver` (function): a `WebhookReceiver` on a free port.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakestripe.receiver import WebhookReceiver
from tests.fakestripe.server import FakeStripe, FakeStripeServer


@pytest.fixture(scope="session")
def fake_stripe_server() -> Iterator[FakeStripeServer]:
    with FakeStripeServer() as server:
        yield server


@pytest.fixture
def fake_stripe(fake_stripe_server: FakeStripeServer) -> Iterator[FakeStripe]:
    platform = fake_stripe_server.new_platform()
    yield platform
    platform.close()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver

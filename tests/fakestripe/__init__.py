"""A fake of the Stripe API for tests (documentation to come)."""

from tests.fakestripe.client import FakeStripeControl, FakeStripeError
from tests.fakestripe.receiver import WebhookReceiver
from tests.fakestripe.server import FakeStripe, FakeStripeServer, attach, new_platform

__all__ = [
    "FakeStripe",
    "FakeStripeControl",
    "FakeStripeError",
    "FakeStripeServer",
    "WebhookReceiver",
    "attach",
    "new_platform",
]

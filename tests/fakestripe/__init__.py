"""A fake of the Stripe API, built for ChatPop's tests: the official `stripe` library talks to it unchanged.

Stripe cannot be reached from the machines the tests run on, so payments are tested against this fake,
a real HTTP server on 127.0.0.1 (uvicorn + Starlette, in a thread or in a process of its own).

Starting it
-----------
- In tests: the fixtures from `tests/fakestripe/fixtures.py` (registered in tests/conftest.py).
  `fake_stripe_server` is one server per test session; `fake_stripe` is a fresh *platform* on it for
  each test. A platform is one Stripe account with its own keys; it sees only its own objects,
  events, idempotency keys, webhook endpoints and chaos settings, so tests never see each other's.
  `webhook_receiver` is a small HTTP server that records the webhooks it gets.
- In code: `with FakeStripeServer() as server: platform = server.new_platform()`; keys may be fixed:
  `server.new_platform(secret_key="sk_test_…", publishable_key="pk_test_…", webhook_secret="whsec_…")`.
- As a process: `python -m tests.fakestripe --port N --secret-key sk_test_… --publishable-key pk_test_…
  --webhook-secret whsec_… [--retry-delays 0.25,0.5,1]` (from the repository root); it prints the
  platform as one JSON line and is ready when GET /_fake/health answers 200. `attach(url, secret_key)`
  gives the `FakeStripe` of a platform on a fake running elsewhere.

`FakeStripe` (what the fixture yields): `.url`, `.account_id`, `.secret_key`, `.publishable_key`,
`.webhook_secret`, `.control` (`FakeStripeControl`), `.client(**options)` (a `stripe.StripeClient`
with `base_addresses={"api": url}`), `.env()` (STRIPE_API_BASE, STRIPE_SECRET_KEY,
STRIPE_PUBLISHABLE_KEY, STRIPE_WEBHOOK_SECRET for the payments process), `.onboarded_account()`.

Pointing the payments service at it: start payments with `platform.env()` in its environment, then
register the webhook endpoint once the edge is up:
`platform.control.add_webhook_endpoint(f"{edge}/api/v1/payments/stripe/webhook")` (signed with
`platform.webhook_secret` unless another `secret` is given). Events about connected accounts
(`account.updated`) go, as at Stripe, only to Connect endpoints: add a second endpoint with
`connect=True` (the control API lets it share the same secret), and list them with a
`Stripe-Account: acct_…` header.

The Stripe API (/v1)
--------------------
Auth by Bearer or basic with a secret key (a wrong or missing key: 401 in Stripe's shape); a
publishable key reaches only what Stripe.js calls (retrieve and confirm a PaymentIntent with its
`client_secret`). Form bodies in Stripe's bracket notation (`metadata[k]`, `transfer_data[destination]`,
`expand[]` and `expand[0]`); unknown parameters are refused as Stripe refuses them. Errors are
`{"error": {"type", "code", "message", "param", "decline_code", …}}`; every answer has `Request-Id`.
Every POST may carry `Idempotency-Key` (the library sends one always): the same key (per API key)
with the same parameters replays the first answer, declines included, with `Idempotent-Replayed:
true`; other parameters or another endpoint answer 400 `idempotency_error`.
Lists are newest first with `has_more`, `url`, `limit`, `starting_after`, `ending_before` and
`created` filters; `expand[]` works on any field holding an id (`latest_charge`, `data.charge`).

- PaymentIntents: create (amount, currency, metadata, description, application_fee_amount,
  transfer_data[destination] — an onboarded connected account —, automatic_payment_methods,
  payment_method_types, payment_method, confirm, receipt_email, transfer_group), retrieve, list,
  confirm, cancel. Test cards: pm_card_visa, pm_card_mastercard, pm_card_amex, pm_card_visa_debit
  succeed; pm_card_chargeDeclined and pm_card_visa_chargeDeclined (generic_decline),
  pm_card_chargeDeclinedInsufficientFunds, …Fraudulent, …LostCard, …ExpiredCard, …IncorrectCvc decline
  with a 402 card_error; pm_card_createDispute succeeds, then is disputed. A success makes a charge
  (`latest_charge`) and, for a destination charge, an application fee and a transfer of amount - fee.
- Charges, PaymentMethods, Transfers (+ reversals), ApplicationFees, Disputes: retrieve and list.
- Refunds: create (payment_intent or charge, amount = all that is left by default, reason, metadata,
  reverse_transfer, refund_application_fee — both in proportion, the rest on the last refund),
  retrieve, update (metadata), list. More than is left: 400 `amount_too_large`; nothing left:
  `charge_already_refunded`; a disputed charge: `charge_disputed`.
- Connect: accounts create (type express, country, email, capabilities, metadata, …), retrieve,
  update, list; `GET /v1/account`; account_links create (a URL on the fake,
  `/connect/onboarding/<acct>?link=…`, whose page finishes onboarding and redirects to return_url;
  a used or expired link redirects to refresh_url).
- Events: retrieve and list (type, with `*` wildcards, types[], created, paging). Every change
  records one: payment_intent.created/succeeded/payment_failed/canceled, charge.succeeded/failed/
  refunded, charge.dispute.created, refund.created/updated/failed, transfer.created/reversed,
  application_fee.created/refunded, account.updated (with `previous_attributes` where Stripe has it).
- Webhook endpoints: create (returns the `secret`), retrieve, list, update (url, enabled_events,
  disabled), delete.

Webhooks (webhooks.py): each event is POSTed as JSON to every subscribed endpoint with
`Stripe-Signature: t=…,v1=HMAC-SHA256(secret, "t.payload")`, which `stripe.Webhook.construct_event`
accepts; non-2xx answers and connection errors are retried after each of the retry delays (default
0.25 … 8 s, settable per platform), every attempt recorded.

The control API (/_fake, `FakeStripeControl`)
----------------------------------------------
Acting: `pay(intent, card)` as the buyer would with Stripe.js, `create_dispute`, `complete_onboarding`,
`set_refunds_pending` + `settle_refund`, `advance_clock` (later `created` times, for filters).
Webhooks: `add_webhook_endpoint(url, events, secret=, connect=)`, `set_webhook_secret`, `chaos(...)`
per endpoint or for all (duplicates, delay, drop_next, drop_types, hold + hold_order/seed,
signature = valid/stale/future/wrong_secret), `calm`, `pause`/`resume`, `release_held`,
`replay(event, endpoint=, signature=)`, `wait_idle`, `webhook_status`, `deliveries(...)`.
Looking: `events`, `payment_intents`, `charges`, `refunds`, `transfers`, `transfer_reversals`,
`application_fees`, `accounts`, `disputes`, `objects(name)`, `object(id)`, `requests(...)` (every API
request with its params, idempotency key, status and whether it was replayed).
A flaky Stripe: `fail_next(count, status=, method=, path=, after=, delay=, should_retry=)`.
The control client is synchronous; from a test whose event loop also serves the webhook receiver,
call it through `asyncio.to_thread` so deliveries can be answered meanwhile.

Not modelled: customers, saved cards, 3-D Secure and other next actions, manual capture, payouts and
balances, Stripe-Account on other endpoints, the `data` of events rendered for other API versions.
"""

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

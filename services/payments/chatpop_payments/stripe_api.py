"""The Stripe API as payments uses it, through the official library's async methods (httpx).

Every POST carries our own idempotency key, derived from what it is for (`order:<id>:payment_intent`,
`order:<id>:refund`, …), so a retry after a timeout or a crash reaches the same Stripe object. The
library's objects are turned into plain dicts at this boundary; the rest of payments reads dicts,
whether they came from Stripe's answers, its webhooks, its list of events or the test mode.

Errors come out as two kinds: `StripeUnavailable` (network, rate limit, Stripe's own failures:
retrying later may succeed) and `StripeRefused` (Stripe said no to this request: retrying the same
request will not help).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import stripe

log = logging.getLogger(__name__)

# Seconds one HTTP request to Stripe may take; the library retries network failures itself (with
# the same idempotency key) this many times before giving up.
REQUEST_TIMEOUT = 20.0
NETWORK_RETRIES = 2


class StripeUnavailable(Exception):
    """Stripe could not be reached or failed on its side; the same request may succeed later."""


class StripeRefused(Exception):
    """Stripe refused the request (invalid, not allowed, already done); `code` is Stripe's."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def plain(obj: Any) -> dict[str, Any]:
    """A Stripe object (or a dict) as a plain, JSON-ready dict."""
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict(recursive=True, for_json=True)
    return dict(obj)


def _translate(exc: stripe.StripeError) -> Exception:
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError):
        return StripeUnavailable(f"{type(exc).__name__}: {exc.user_message or exc}")
    status = exc.http_status or 0
    if status >= 500 or status in (409, 429):
        # 409: a request with the same idempotency key is still in flight at Stripe.
        return StripeUnavailable(f"{type(exc).__name__} ({status}): {exc.user_message or exc}")
    return StripeRefused(str(exc.user_message or exc), str(exc.code or ""))


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    id: str
    client_secret: str
    status: str


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    status: str


class StripeApi:
    """One StripeClient for the process; `close()` at shutdown."""

    def __init__(self, secret_key: str, api_base: str) -> None:
        self._http = stripe.HTTPXClient(timeout=REQUEST_TIMEOUT)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base, "connect": api_base, "files": api_base},
            http_client=self._http,
            max_network_retries=NETWORK_RETRIES,
        )

    async def close(self) -> None:
        await self._http.close_async()

    async def create_payment_intent(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        application_fee: int,
        destination: str,
        metadata: Mapping[str, str],
        description: str,
    ) -> PaymentIntent:
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "automatic_payment_methods": {"enabled": True},
            "transfer_data": {"destination": destination},
            "metadata": dict(metadata),
            "description": description,
        }
        if application_fee:
            params["application_fee_amount"] = application_fee
        try:
            intent = await self._client.v1.payment_intents.create_async(
                cast(Any, params), options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return PaymentIntent(id=intent.id, client_secret=intent.client_secret or "", status=intent.status)

    async def retrieve_payment_intent(self, intent_id: str) -> PaymentIntent:
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(intent_id)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return PaymentIntent(id=intent.id, client_secret=intent.client_secret or "", status=intent.status)

    async def create_refund(
        self, *, idempotency_key: str, payment_intent: str, metadata: Mapping[str, str]
    ) -> Refund:
        """A full refund that takes the host's share back from their account and gives the platform's
        fee back too (a destination charge: the buyer gets everything they paid)."""
        params: dict[str, Any] = {
            "payment_intent": payment_intent,
            "reverse_transfer": True,
            "refund_application_fee": True,
            "metadata": dict(metadata),
        }
        try:
            refund = await self._client.v1.refunds.create_async(
                cast(Any, params), options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return Refund(id=refund.id, status=str(refund.status or ""))

    async def create_account(self, *, idempotency_key: str, metadata: Mapping[str, str]) -> dict[str, Any]:
        """A Connect Express account that can take card payments and receive transfers."""
        params: dict[str, Any] = {
            "type": "express",
            "capabilities": {"card_payments": {"requested": True}, "transfers": {"requested": True}},
            "metadata": dict(metadata),
        }
        try:
            account = await self._client.v1.accounts.create_async(
                cast(Any, params), options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return plain(account)

    async def retrieve_account(self, account_id: str) -> dict[str, Any]:
        try:
            account = await self._client.v1.accounts.retrieve_async(account_id)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return plain(account)

    async def create_account_link(
        self, *, idempotency_key: str, account_id: str, return_url: str, refresh_url: str
    ) -> str:
        params: dict[str, Any] = {
            "account": account_id,
            "return_url": return_url,
            "refresh_url": refresh_url,
            "type": "account_onboarding",
        }
        try:
            link = await self._client.v1.account_links.create_async(
                cast(Any, params), options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return str(link.url)

    async def events_since(self, created_gte: int, types: Sequence[str]) -> AsyncIterator[dict[str, Any]]:
        """Every event of `types` created at or after `created_gte` (Unix seconds), newest first, all
        pages."""
        params: dict[str, Any] = {"created": {"gte": created_gte}, "types": list(types), "limit": 100}
        try:
            page = await self._client.v1.events.list_async(cast(Any, params))
            async for event in page.auto_paging_iter():
                yield plain(event)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc

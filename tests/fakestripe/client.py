"""`FakeStripeControl`: the control API from Python, for one platform (its secret key).

Synchronous on purpose, so any test can call it; from inside an event loop that also serves a webhook
receiver, call it through `asyncio.to_thread` so the loop keeps answering deliveries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx


class FakeStripeError(RuntimeError):
    """The control API refused a call; `status` and `error` are its answer."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"{status}: {error.get('message', error)}")
        self.status = status
        self.error = error


class FakeStripeControl:
    def __init__(self, url: str, secret_key: str, timeout: float = 30.0) -> None:
        self.url = url
        self._http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {secret_key}"}, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def _call(
        self, verb: str, path: str, body: dict[str, Any] | None = None, query: dict[str, Any] | None = None
    ) -> Any:
        params = {name: value for name, value in (query or {}).items() if value is not None}
        response = self._http.request(verb, path, json=body, params=params)
        answer = response.json()
        if response.status_code >= 400:
            raise FakeStripeError(response.status_code, answer.get("error", answer))
        return answer

    @staticmethod
    def _given(**values: Any) -> dict[str, Any]:
        return {name: value for name, value in values.items() if value is not None}

    # -- the platform --------------------------------------------------------------------------------

    def platform(self) -> dict[str, Any]:
        """Keys, account id, the default webhook secret and settings of this platform."""
        return self._call("GET", "/_fake/platform")  # type: ignore[no-any-return]

    def advance_clock(self, seconds: float) -> None:
        """Objects and events made from now on are `seconds` later (signatures keep real time)."""
        self._call("POST", "/_fake/settings", {"advance_clock": seconds})

    def set_retry_delays(self, delays: Iterable[float]) -> None:
        """Seconds before each retry of a failed webhook delivery; after the last, delivery gives up."""
        self._call("POST", "/_fake/settings", {"retry_delays": list(delays)})

    def set_refunds_pending(self, pending: bool = True) -> None:
        """New refunds stay `pending` until `settle_refund` (default: they succeed at once)."""
        self._call("POST", "/_fake/settings", {"refunds_pending": pending})

    # -- acting as the buyer, the host, the card network ---------------------------------------------

    def pay(self, payment_intent: str, payment_method: str = "pm_card_visa") -> dict[str, Any]:
        """Confirm the intent with a test card, as the buyer does with Stripe.js. Returns
        `{"payment_intent": …, "error": None | {type, code, decline_code, message, …}}`."""
        return self._call(  # type: ignore[no-any-return]
            "POST", f"/_fake/payment_intents/{payment_intent}/pay", {"payment_method": payment_method}
        )

    def create_dispute(
        self,
        *,
        payment_intent: str | None = None,
        charge: str | None = None,
        reason: str = "fraudulent",
        amount: int | None = None,
    ) -> dict[str, Any]:
        """The cardholder disputes the charge (of the intent): `charge.dispute.created`."""
        body = self._given(payment_intent=payment_intent, charge=charge, reason=reason, amount=amount)
        return self._call("POST", "/_fake/disputes", body)  # type: ignore[no-any-return]

    def complete_onboarding(
        self,
        account: str,
        *,
        charges_enabled: bool = True,
        payouts_enabled: bool = True,
        details_submitted: bool = True,
    ) -> dict[str, Any]:
        """The host finishes Stripe's onboarding for the connected account: `account.updated`."""
        body = {
            "charges_enabled": charges_enabled,
            "payouts_enabled": payouts_enabled,
            "details_submitted": details_submitted,
        }
        return self._call("POST", f"/_fake/accounts/{account}/onboarding", body)  # type: ignore[no-any-return]

    def settle_refund(self, refund: str, status: str = "succeeded") -> dict[str, Any]:
        """A pending refund succeeds or fails: `refund.updated` (and `charge.refunded` / `refund.failed`)."""
        return self._call("POST", f"/_fake/refunds/{refund}/settle", {"status": status})  # type: ignore[no-any-return]

    # -- webhooks ------------------------------------------------------------------------------------

    def add_webhook_endpoint(
        self,
        url: str,
        enabled_events: Iterable[str] = ("*",),
        *,
        secret: str | None = None,
        connect: bool = False,
    ) -> dict[str, Any]:
        """An endpoint signed with `secret` (default: the platform's `webhook_secret`, known before
        the endpoint exists, so a service can be started with it). `connect=True` receives the events
        of connected accounts (account.updated) instead of the platform's own."""
        body = self._given(url=url, enabled_events=list(enabled_events), secret=secret, connect=connect)
        return self._call("POST", "/_fake/webhook_endpoints", body)  # type: ignore[no-any-return]

    def set_webhook_secret(self, endpoint: str, secret: str) -> dict[str, Any]:
        return self._call("POST", f"/_fake/webhook_endpoints/{endpoint}", {"secret": secret})  # type: ignore[no-any-return]

    def chaos(
        self,
        endpoint: str | None = None,
        *,
        duplicates: int | None = None,
        delay: float | None = None,
        drop_next: int | None = None,
        drop_types: Iterable[str] | None = None,
        hold: int | None = None,
        hold_order: str | None = None,
        seed: int | None = None,
        signature: str | None = None,
        signature_skew: int | None = None,
    ) -> dict[str, Any]:
        """Change how deliveries go to one endpoint, or (no endpoint) to every endpoint of the platform
        and those added later. Settings left out keep their value. `duplicates`: extra copies of each
        delivery; `delay`: seconds before each; `drop_next`: the next N events are lost for good;
        `drop_types`: events of these types are lost for good; `hold`: keep the next N events, then
        send them in `hold_order` ("reversed" or "shuffled" with `seed`); `signature`: "valid",
        "stale" / "future" (timestamp `signature_skew` s off, default 600) or "wrong_secret"."""
        body = self._given(
            endpoint=endpoint,
            duplicates=duplicates,
            delay=delay,
            drop_next=drop_next,
            drop_types=None if drop_types is None else list(drop_types),
            hold=hold,
            hold_order=hold_order,
            seed=seed,
            signature=signature,
            signature_skew=signature_skew,
        )
        return self._call("POST", "/_fake/webhooks/chaos", body)  # type: ignore[no-any-return]

    def calm(self, endpoint: str | None = None) -> None:
        """Back to plain delivery (no chaos) for one endpoint or all."""
        self._call("POST", "/_fake/webhooks/calm", self._given(endpoint=endpoint))

    def pause(self, endpoint: str | None = None) -> None:
        self._call("POST", "/_fake/webhooks/pause", self._given(endpoint=endpoint))

    def resume(self, endpoint: str | None = None) -> None:
        self._call("POST", "/_fake/webhooks/resume", self._given(endpoint=endpoint))

    def release_held(self, endpoint: str | None = None) -> int:
        """Send held events now (in the hold order) without waiting for the batch to fill."""
        return int(self._call("POST", "/_fake/webhooks/release", self._given(endpoint=endpoint))["released"])

    def replay(self, event: str, endpoint: str | None = None, *, signature: str | None = None) -> int:
        """Deliver a past event again (same id, fresh signature) to one endpoint or to every endpoint
        subscribed to it; returns how many deliveries were queued."""
        body = self._given(endpoint=endpoint, signature=signature)
        return int(self._call("POST", f"/_fake/events/{event}/replay", body)["queued"])

    def webhook_status(self) -> dict[str, Any]:
        return self._call("GET", "/_fake/webhooks")  # type: ignore[no-any-return]

    def wait_idle(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until nothing is being sent, queued (unless paused) or waiting for a retry."""
        return self._call("POST", "/_fake/webhooks/wait_idle", {"timeout": timeout})  # type: ignore[no-any-return]

    def deliveries(
        self,
        *,
        event: str | None = None,
        endpoint: str | None = None,
        type: str | None = None,
        outcome: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every delivery attempt, oldest first: event, type, endpoint, kind (event / duplicate /
        replay), attempt, outcome (succeeded / failed / dropped), status, error, signature, timestamp."""
        return self._call(  # type: ignore[no-any-return]
            "GET",
            "/_fake/deliveries",
            None,
            {"event": event, "endpoint": endpoint, "type": type, "outcome": outcome},
        )

    # -- looking ------------------------------------------------------------------------------------

    def objects(self, collection: str) -> list[dict[str, Any]]:
        """All objects of a collection, oldest first (events include connected accounts' ones)."""
        return self._call("GET", f"/_fake/objects/{collection}")  # type: ignore[no-any-return]

    def object(self, object_id: str) -> dict[str, Any]:
        return self._call("GET", f"/_fake/object/{object_id}")  # type: ignore[no-any-return]

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        return [event for event in self.objects("events") if type is None or event["type"] == type]

    def payment_intents(self) -> list[dict[str, Any]]:
        return self.objects("payment_intents")

    def charges(self) -> list[dict[str, Any]]:
        return self.objects("charges")

    def refunds(self) -> list[dict[str, Any]]:
        return self.objects("refunds")

    def transfers(self) -> list[dict[str, Any]]:
        return self.objects("transfers")

    def transfer_reversals(self) -> list[dict[str, Any]]:
        return self.objects("transfer_reversals")

    def application_fees(self) -> list[dict[str, Any]]:
        return self.objects("application_fees")

    def accounts(self) -> list[dict[str, Any]]:
        return self.objects("accounts")

    def disputes(self) -> list[dict[str, Any]]:
        return self.objects("disputes")

    def requests(self, *, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        """The Stripe API requests this platform's keys made: method, path, params, idempotency_key,
        status, replayed."""
        return self._call("GET", "/_fake/requests", None, {"method": method, "path": path})  # type: ignore[no-any-return]

    # -- a flaky Stripe -----------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        method: str | None = None,
        path: str | None = None,
        after: bool = False,
        delay: float = 0.0,
        should_retry: bool | None = None,
    ) -> None:
        """The next `count` API requests matching `method` and `path` (a prefix) answer `status`
        (Stripe's api_error shape) after `delay` seconds. With `after`, each is carried out first
        (and kept for its idempotency key) and only the answer is lost. `should_retry` sets
        Stripe-Should-Retry, which the stripe library obeys for its own retries."""
        body = self._given(
            count=count,
            status=status,
            method=method,
            path=path,
            after=after,
            delay=delay,
            should_retry=should_retry,
        )
        self._call("POST", "/_fake/faults", body)

    def clear_faults(self) -> None:
        self._call("DELETE", "/_fake/faults")

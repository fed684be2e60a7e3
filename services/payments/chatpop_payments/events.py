"""The one handler of payment events, whether Stripe's webhook brought them, reconciliation found
them in Stripe's list, or the test mode made them.

Each event is handled in ONE transaction: its id is recorded (a second arrival of the same id is a
duplicate and changes nothing), then it is applied. Orders only move forward (chatpop_payments.states),
so events that arrive late or out of order are harmless: a move that no longer applies changes
nothing. Ledger rows, fulfilment and audit events are written in that same transaction, through the
outbox, so they exist exactly when the move does.

- payment_intent.succeeded: the order (found by its PaymentIntent, or by metadata.order_id, and
  checked against the PaymentIntent id, amount and currency) becomes paid; ledger: charge and fee;
  outbox: `fulfil`.
- payment_intent.payment_failed: the error is recorded for the buyer; the order stays awaiting
  payment (they may try another card).
- payment_intent.canceled: the order is cancelled (only before it was paid).
- charge.refunded, refund.created, refund.updated, charge.refund.updated (a full refund that
  succeeded): refunding becomes refunded; ledger: refund, fee refund, transfer reversal. A paid order
  refunded from Stripe's dashboard is moved through refunding (reason `admin`) on the way.
- account.updated: the payout account's flags, unless newer news was recorded already.
- charge.dispute.created: ledger: dispute; audit: `payment.dispute_created`.
Other types are recorded and ignored.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from chatpop_common import audit_events, outbox
from chatpop_payments import audit, ledger, orders, payouts
from chatpop_payments.metrics import EVENTS
from chatpop_payments.orders import REFUND_MESSAGES, Order, refund_sentence
from chatpop_payments.states import State

log = logging.getLogger(__name__)

FULFIL_TOPIC = "fulfil"
REFUND_TOPIC = "refund"

# The Stripe event types payments acts on (reconciliation lists exactly these).
TYPES = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "charge.refund.updated",
    "account.updated",
    "charge.dispute.created",
)
SOURCES = ("webhook", "reconcile", "test")
DECLINED = "Your card was declined."


class EventNotReady(Exception):
    """The event cannot be applied before another one that has not arrived yet; nothing was recorded."""


@dataclass(frozen=True, slots=True)
class Handled:
    event_id: str
    event_type: str
    duplicate: bool
    outcome: str
    order: Order | None = None


Applier = Callable[[asyncpg.Connection, Mapping[str, Any], int, str], Awaitable[tuple[str, Order | None]]]


def fulfil_message(order_id: uuid.UUID) -> tuple[bytes, str]:
    return json.dumps({"order_id": str(order_id)}).encode(), f"fulfil:{order_id}"


def refund_message(order_id: uuid.UUID) -> tuple[bytes, str]:
    return json.dumps({"order_id": str(order_id)}).encode(), f"refund:{order_id}"


async def start_refund(
    conn: asyncpg.Connection, order: Order, reason: str, message: str | None = None
) -> Order | None:
    """Move a paid or fulfilled order to refunding with its reason, and queue the refund itself
    (outbox `refund`) in the same transaction; None when the order is not refundable now."""
    moved = await orders.move(
        conn,
        order.id,
        State.REFUNDING,
        refund_reason=reason,
        refund_message=message if message is not None else refund_sentence(order.kind, reason),
    )
    if moved is not None:
        payload, key = refund_message(order.id)
        await outbox.add(conn, REFUND_TOPIC, payload, key)
    return moved


def _object(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    return obj if isinstance(obj, Mapping) else {}


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        # An expanded object in place of its id.
        value = value.get("id")
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class EventHandler:
    """Records and applies events; `on_commit` runs after a transaction that may have added outbox
    rows (it wakes the relay)."""

    def __init__(self, pool: asyncpg.Pool, *, on_commit: Callable[[], None] = lambda: None) -> None:
        self._pool = pool
        self._on_commit = on_commit
        self._appliers: dict[str, Applier] = {
            "payment_intent.succeeded": self._payment_succeeded,
            "payment_intent.payment_failed": self._payment_failed,
            "payment_intent.canceled": self._payment_canceled,
            "charge.refunded": self._charge_refunded,
            "refund.created": self._refund_updated,
            "refund.updated": self._refund_updated,
            "charge.refund.updated": self._refund_updated,
            "account.updated": self._account_updated,
            "charge.dispute.created": self._dispute_created,
        }

    def committed(self) -> None:
        """A transaction outside `handle` added outbox rows: deliver them now."""
        self._on_commit()

    async def handle(self, event: Mapping[str, Any], source: str) -> Handled:
        if source not in SOURCES:
            raise ValueError(f"unknown event source {source!r}")
        event_id = _text(event.get("id"))
        event_type = _text(event.get("type"))
        if not event_id or not event_type:
            raise ValueError("an event needs an id and a type")
        created = _int(event.get("created")) or int(time.time())
        apply = self._appliers.get(event_type)
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO stripe_events (id, type, created, payload, source, handled)"
                " VALUES ($1, $2, to_timestamp($3), $4::jsonb, $5, $6)"
                " ON CONFLICT (id) DO NOTHING RETURNING true",
                event_id,
                event_type,
                created,
                json.dumps(event, separators=(",", ":")),
                source,
                apply is not None,
            )
            if not inserted:
                EVENTS.labels(_type_label(event_type), "duplicate", source).inc()
                return Handled(event_id, event_type, duplicate=True, outcome="duplicate")
            if apply is None:
                outcome, order = "ignored", None
            else:
                outcome, order = await apply(conn, _object(event), created, source)
            await conn.execute("UPDATE stripe_events SET outcome = $2 WHERE id = $1", event_id, outcome)
        self._on_commit()
        EVENTS.labels(_type_label(event_type), outcome, source).inc()
        if outcome in ("mismatch", "late_payment", "refund_failed"):
            log.error(
                "payment event %s (%s) not applied: %s",
                event_id,
                event_type,
                outcome,
                extra={"event_id": event_id, "order_id": str(order.id) if order else ""},
            )
        return Handled(event_id, event_type, duplicate=False, outcome=outcome, order=order)

    async def complete_refund(self, order_id: uuid.UUID, refund_id: str) -> Order | None:
        """Stripe answered a refund request with `succeeded`: the order is refunded now."""
        async with self._pool.acquire() as conn, conn.transaction():
            order = await orders.lock(conn, order_id)
            if order is None:
                return None
            _outcome, moved = await self._complete_refund(conn, order, refund_id)
        return moved

    # --- finding the order ------------------------------------------------------------------------

    @staticmethod
    async def _find(
        conn: asyncpg.Connection, obj: Mapping[str, Any], intent_id: str, source: str
    ) -> Order | None:
        if intent_id and source != "test":
            order = await orders.lock_by_payment_intent(conn, intent_id)
            if order is not None:
                return order
        metadata = obj.get("metadata")
        raw = metadata.get("order_id") if isinstance(metadata, Mapping) else None
        try:
            order_id = uuid.UUID(str(raw))
        except ValueError:
            return None
        return await orders.lock(conn, order_id)

    @staticmethod
    def _same_payment(order: Order, intent_id: str, source: str) -> bool:
        """Whether the event's payment is this order's: test events for test orders only, Stripe's
        for Stripe orders whose PaymentIntent it is (or that never learned theirs)."""
        if source == "test":
            return order.test_mode
        if order.test_mode:
            return False
        return order.stripe_payment_intent_id in (None, intent_id)

    # --- payment intents --------------------------------------------------------------------------

    async def _payment_succeeded(
        self, conn: asyncpg.Connection, intent: Mapping[str, Any], created: int, source: str
    ) -> tuple[str, Order | None]:
        intent_id = _text(intent.get("id"))
        order = await self._find(conn, intent, intent_id, source)
        if order is None:
            return "unknown_order", None
        if (
            not intent_id
            or not self._same_payment(order, intent_id, source)
            or _int(intent.get("amount")) != order.amount_cents
            or _text(intent.get("currency")).lower() != order.currency
        ):
            return "mismatch", order
        if order.state in (State.FAILED, State.CANCELLED):
            # Stripe does not take money for a cancelled PaymentIntent; if it ever did, people must look.
            return "late_payment", order
        changes: dict[str, Any] = {"paid_at": datetime.now(UTC), "payment_error": ""}
        if source != "test":
            changes["stripe_payment_intent_id"] = intent_id
        moved = await orders.move(conn, order.id, State.PAID, **changes)
        if moved is None:
            return "already_paid", order
        await ledger.record_charge(conn, moved, intent_id)
        payload, key = fulfil_message(moved.id)
        await outbox.add(conn, FULFIL_TOPIC, payload, key)
        return "paid", moved

    async def _payment_failed(
        self, conn: asyncpg.Connection, intent: Mapping[str, Any], created: int, source: str
    ) -> tuple[str, Order | None]:
        intent_id = _text(intent.get("id"))
        order = await self._find(conn, intent, intent_id, source)
        if order is None:
            return "unknown_order", None
        if not intent_id or not self._same_payment(order, intent_id, source):
            return "mismatch", order
        error = intent.get("last_payment_error")
        message = _text(error.get("message")) if isinstance(error, Mapping) else ""
        recorded = await orders.record_payment_error(conn, order.id, message or DECLINED)
        return ("payment_error", recorded) if recorded else ("stale", order)

    async def _payment_canceled(
        self, conn: asyncpg.Connection, intent: Mapping[str, Any], created: int, source: str
    ) -> tuple[str, Order | None]:
        intent_id = _text(intent.get("id"))
        order = await self._find(conn, intent, intent_id, source)
        if order is None:
            return "unknown_order", None
        if not intent_id or not self._same_payment(order, intent_id, source):
            return "mismatch", order
        moved = await orders.move(conn, order.id, State.CANCELLED)
        return ("cancelled", moved) if moved else ("stale", order)

    # --- refunds ----------------------------------------------------------------------------------

    async def _complete_refund(
        self, conn: asyncpg.Connection, order: Order, refund_id: str
    ) -> tuple[str, Order | None]:
        if order.state == State.REFUNDED:
            return "already_refunded", order
        if order.state in (State.CREATED, State.AWAITING_PAYMENT):
            # The refund's news overtook the payment's: not recorded, so it is applied when it comes
            # again (Stripe retries a webhook answered with an error; reconciliation lists it again).
            raise EventNotReady(f"order {order.id} is refunded at Stripe but not yet paid here")
        if order.state in (State.PAID, State.FULFILLED):
            # Refunded at Stripe by the platform's people, not through ChatPop.
            moving = await orders.move(
                conn,
                order.id,
                State.REFUNDING,
                refund_reason="admin",
                refund_message=REFUND_MESSAGES["admin"],
            )
            if moving is None:
                return "stale", order
            order = moving
        moved = await orders.move(
            conn, order.id, State.REFUNDED, refunded_at=datetime.now(UTC), stripe_refund_id=refund_id
        )
        if moved is None:
            return "stale", order
        await ledger.record_refund(conn, moved, refund_id)
        return "refunded", moved

    async def _charge_refunded(
        self, conn: asyncpg.Connection, charge: Mapping[str, Any], created: int, source: str
    ) -> tuple[str, Order | None]:
        intent_id = _text(charge.get("payment_intent"))
        order = await self._find(conn, charge, intent_id, source)
        if order is None:
            return "unknown_order", None
        if not self._same_payment(order, intent_id, source) or (source != "test" and not intent_id):
            return "mismatch", order
        if charge.get("refunded") is not True:
            # ChatPop only refunds in full; a partial refund made elsewhere is recorded, not applied.
            return "partial_refund", order
        refunds = charge.get("refunds")
        data = refunds.get("data") if isinstance(refunds, Mapping) else None
        refund_id = _text(data[0].get("id")) if isinstance(data, list) and data else ""
        refund_id = refund_id or order.stripe_refund_id or _text(charge.get("id"))
        return await self._complete_refund(conn, order, refund_id)

    async def _refund_updated(
        self, conn: asyncpg.Connection, refund: Mapping[str, Any], created: int, source: str
    ) -> tuple[str, Order | None]:
        intent_id = _text(refund.get("payment_intent"))
        order = await self._find(conn, refund, intent_id, source)
        if order is None:
            return "unknown_order", None
        if not self._same_payment(order, intent_id, source) or (source != "test" and not intent_id):
            return "mismatch", order
        status = _text(refund.get("status"))
        if status in ("failed", "canceled"):
            return "refund_failed", order
        if status != "succeeded":
            return "refund_pending", order
        if _int(refund.get("amount")) != order.amount_cents:
            return "partial_refund", order
        return await self._complete_refund(conn, order, _text(refund.get("id")))

    # --- accounts and disputes --------------------------------------------------------------------

    async def _account_updated(
        self, conn: asyncpg.Connection, account: Mapping[str, Any], created: int, source: str
    ) -> tuple[str, Order | None]:
        outcome = await payouts.apply_account(conn, account, as_of=created, test_mode=source == "test")
        return outcome, None

    async def _dispute_created(
        self, conn: asyncpg.Connection, dispute: Mapping[str, Any], created: int, source: str
    ) -> tuple[str, Order | None]:
        intent_id = _text(dispute.get("payment_intent"))
        order = await self._find(conn, dispute, intent_id, source)
        dispute_id = _text(dispute.get("id"))
        if order is None or not dispute_id:
            return "unknown_order", order
        if not self._same_payment(order, intent_id, source):
            return "mismatch", order
        amount = _int(dispute.get("amount")) or order.amount_cents
        if await ledger.record_dispute(conn, order, amount, dispute_id):
            await audit_events.add(
                conn, audit.dispute_created(order, dispute_id, amount, _text(dispute.get("reason")))
            )
        return "dispute_recorded", order


def _type_label(event_type: str) -> str:
    return event_type if event_type in TYPES else "other"

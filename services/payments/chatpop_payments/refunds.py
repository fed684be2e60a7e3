"""Refunds: the outbox handler that asks Stripe for them, and an admin's refund of an order.

`refund` (written when an order moves to refunding, by a refusal at fulfilment or an admin): a full
Stripe refund with the key `order:<id>:refund`, the host's transfer reversed and the platform's fee
refunded. Stripe answering `succeeded` completes it at once; otherwise Stripe's refund event (webhook
or reconciliation) does. In test mode the refund completes through the same event handling, without
Stripe. The handler looks at the order's state first, so a delivery that comes again after the work
was done changes nothing.

RefundOrder (admins): a paid or fulfilled order moves to refunding (reason `admin`) with the audit
event `payment.refunded` in the same transaction; asking again changes nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

import asyncpg

from chatpop_common import audit_events, outbox
from chatpop_common.errors import FailedPrecondition, InvalidArgument, NotFound
from chatpop_payments import audit, orders
from chatpop_payments.events import EventHandler, start_refund
from chatpop_payments.fulfilment import order_id_of
from chatpop_payments.orders import Order
from chatpop_payments.states import State
from chatpop_payments.stripe_api import StripeApi, StripeRefused

log = logging.getLogger(__name__)

REASON_MAX = 500


def check_reason(value: str) -> str:
    reason = value.strip()
    if not 1 <= len(reason) <= REASON_MAX:
        raise InvalidArgument(f"Give a reason of 1 to {REASON_MAX} characters.", code="invalid_reason")
    return reason


async def admin_refund(
    pool: asyncpg.Pool, order_id: uuid.UUID, admin: str, reason: str
) -> tuple[Order, bool]:
    """(the order, whether this call started its refund)."""
    async with pool.acquire() as conn, conn.transaction():
        order = await orders.lock(conn, order_id)
        if order is None:
            raise NotFound("There is no such order.", code="order_not_found")
        if order.state in (State.REFUNDING, State.REFUNDED):
            return order, False
        moved = await start_refund(conn, order, "admin")
        if moved is None:
            raise FailedPrecondition("Only a paid order can be refunded.", code="not_refundable")
        await audit_events.add(conn, audit.refunded(moved, admin, reason))
    return moved, True


class Refunds:
    """The outbox handler of `refund`."""

    def __init__(self, pool: asyncpg.Pool, stripe: StripeApi | None, events: EventHandler) -> None:
        self._pool = pool
        self._stripe = stripe
        self._events = events

    async def __call__(self, messages: Sequence[outbox.Message]) -> None:
        for message in messages:
            await self.refund(order_id_of(message))

    async def refund(self, order_id: uuid.UUID) -> None:
        order = await orders.get(self._pool, order_id)
        if order is None:
            raise outbox.PermanentFailure(f"order {order_id} does not exist")
        if order.state != State.REFUNDING:
            return
        if order.test_mode:
            await self._events.handle(
                {
                    "id": f"evt_test_refund_{order.id.hex}",
                    "object": "event",
                    "type": "refund.updated",
                    "created": int(time.time()),
                    "livemode": False,
                    "data": {
                        "object": {
                            "id": f"re_test_{order.id.hex}",
                            "object": "refund",
                            "status": "succeeded",
                            "amount": order.amount_cents,
                            "currency": order.currency,
                            "payment_intent": "",
                            "metadata": {"order_id": str(order.id)},
                        }
                    },
                },
                "test",
            )
            return
        if self._stripe is None or not order.stripe_payment_intent_id:
            raise outbox.PermanentFailure(
                f"order {order.id} was paid through Stripe, which is not configured"
            )
        try:
            refund = await self._stripe.create_refund(
                idempotency_key=f"order:{order.id}:refund",
                payment_intent=order.stripe_payment_intent_id,
                metadata={"order_id": str(order.id), "reason": order.refund_reason},
            )
        except StripeRefused as exc:
            if exc.code == "charge_already_refunded":
                # Refunded already (by us earlier, or at Stripe): its event completes the order.
                log.info("order %s was refunded at Stripe already", order.id)
                return
            raise outbox.PermanentFailure(
                f"Stripe refused the refund of order {order.id}: {exc} ({exc.code})"
            ) from exc
        await orders.set_refund_id(self._pool, order.id, refund.id)
        if refund.status == "succeeded":
            await self._events.complete_refund(order.id, refund.id)
        elif refund.status in ("failed", "canceled"):
            raise outbox.PermanentFailure(f"Stripe's refund {refund.id} of order {order.id} {refund.status}")
        # pending / requires_action: Stripe's refund event completes it.

"""Refunds: the outbox handler that asks Stripe for them, and an admin's refund of an order.

`refund` (written when an order moves to refunding, by a refusal at fulfilment or an admin): a full
Stripe refund with the key `order:<id>:refund`, the host's transfer reversed and the platform's fee
refunded. Stripe answering `succeeded` completes it at once; otherwise Stripe's refund event (webhook
or reconciliation) does. In test mode the refund completes through the same event handling, without
Stripe. The handler looks at the order's state first, so a delivery that comes again after the work
was done changes nothing.

RefundOrder (admins): a paid or fulfilled order moves to refunding (reason `admin`) with the audit
event `payment.refunded` in the same transaction; asking again changes nothing.

RefundSeat (the room's host): the order of a Back Room seat that rooms no longer counts as held (the
host removed it with RemoveSeat, asking for a refund) moves to refunding (reason `seat_removed`) with
the audit event `payment.seat_refunded`; a seat still held is refused (`seat_held`), and asking again
changes nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

import asyncpg

from chatpop.rooms.v1 import rooms_pb2_grpc
from chatpop_common import audit_events, outbox
from chatpop_common.auth import Principal
from chatpop_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from chatpop_common.service_auth import ServiceCredentials
from chatpop_payments import audit, orders
from chatpop_payments.events import EventHandler, start_refund
from chatpop_payments.fulfilment import order_id_of
from chatpop_payments.orders import Order
from chatpop_payments.purchases import list_seats
from chatpop_payments.states import Kind, State
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


async def seat_refund(
    pool: asyncpg.Pool,
    rooms: rooms_pb2_grpc.RoomsServiceStub,
    credentials: ServiceCredentials,
    principal: Principal,
    room_id: uuid.UUID,
    order_id: uuid.UUID,
) -> tuple[Order, bool]:
    """(the order, whether this call started its refund): a seat's order refunded by the room's host
    once rooms no longer holds the seat for it."""
    if principal.token_type == "room":
        principal.require_room(str(room_id))
        if not principal.is_host:
            raise PermissionDenied("Only the room's host can refund a seat.", code="not_host")
    elif principal.token_type != "access":
        raise Unauthenticated("An access or room token is required.", code="invalid_token")
    order = await orders.get(pool, order_id)
    if (
        order is None
        or order.kind != Kind.SEAT
        or order.room_id != room_id
        or str(order.host_identity_id) != principal.subject
    ):
        raise NotFound("There is no such order.", code="order_not_found")
    if order.state in (State.REFUNDING, State.REFUNDED):
        return order, False
    if order.state == State.PAID:
        # rooms may have granted the seat a moment ago, before fulfilment recorded it here.
        raise Unavailable("This seat's payment is still being settled; try again.", code="order_settling")
    if order.state != State.FULFILLED:
        raise FailedPrecondition("Only a seat that was granted can be refunded.", code="not_refundable")
    seats = await list_seats(rooms, credentials, room_id)
    if any(seat.order_id == str(order.id) for seat in seats.seats):
        raise FailedPrecondition(
            "This seat is still held: remove it from the Back Room first.", code="seat_held"
        )
    async with pool.acquire() as conn, conn.transaction():
        locked = await orders.lock(conn, order_id)
        assert locked is not None
        if locked.state in (State.REFUNDING, State.REFUNDED):
            return locked, False
        moved = await start_refund(conn, locked, "seat_removed")
        if moved is None:
            raise FailedPrecondition("Only a seat that was granted can be refunded.", code="not_refundable")
        await audit_events.add(conn, audit.seat_refunded(moved, principal.subject))
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

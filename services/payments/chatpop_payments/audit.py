"""The security events payments records in identity's audit log (chatpop_common.audit_events),
written into payments' outbox in the transaction of the change they describe.

- `payment.refunded`: an admin refunded an order; the actor is the admin's identity, the target the
  order, with its amount, the buyer, the host and the admin's reason.
- `payment.seat_refunded`: a room's host refunded the seat of someone they removed from the Back
  Room (RefundSeat); the actor is the host, the target the order, with its amount and the buyer.
- `payment.dispute_created`: the buyer's bank disputed a charge (Stripe's charge.dispute.created);
  the actor is Stripe, the target the order, with the amount and Stripe's reason.
"""

from __future__ import annotations

from chatpop.identity.v1 import identity_pb2
from chatpop_common.audit_events import audit_event
from chatpop_payments.orders import Order

REFUNDED = "payment.refunded"
DISPUTE_CREATED = "payment.dispute_created"
SEAT_REFUNDED = "payment.seat_refunded"


def refunded(order: Order, admin: str, reason: str) -> identity_pb2.NewAuditEvent:
    return audit_event(
        REFUNDED,
        idempotency_key=f"{REFUNDED}:{order.id}",
        actor=admin,
        target=f"order:{order.id}",
        room_id=str(order.room_id),
        details={
            "order_id": str(order.id),
            "kind": order.kind.value,
            "amount_cents": order.amount_cents,
            "currency": order.currency,
            "buyer_identity_id": str(order.buyer_identity_id),
            "host_identity_id": str(order.host_identity_id),
            "reason": reason,
            "test_mode": order.test_mode,
        },
    )


def dispute_created(
    order: Order, dispute_id: str, amount_cents: int, stripe_reason: str
) -> identity_pb2.NewAuditEvent:
    return audit_event(
        DISPUTE_CREATED,
        idempotency_key=f"{DISPUTE_CREATED}:{dispute_id}",
        actor="stripe",
        target=f"order:{order.id}",
        room_id=str(order.room_id),
        details={
            "order_id": str(order.id),
            "dispute_id": dispute_id,
            "amount_cents": amount_cents,
            "currency": order.currency,
            "reason": stripe_reason,
            "buyer_identity_id": str(order.buyer_identity_id),
            "host_identity_id": str(order.host_identity_id),
        },
    )


def seat_refunded(order: Order, host: str) -> identity_pb2.NewAuditEvent:
    return audit_event(
        SEAT_REFUNDED,
        idempotency_key=f"{SEAT_REFUNDED}:{order.id}",
        actor=host,
        target=f"order:{order.id}",
        room_id=str(order.room_id),
        details={
            "order_id": str(order.id),
            "kind": order.kind.value,
            "amount_cents": order.amount_cents,
            "currency": order.currency,
            "buyer_identity_id": str(order.buyer_identity_id),
            "buyer_participant_id": str(order.buyer_participant_id),
            "host_identity_id": str(order.host_identity_id),
            "reason": "seat_removed",
            "test_mode": order.test_mode,
        },
    )

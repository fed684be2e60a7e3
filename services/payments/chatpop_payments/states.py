"""Where an order stands and where it may go next: states only move forward.

    created ──> awaiting_payment ──> paid ──> fulfilled
       │              │               │           │
       │              │               └──> refunding <┘ ──> refunded
       └──────────────┴──> failed | cancelled

`created` may also move straight to `paid`: a payment that succeeded before the order learned its
PaymentIntent (a crash between Stripe's answer and our commit) is still the buyer's money. The same
table is enforced by the `orders_forward_only` trigger in the database (migration 0002), so no code
path, retry or reordered event can move an order backwards.
"""

from __future__ import annotations

from enum import StrEnum

from chatpop.payments.v1 import payments_pb2


class State(StrEnum):
    CREATED = "created"
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    FULFILLED = "fulfilled"
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Kind(StrEnum):
    PIN = "pin"
    PIN_EXTENSION = "pin_extension"
    TIP = "tip"
    SEAT = "seat"


TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        (State.CREATED, State.AWAITING_PAYMENT),
        (State.CREATED, State.PAID),
        (State.CREATED, State.FAILED),
        (State.CREATED, State.CANCELLED),
        (State.AWAITING_PAYMENT, State.PAID),
        (State.AWAITING_PAYMENT, State.FAILED),
        (State.AWAITING_PAYMENT, State.CANCELLED),
        (State.PAID, State.FULFILLED),
        (State.PAID, State.REFUNDING),
        (State.FULFILLED, State.REFUNDING),
        (State.REFUNDING, State.REFUNDED),
    }
)

# States an order never leaves.
FINAL = frozenset({State.REFUNDED, State.FAILED, State.CANCELLED})
# Money arrived (and has not been given back yet, or is being given back).
PAID_STATES = frozenset({State.PAID, State.FULFILLED, State.REFUNDING, State.REFUNDED})


def can_move(current: State, target: State) -> bool:
    return (current, target) in TRANSITIONS


def sources(target: State) -> list[str]:
    """The states from which an order may move to `target` (for `WHERE state = ANY(...)`)."""
    return sorted(current.value for current, to in TRANSITIONS if to == target)


STATE_TO_PROTO: dict[State, payments_pb2.OrderState] = {
    State.CREATED: payments_pb2.ORDER_STATE_CREATED,
    State.AWAITING_PAYMENT: payments_pb2.ORDER_STATE_AWAITING_PAYMENT,
    State.PAID: payments_pb2.ORDER_STATE_PAID,
    State.FULFILLED: payments_pb2.ORDER_STATE_FULFILLED,
    State.REFUNDING: payments_pb2.ORDER_STATE_REFUNDING,
    State.REFUNDED: payments_pb2.ORDER_STATE_REFUNDED,
    State.FAILED: payments_pb2.ORDER_STATE_FAILED,
    State.CANCELLED: payments_pb2.ORDER_STATE_CANCELLED,
}
KIND_TO_PROTO: dict[Kind, payments_pb2.OrderKind] = {
    Kind.PIN: payments_pb2.ORDER_KIND_PIN,
    Kind.PIN_EXTENSION: payments_pb2.ORDER_KIND_PIN_EXTENSION,
    Kind.TIP: payments_pb2.ORDER_KIND_TIP,
    Kind.SEAT: payments_pb2.ORDER_KIND_SEAT,
}

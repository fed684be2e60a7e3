"""payments in-process: how a Back Room seat is priced and refused at order time, what its buyer is
told when it is refunded, and that migration 0003 allows exactly the kinds and reasons the code uses."""

from __future__ import annotations

import importlib.util
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from chatpop.payments.v1 import payments_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.errors import FailedPrecondition
from chatpop_payments import purchases, states
from chatpop_payments.orders import REFUND_MESSAGES, Order, refund_sentence
from chatpop_payments.states import Kind, State

MIGRATION = (
    Path(__file__).resolve().parents[2]
    / "services/payments/chatpop_payments/migrations/versions/0003_seat_orders.py"
)


def _room(**back_room: object) -> rooms_pb2.Room:
    settings: dict[str, object] = {
        "enabled": True,
        "seat_price_cents": 700,
        "seat_limit": 5,
        "seats_taken": 2,
    }
    settings.update(back_room)
    return rooms_pb2.Room(
        id=str(uuid.uuid4()), host_id=str(uuid.uuid4()), back_room=rooms_pb2.BackRoom(**settings)
    )


def _order(room_id: uuid.UUID, kind: Kind, amount: int) -> Order:
    now = datetime.now(UTC)
    return Order(
        id=uuid.uuid4(),
        kind=kind,
        state=State.AWAITING_PAYMENT,
        room_id=room_id,
        buyer_participant_id=uuid.uuid4(),
        buyer_identity_id=uuid.uuid4(),
        host_identity_id=uuid.uuid4(),
        idempotency_key="k" * 12,
        amount_cents=amount,
        fee_cents=amount // 10,
        currency="usd",
        target_seq=None,
        pin_id=None,
        note="",
        test_mode=True,
        destination_account="",
        stripe_payment_intent_id=None,
        payment_error="",
        refund_reason="",
        refund_message="",
        stripe_refund_id=None,
        fulfilled_seq=None,
        created_at=now,
        updated_at=now,
        paid_at=None,
        fulfilled_at=None,
        refunded_at=None,
    )


def test_a_seat_costs_the_rooms_seat_price_at_order_time() -> None:
    item = purchases.seat_price(_room(seat_price_cents=700), fee_percent=10)
    assert (item.kind, item.amount_cents, item.fee_cents) == (Kind.SEAT, 700, 70)
    assert (item.target_seq, item.pin_id, item.note) == (None, None, "")
    # A price change applies to the next buyer.
    assert purchases.seat_price(_room(seat_price_cents=1250), fee_percent=20).amount_cents == 1250
    assert purchases.seat_price(_room(seat_price_cents=1250), fee_percent=20).fee_cents == 250
    request = payments_pb2.CreateOrderRequest(seat=payments_pb2.SeatPurchase())
    assert purchases.is_seat(request)
    assert not purchases.is_seat(
        payments_pb2.CreateOrderRequest(tip=payments_pb2.TipPurchase(amount_cents=1))
    )


@pytest.mark.parametrize(
    ("room", "code"),
    [
        (rooms_pb2.Room(id="r", host_id="h"), "back_room_unavailable"),
        (_room(enabled=False), "back_room_unavailable"),
        (_room(seat_price_cents=0), "back_room_unavailable"),
        (
            rooms_pb2.Room(id="b", parent_room_id="main", back_room=rooms_pb2.BackRoom(enabled=True)),
            "back_room_unavailable",
        ),
        (_room(seats_taken=5, full=True), "seats_full"),
        (_room(seats_taken=5), "seats_full"),
        (_room(seat_limit=3, seats_taken=4), "seats_full"),
    ],
)
def test_a_seat_is_refused_while_the_back_room_is_off_or_full(room: rooms_pb2.Room, code: str) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        purchases.seat_price(room, fee_percent=10)
    assert refused.value.code == code


def test_the_same_key_answers_the_same_seat_even_after_the_price_changed() -> None:
    room_id = uuid.uuid4()
    bought = _order(room_id, Kind.SEAT, 700)
    assert purchases.same_purchase(bought, room_id, None)
    assert not purchases.same_purchase(bought, uuid.uuid4(), None)
    tip = _order(room_id, Kind.TIP, 700)
    assert not purchases.same_purchase(tip, room_id, None)
    seat_item = purchases.seat_price(_room(seat_price_cents=700), fee_percent=10)
    assert not purchases.same_purchase(
        bought,
        room_id,
        purchases.price(
            payments_pb2.CreateOrderRequest(tip=payments_pb2.TipPurchase(amount_cents=700)),
            fee_percent=10,
            tip_min_cents=100,
            tip_max_cents=50_000,
        ),
    )
    assert purchases.same_purchase(bought, room_id, seat_item)


def test_a_refunded_seat_tells_its_buyer_why() -> None:
    assert "last seat" in refund_sentence(Kind.SEAT, "seats_full")
    assert "already hold a seat" in refund_sentence(Kind.SEAT, "already_seated")
    assert "removed you from the Back Room" in refund_sentence(Kind.SEAT, "seat_removed")
    assert "Back Room closed" in refund_sentence(Kind.SEAT, "room_closed")
    assert "no Back Room seat" in refund_sentence(Kind.SEAT, "banned")
    # Pins keep their own sentences.
    assert refund_sentence(Kind.PIN, "room_closed") == REFUND_MESSAGES["room_closed"]
    for reason in REFUND_MESSAGES:
        assert refund_sentence(Kind.SEAT, reason).endswith(".")


def test_a_seat_order_has_its_proto_kind() -> None:
    assert states.KIND_TO_PROTO[Kind.SEAT] == payments_pb2.ORDER_KIND_SEAT


def _migration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("payments_0003", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_0003_allows_exactly_the_kinds_and_refund_reasons_of_the_code() -> None:
    migration = _migration()
    assert migration.down_revision == "0002_orders_and_events"
    assert set(migration._KINDS) == {kind.value for kind in Kind}
    assert set(migration._REFUND_REASONS) == {""} | set(REFUND_MESSAGES)
    assert "kind = 'seat' AND target_seq IS NULL AND pin_id IS NULL" in migration._SEAT_ITEM

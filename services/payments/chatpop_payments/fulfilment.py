"""Fulfilment: the outbox handler that hands paid orders to messaging or rooms after commit.

`fulfil` (written when an order becomes paid): messaging applies the pin or posts the tip
(ApplyPaidPin / ApplyTip), rooms grants a Back Room seat (GrantSeat, decided against the seat limit
in one transaction), each with payments' service credential. Granted: the order is fulfilled (a pin
or tip with the seq of the room's entry), and after a seat the main room's clients are told its
seats changed (messaging's AnnounceRoomUpdate). Refused (outbid, no longer the top pin, the message
gone, no seat left, a seat held already, the buyer banned, the room or its Back Room closed): the
order moves to refunding with the reason, and a `refund` row is written in the same transaction.
messaging and rooms are idempotent by order id, so a delivery repeated after a crash anywhere yields
exactly one pin, tip or seat.

The handler looks at the order's state first, so a delivery that comes again after the work was done
changes nothing.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import grpc

from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common import outbox
from chatpop_common.errors import error_details
from chatpop_common.service_auth import ServiceCredentials
from chatpop_payments import orders
from chatpop_payments.events import start_refund
from chatpop_payments.metrics import FULFILMENT_LATENCY, FULFILMENTS
from chatpop_payments.orders import Order
from chatpop_payments.states import Kind, State

log = logging.getLogger(__name__)

APPLY_TIMEOUT = 10.0

_REFUSALS = {
    messaging_pb2.PAID_PIN_OUTCOME_OUTBID: "outbid",
    messaging_pb2.PAID_PIN_OUTCOME_NOT_TOP: "not_top_pin",
    messaging_pb2.PAID_PIN_OUTCOME_MESSAGE_GONE: "message_gone",
    messaging_pb2.PAID_PIN_OUTCOME_BANNED: "banned",
}
_SEAT_REFUSALS = {
    rooms_pb2.SEAT_OUTCOME_FULL: "seats_full",
    rooms_pb2.SEAT_OUTCOME_ALREADY_HOLDER: "already_seated",
    rooms_pb2.SEAT_OUTCOME_BANNED: "banned",
    rooms_pb2.SEAT_OUTCOME_UNAVAILABLE: "room_closed",
}
# Refusals by error code that mean the room (or its Back Room) can no longer take the order.
_ROOM_GONE = {"room_closed", "room_taken_down", "room_not_found", "no_back_room", "back_room_unavailable"}


def order_id_of(message: outbox.Message) -> uuid.UUID:
    try:
        return uuid.UUID(json.loads(message.payload)["order_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise outbox.PermanentFailure(f"outbox row {message.key} names no order") from exc


class MessagingUnavailable(Exception):
    """messaging (or rooms, for a seat) did not answer this time; the outbox tries again later."""


class Fulfilment:
    """The outbox handler of `fulfil`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        messaging: messaging_pb2_grpc.MessagingServiceStub,
        credentials: ServiceCredentials,
        *,
        rooms: rooms_pb2_grpc.RoomsServiceStub,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._messaging = messaging
        self._rooms = rooms
        self._credentials = credentials
        self._on_commit = on_commit

    async def __call__(self, messages: Sequence[outbox.Message]) -> None:
        for message in messages:
            await self.fulfil(order_id_of(message))

    async def fulfil(self, order_id: uuid.UUID) -> None:
        order = await orders.get(self._pool, order_id)
        if order is None:
            raise outbox.PermanentFailure(f"order {order_id} does not exist")
        if order.state != State.PAID:
            return
        try:
            seq, refusal = await self._apply(order)
        except grpc.aio.AioRpcError as exc:
            status, (code, _retry) = exc.code(), error_details(exc)
            if code in _ROOM_GONE or status == grpc.StatusCode.NOT_FOUND:
                seq, refusal = 0, "room_closed"
            elif code == "banned":
                seq, refusal = 0, "banned"
            elif status in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                raise outbox.PermanentFailure(
                    f"{_callee(order)} refused order {order.id}: {code or status.name}"
                ) from exc
            else:
                raise MessagingUnavailable(
                    f"{_callee(order)}: {status.name} {exc.details() or ''}".strip()
                ) from exc
        async with self._pool.acquire() as conn, conn.transaction():
            if refusal:
                moved = await start_refund(conn, order, refusal)
                outcome = refusal
            else:
                moved = await orders.move(
                    conn, order.id, State.FULFILLED, fulfilled_seq=seq or None, fulfilled_at=datetime.now(UTC)
                )
                outcome = "granted"
        if moved is None:
            return
        self._on_commit()
        FULFILMENTS.labels(order.kind.value, outcome).inc()
        if order.paid_at is not None:
            FULFILMENT_LATENCY.labels(order.kind.value).observe(
                max(0.0, time.time() - order.paid_at.timestamp())
            )
        if refusal:
            log.info("order %s was refused by %s (%s): refunding", order.id, _callee(order), refusal)
        elif order.kind == Kind.SEAT:
            await self._announce(order)

    async def _announce(self, order: Order) -> None:
        """Tell the main room's live clients that a seat was taken. The seat is granted already, so a
        failure is only logged: clients read the room again whenever they reconnect."""
        try:
            await self._messaging.AnnounceRoomUpdate(
                messaging_pb2.AnnounceRoomUpdateRequest(room_id=str(order.room_id)),
                metadata=await self._credentials.metadata(),
                timeout=APPLY_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "announcing the seats of room %s failed: %s",
                order.room_id,
                exc.code().name,
                extra={"order_id": str(order.id)},
            )

    async def _apply(self, order: Order) -> tuple[int, str]:
        """(the seq of the granting entry — 0 for a seat, which has none — or 0 with the refund
        reason)."""
        metadata = await self._credentials.metadata()
        if order.kind == Kind.SEAT:
            return await self._grant_seat(order, metadata)
        if order.kind == Kind.TIP:
            tip = await self._messaging.ApplyTip(
                messaging_pb2.ApplyTipRequest(
                    order_id=str(order.id),
                    room_id=str(order.room_id),
                    participant_id=str(order.buyer_participant_id),
                    amount_cents=order.amount_cents,
                    currency=order.currency,
                    note=order.note,
                ),
                metadata=metadata,
                timeout=APPLY_TIMEOUT,
            )
            return int(tip.entry.seq), ""
        pin = await self._messaging.ApplyPaidPin(
            messaging_pb2.ApplyPaidPinRequest(
                order_id=str(order.id),
                room_id=str(order.room_id),
                participant_id=str(order.buyer_participant_id),
                amount_cents=order.amount_cents,
                currency=order.currency,
                target_seq=order.target_seq or 0,
                extend_pin_id=str(order.pin_id) if order.pin_id else "",
            ),
            metadata=metadata,
            timeout=APPLY_TIMEOUT,
        )
        if pin.outcome == messaging_pb2.PAID_PIN_OUTCOME_GRANTED:
            return int(pin.entry.seq), ""
        refusal = _REFUSALS.get(pin.outcome)
        if refusal is None:
            raise outbox.PermanentFailure(f"messaging answered order {order.id} with outcome {pin.outcome}")
        return 0, refusal

    async def _grant_seat(self, order: Order, metadata: Sequence[tuple[str, str]]) -> tuple[int, str]:
        seat = await self._rooms.GrantSeat(
            rooms_pb2.GrantSeatRequest(
                order_id=str(order.id),
                room_id=str(order.room_id),
                participant_id=str(order.buyer_participant_id),
                price_cents=order.amount_cents,
            ),
            metadata=metadata,
            timeout=APPLY_TIMEOUT,
        )
        if seat.outcome == rooms_pb2.SEAT_OUTCOME_GRANTED:
            return 0, ""
        refusal = _SEAT_REFUSALS.get(seat.outcome)
        if refusal is None:
            raise outbox.PermanentFailure(f"rooms answered order {order.id} with outcome {seat.outcome}")
        return 0, refusal


def _callee(order: Order) -> str:
    return "rooms" if order.kind == Kind.SEAT else "messaging"

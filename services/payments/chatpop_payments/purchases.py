"""CreateOrder: what a buyer may buy in a room, priced here, and the payment opened for it.

The client names a tier (a pin or an extension) or a tip amount; the price is the tier's or the tip's
within the configured bounds, and the platform's fee comes from chatpop_common.pricing. Before
anything is stored the room must be open, its host able to receive money, and a pin must outbid the
room's top pin now (an extension must be of the caller's own top pin): messaging's GetPaidPinQuote
tells. messaging decides again when the payment has arrived (two buyers may race), and a loser is
refunded in full.

A Back Room seat is priced from the room's seat price as rooms says it now (a price change applies to
later buyers only), and refused while the Back Room is off (`back_room_unavailable`), full
(`seats_full`) or the buyer holds a seat already (`already_seated`). rooms' GrantSeat decides for good
when the payment has arrived: a seat that can no longer be granted is refunded in full.

Then the order is stored (`created`) and ONE Stripe PaymentIntent is created for it with the key
`order:<id>:payment_intent` (a destination charge: the host's Connect account gets the amount less the
platform's application fee), and the order awaits payment. A retry with the same idempotency key
answers the same order, and finishes opening its payment if a failure interrupted it. In test mode
no PaymentIntent exists; ConfirmTestPayment stands in for paying.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from dataclasses import dataclass

import asyncpg
import grpc

from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop.payments.v1 import payments_pb2
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common import pricing
from chatpop_common.auth import Principal
from chatpop_common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from chatpop_common.service_auth import ServiceCredentials
from chatpop_payments import orders, payouts
from chatpop_payments.orders import NewOrder, Order, parse_id
from chatpop_payments.settings import STRIPE_MIN_CHARGE_CENTS
from chatpop_payments.states import Kind, State
from chatpop_payments.stripe_api import StripeApi, StripeRefused, StripeUnavailable

log = logging.getLogger(__name__)

NOTE_MAX_CHARS = 200
LOOKUP_TIMEOUT = 5.0
_KEY = re.compile(r"[A-Za-z0-9_.:-]{8,64}")
_ALLOWED_CONTROLS = frozenset("\n\t")
_DESCRIPTIONS = {
    Kind.PIN: "ChatPop paid pin",
    Kind.PIN_EXTENSION: "ChatPop paid pin extension",
    Kind.TIP: "ChatPop tip",
    Kind.SEAT: "ChatPop Back Room seat",
}


@dataclass(frozen=True, slots=True)
class Item:
    """What an order buys and what it costs."""

    kind: Kind
    amount_cents: int
    fee_cents: int
    target_seq: int | None = None
    pin_id: uuid.UUID | None = None
    note: str = ""


def idempotency_key(value: str) -> str:
    if not _KEY.fullmatch(value):
        raise InvalidArgument(
            "idempotency_key must be 8-64 letters, digits, '_', '-', '.' or ':'.",
            code="invalid_idempotency_key",
        )
    return value


def tip_note(value: str) -> str:
    """A tip's note as stored: empty, or checked like a message's text, at most 200 characters."""
    note = value.strip()
    if len(note) > NOTE_MAX_CHARS:
        raise InvalidArgument(f"The note is longer than {NOTE_MAX_CHARS} characters.", code="note_too_long")
    for char in note:
        category = unicodedata.category(char)
        if (category == "Cc" and char not in _ALLOWED_CONTROLS) or category == "Cs":
            raise InvalidArgument("The note contains control characters.", code="note_invalid_characters")
    return note


def _tier(cents: int) -> int:
    if not pricing.is_tier(cents):
        raise InvalidArgument("tier_cents must be one of the paid pin tiers.", code="unknown_tier")
    return cents


def price(
    request: payments_pb2.CreateOrderRequest, *, fee_percent: int, tip_min_cents: int, tip_max_cents: int
) -> Item:
    """The item an order request names, priced from the tier table or the tip bounds (never from the
    client: a request carries no price)."""
    which = request.WhichOneof("item")
    if which == "pin":
        amount = _tier(request.pin.tier_cents)
        if request.pin.target_seq < 1:
            raise InvalidArgument("target_seq must name a message (1 or more).", code="invalid_target_seq")
        return Item(
            Kind.PIN, amount, pricing.platform_fee(amount, fee_percent), target_seq=request.pin.target_seq
        )
    if which == "extension":
        amount = _tier(request.extension.tier_cents)
        pin_id = parse_id(request.extension.pin_id, "pin_id")
        return Item(Kind.PIN_EXTENSION, amount, pricing.platform_fee(amount, fee_percent), pin_id=pin_id)
    if which == "tip":
        amount = request.tip.amount_cents
        if not tip_min_cents <= amount <= tip_max_cents:
            raise InvalidArgument(
                f"A tip must be between {tip_min_cents} and {tip_max_cents} cents.", code="tip_out_of_bounds"
            )
        return Item(
            Kind.TIP, amount, pricing.platform_fee(amount, fee_percent), note=tip_note(request.tip.note)
        )
    raise InvalidArgument("Name what to buy: a pin, an extension, a tip or a seat.", code="item_required")


def is_seat(request: payments_pb2.CreateOrderRequest) -> bool:
    which: str | None = request.WhichOneof("item")
    return which == "seat"


def seat_price(room: rooms_pb2.Room, *, fee_percent: int) -> Item:
    """A seat in the room's Back Room at its seat price now; refused when the room sells no seats."""
    back_room = room.back_room
    if (
        room.parent_room_id
        or not room.HasField("back_room")
        or not back_room.enabled
        or back_room.seat_price_cents < STRIPE_MIN_CHARGE_CENTS
    ):
        raise FailedPrecondition("This room has no Back Room open now.", code="back_room_unavailable")
    if back_room.full or back_room.seats_taken >= back_room.seat_limit:
        raise FailedPrecondition("Every seat in the Back Room is taken.", code="seats_full")
    amount = back_room.seat_price_cents
    return Item(Kind.SEAT, amount, pricing.platform_fee(amount, fee_percent))


def same_purchase(order: Order, room_id: uuid.UUID, item: Item | None) -> bool:
    """Whether an order is what the request asks for again (`item` None: a seat, whose price is the
    room's and may have changed since)."""
    if item is None:
        return (order.room_id, order.kind) == (room_id, Kind.SEAT)
    return (order.room_id, order.kind, order.amount_cents, order.target_seq, order.pin_id, order.note) == (
        room_id,
        item.kind,
        item.amount_cents,
        item.target_seq,
        item.pin_id,
        item.note,
    )


async def lookup_room(
    rooms: rooms_pb2_grpc.RoomsServiceStub, credentials: ServiceCredentials, room_id: uuid.UUID
) -> rooms_pb2.Room:
    """The room by id; NotFound when rooms has no such room, Unavailable when rooms cannot answer."""
    try:
        response = await rooms.GetRoom(
            rooms_pb2.GetRoomRequest(room_id=str(room_id)),
            metadata=await credentials.metadata(),
            timeout=LOOKUP_TIMEOUT,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise NotFound("There is no such room.", code="room_not_found") from exc
        raise Unavailable("Rooms could not be reached; try again.", code="rooms_unavailable") from exc
    room: rooms_pb2.Room = response.room
    return room


async def list_seats(
    rooms: rooms_pb2_grpc.RoomsServiceStub, credentials: ServiceCredentials, room_id: uuid.UUID
) -> rooms_pb2.ListSeatsResponse:
    """The Back Room's current seat holders, as rooms has them now."""
    try:
        seats: rooms_pb2.ListSeatsResponse = await rooms.ListSeats(
            rooms_pb2.ListSeatsRequest(room_id=str(room_id)),
            metadata=await credentials.metadata(),
            timeout=LOOKUP_TIMEOUT,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise FailedPrecondition(
                "This room has no Back Room open now.", code="back_room_unavailable"
            ) from exc
        raise Unavailable("Rooms could not be reached; try again.", code="rooms_unavailable") from exc
    return seats


def room_is_open(room: rooms_pb2.Room) -> bool:
    return not room.closed and not room.taken_down


class Purchases:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        rooms: rooms_pb2_grpc.RoomsServiceStub,
        messaging: messaging_pb2_grpc.MessagingServiceStub,
        credentials: ServiceCredentials,
        stripe: StripeApi | None,
        currency: str,
        fee_percent: int,
        tip_min_cents: int,
        tip_max_cents: int,
    ) -> None:
        self._pool = pool
        self._rooms = rooms
        self._messaging = messaging
        self._credentials = credentials
        self._stripe = stripe
        self._currency = currency
        self._fee_percent = fee_percent
        self._tip_min = tip_min_cents
        self._tip_max = tip_max_cents

    @property
    def test_mode(self) -> bool:
        return self._stripe is None

    async def create(
        self, principal: Principal, request: payments_pb2.CreateOrderRequest
    ) -> tuple[Order, str, bool]:
        """(the order, the client secret for Stripe.js, whether this call created it)."""
        room_id = parse_id(request.room_id, "room_id")
        if principal.token_type != "room":
            raise PermissionDenied(
                "Join the room first: buying takes a room token.", code="room_token_required"
            )
        principal.require_room(str(room_id))
        buyer = parse_id(principal.subject, "subject")
        participant = parse_id(principal.participant_id, "participant_id")
        key = idempotency_key(request.idempotency_key)
        # A seat's price is the room's: known once rooms has been asked.
        asked: Item | None = (
            None
            if is_seat(request)
            else price(
                request,
                fee_percent=self._fee_percent,
                tip_min_cents=self._tip_min,
                tip_max_cents=self._tip_max,
            )
        )
        existing = await orders.by_key(self._pool, buyer, key)
        if existing is not None:
            return await self._again(existing, room_id, asked)

        room = await lookup_room(self._rooms, self._credentials, room_id)
        if not room_is_open(room):
            raise FailedPrecondition("This room is closed.", code="room_closed")
        item = asked or seat_price(room, fee_percent=self._fee_percent)
        host = parse_id(room.host_id, "host_id")
        account = await payouts.receiving(self._pool, host, test_mode=self.test_mode)
        if account is None or account.stripe_account_id is None:
            raise FailedPrecondition(
                "The host of this room cannot receive payments.", code="payments_not_enabled"
            )
        if item.kind == Kind.SEAT:
            await self._check_seat(room_id, participant, principal)
        elif item.kind != Kind.TIP:
            await self._check_pin(room_id, participant, item)
        order, created = await orders.insert(
            self._pool,
            NewOrder(
                id=uuid.uuid4(),
                kind=item.kind,
                room_id=room_id,
                buyer_participant_id=participant,
                buyer_identity_id=buyer,
                host_identity_id=host,
                idempotency_key=key,
                amount_cents=item.amount_cents,
                fee_cents=item.fee_cents,
                currency=self._currency,
                target_seq=item.target_seq,
                pin_id=item.pin_id,
                note=item.note,
                test_mode=self.test_mode,
                destination_account="" if self.test_mode else account.stripe_account_id,
            ),
        )
        if not created:
            # The same key raced in from another request.
            return await self._again(order, room_id, asked)
        opened, secret = await self._open_payment(order)
        return opened, secret, True

    async def _again(self, order: Order, room_id: uuid.UUID, item: Item | None) -> tuple[Order, str, bool]:
        if not same_purchase(order, room_id, item):
            raise FailedPrecondition(
                "This idempotency key was used for another order; use a new key.",
                code="idempotency_key_reused",
            )
        opened, secret = await self._open_payment(order)
        return opened, secret, False

    async def _check_seat(self, room_id: uuid.UUID, participant: uuid.UUID, principal: Principal) -> None:
        """Refuse a seat to whoever is in the Back Room already: its host, or a current holder (rooms
        decides again at GrantSeat; this spares the buyer a payment that would be refunded)."""
        if principal.is_host:
            raise FailedPrecondition("The host is always in the Back Room.", code="already_seated")
        seats = await list_seats(self._rooms, self._credentials, room_id)
        if any(seat.participant_id == str(participant) for seat in seats.seats):
            raise FailedPrecondition("You already hold a seat in this Back Room.", code="already_seated")

    async def _check_pin(self, room_id: uuid.UUID, participant: uuid.UUID, item: Item) -> None:
        try:
            quote = await self._messaging.GetPaidPinQuote(
                messaging_pb2.GetPaidPinQuoteRequest(room_id=str(room_id)),
                metadata=await self._credentials.metadata(),
                timeout=LOOKUP_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound("There is no such room.", code="room_not_found") from exc
            raise Unavailable(
                "Messaging could not be reached; try again.", code="messaging_unavailable"
            ) from exc
        if item.kind == Kind.PIN:
            if not quote.min_cents or item.amount_cents < quote.min_cents:
                raise FailedPrecondition(
                    "A new paid pin must outbid the top pin by at least one tier"
                    + (
                        f" ({quote.min_cents} cents or more)."
                        if quote.min_cents
                        else "; no tier is above it."
                    ),
                    code="outbid_required",
                )
            return
        top = quote.paid_pins[0] if quote.paid_pins else None
        if top is None or top.id != str(item.pin_id) or top.participant_id != str(participant):
            raise FailedPrecondition("Only your own top paid pin can be extended.", code="not_top_pin")

    async def _open_payment(self, order: Order) -> tuple[Order, str]:
        """Move a `created` order to awaiting payment (creating its PaymentIntent with Stripe); for an
        order past that, the client secret of its PaymentIntent while it still waits for payment."""
        if order.state != State.CREATED:
            if order.state == State.AWAITING_PAYMENT and order.stripe_payment_intent_id and self._stripe:
                try:
                    intent = await self._stripe.retrieve_payment_intent(order.stripe_payment_intent_id)
                except (StripeUnavailable, StripeRefused) as exc:
                    log.warning("could not read the PaymentIntent of order %s again: %s", order.id, exc)
                    raise Unavailable(
                        "Stripe could not be reached; try again.", code="stripe_unavailable"
                    ) from exc
                return order, intent.client_secret
            return order, ""
        if self._stripe is None or order.test_mode:
            moved = await orders.move(self._pool, order.id, State.AWAITING_PAYMENT)
            return moved or await self._reread(order), ""
        try:
            intent = await self._stripe.create_payment_intent(
                idempotency_key=f"order:{order.id}:payment_intent",
                amount=order.amount_cents,
                currency=order.currency,
                application_fee=order.fee_cents,
                destination=order.destination_account,
                metadata={"order_id": str(order.id), "kind": order.kind.value, "room_id": str(order.room_id)},
                description=_DESCRIPTIONS[order.kind],
            )
        except StripeUnavailable as exc:
            # The order stays `created`: the same idempotency key finishes opening it.
            log.warning("Stripe unavailable opening order %s: %s", order.id, exc)
            raise Unavailable("Stripe could not be reached; try again.", code="stripe_unavailable") from exc
        except StripeRefused as exc:
            log.error("Stripe refused the PaymentIntent of order %s: %s (%s)", order.id, exc, exc.code)
            await orders.move(
                self._pool, order.id, State.FAILED, payment_error="The payment could not be opened."
            )
            raise FailedPrecondition(
                "This payment could not be opened; please try again later.", code="payment_refused"
            ) from exc
        moved = await orders.move(
            self._pool, order.id, State.AWAITING_PAYMENT, stripe_payment_intent_id=intent.id
        )
        # None: a webhook got there first (the buyer cannot have paid without this answer, but
        # reconciliation may have recorded the PaymentIntent).
        return moved or await self._reread(order), intent.client_secret

    async def _reread(self, order: Order) -> Order:
        fresh = await orders.get(self._pool, order.id)
        assert fresh is not None
        return fresh

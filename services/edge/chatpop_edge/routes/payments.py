"""Money over REST: what a room sells, orders and their payment, Stripe's webhook, payout accounts,
earnings, and an admin's refund. The payments service owns all of it; prices are always the server's.

An order moves only forward: `created` → `awaiting_payment` → `paid` → `fulfilled`, or `refunding` →
`refunded`, or `failed` / `cancelled`. Nothing is pinned, tipped or seated until the payment
succeeded; an order that can no longer be fulfilled (outbid, the message gone, no Back Room seat left,
a seat held already, the buyer banned, the room or its Back Room closed) is refunded in full
automatically, with `refund_reason` and a sentence in `refund_message`. A paid pin that was granted is
never refunded because it ended early (taken down by the host, a ban, the message deleted); a Back
Room seat is refunded only when its host removes it asking for a refund (`seat_removed`).

Without Stripe keys (`mode: "test"`), payments run in a clearly labelled test mode: no money moves,
`POST /api/v1/payments/orders/{order_id}/test-confirm` stands in for paying, and payout onboarding
completes with `POST /api/v1/payments/payout-account/test-complete`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated, Literal

import grpc
from fastapi import APIRouter, Path, Query, Request, Response, status
from pydantic import BaseModel, Field, model_validator

from chatpop.messaging.v1 import messaging_pb2
from chatpop.payments.v1 import payments_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common import pricing
from chatpop_edge import models
from chatpop_edge.backends import Backends, auth_metadata
from chatpop_edge.deps import BackendsDep, OptionalToken, RequiredToken, SettingsDep
from chatpop_edge.errors import ApiError, error_responses
from chatpop_edge.routes.bans import UUID_PATTERN
from chatpop_edge.routes.rooms import RoomCode, room_principal

log = logging.getLogger(__name__)

router = APIRouter(tags=["payments"])

IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_.:-]+$"
NOTE_MAX_LENGTH = 200
URL_MAX_LENGTH = 2000
REASON_MAX_LENGTH = 500
ORDERS_PAGE_MAX = 100
# The largest tip any deployment may allow (TIP_MAX_CENTS is at most this); the service checks the
# configured bounds.
TIP_MAX_CENTS = 99_999_999
# Earnings name at most this many rooms (the rest keep only their id).
NAMED_ROOMS_MAX = 50

Mode = Literal["stripe", "test"]
OrderKind = Literal["pin", "pin_extension", "tip", "seat"]
OrderState = Literal[
    "created", "awaiting_payment", "paid", "fulfilled", "refunding", "refunded", "failed", "cancelled"
]
_MODE: dict[int, Mode] = {payments_pb2.MODE_STRIPE: "stripe", payments_pb2.MODE_TEST: "test"}
_KIND: dict[int, OrderKind] = {
    payments_pb2.ORDER_KIND_PIN: "pin",
    payments_pb2.ORDER_KIND_PIN_EXTENSION: "pin_extension",
    payments_pb2.ORDER_KIND_TIP: "tip",
    payments_pb2.ORDER_KIND_SEAT: "seat",
}
_STATE: dict[int, OrderState] = {
    payments_pb2.ORDER_STATE_CREATED: "created",
    payments_pb2.ORDER_STATE_AWAITING_PAYMENT: "awaiting_payment",
    payments_pb2.ORDER_STATE_PAID: "paid",
    payments_pb2.ORDER_STATE_FULFILLED: "fulfilled",
    payments_pb2.ORDER_STATE_REFUNDING: "refunding",
    payments_pb2.ORDER_STATE_REFUNDED: "refunded",
    payments_pb2.ORDER_STATE_FAILED: "failed",
    payments_pb2.ORDER_STATE_CANCELLED: "cancelled",
}

OrderId = Annotated[
    str, Path(min_length=36, max_length=36, pattern=UUID_PATTERN, description="The order's id.")
]

# --- bodies -------------------------------------------------------------------------------------


class PaymentsConfig(BaseModel):
    mode: Mode = Field(description='"stripe": real payments through Stripe; "test": no money moves.')
    currency: str = Field(description="ISO 4217 code in lower case, e.g. `usd`.")
    publishable_key: str = Field(description="Stripe's publishable key for Stripe.js; empty in test mode.")
    platform_fee_percent: int = Field(description="ChatPop's share of every payment, in percent.")


class PinTier(BaseModel):
    amount_cents: int
    minutes: int = Field(description="Minutes the tier adds to a pin (a new pin stands 60 at least).")


class RoomSales(BaseModel):
    enabled: bool = Field(description="The room's host can receive money: paid pins and tips are on sale.")
    disabled_reason: str = Field(
        description="Why not: `room_closed`, `anonymous_host` (told to that host), `host_not_onboarded`; "
        "empty when enabled."
    )
    mode: Mode
    currency: str
    pin_tiers: list[PinTier] = Field(description="The prices of a paid pin, ascending.")
    tip_presets_cents: list[int]
    tip_min_cents: int
    tip_max_cents: int
    paid_pins: list[models.PaidPin] = Field(
        description="Live paid pins, top first (with a room token of the room; empty without one)."
    )
    min_pin_cents: int | None = Field(
        description="The lowest tier that outbids the top pin now (the base rate when none is live); null "
        "when no tier is above the top pin, or without a room token."
    )
    my_top_pin_id: str = Field(description="The caller's pin when it is the top one (it may be extended).")


class PinItem(models.RequestBody):
    target_seq: int = Field(ge=1, le=models.MAX_SEQ, description="The message to pin.")
    tier_cents: int = Field(
        ge=pricing.BASE_RATE_CENTS, le=pricing.MAX_TIER_CENTS, description="One of the `pin_tiers` amounts."
    )


class ExtensionItem(models.RequestBody):
    pin_id: str = Field(min_length=36, max_length=36, pattern=UUID_PATTERN, description="Your top pin's id.")
    tier_cents: int = Field(
        ge=pricing.BASE_RATE_CENTS, le=pricing.MAX_TIER_CENTS, description="One of the `pin_tiers` amounts."
    )


class TipItem(models.RequestBody):
    amount_cents: int = Field(
        ge=1, le=TIP_MAX_CENTS, description="Between `tip_min_cents` and `tip_max_cents`."
    )
    note: str = Field(default="", max_length=NOTE_MAX_LENGTH, description="Optional, checked like a message.")


class SeatItem(models.RequestBody):
    """A seat in the room's Back Room at its current seat price: nothing to choose."""


class CreateOrderRequest(models.RequestBody):
    """Exactly one of `pin`, `extension`, `tip`, `seat`. No price: the server prices the order."""

    idempotency_key: str = Field(
        min_length=8,
        max_length=64,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Yours, unique per order: sending the same key again answers the same order.",
    )
    pin: PinItem | None = None
    extension: ExtensionItem | None = None
    tip: TipItem | None = None
    seat: SeatItem | None = Field(default=None, description="`{}`: a Back Room seat.")

    @model_validator(mode="after")
    def _one_item(self) -> CreateOrderRequest:
        if sum(item is not None for item in (self.pin, self.extension, self.tip, self.seat)) != 1:
            raise ValueError("name exactly one of pin, extension, tip or seat")
        return self

    def to_proto(self, room_id: str) -> payments_pb2.CreateOrderRequest:
        request = payments_pb2.CreateOrderRequest(room_id=room_id, idempotency_key=self.idempotency_key)
        if self.pin is not None:
            request.pin.CopyFrom(
                payments_pb2.PinPurchase(target_seq=self.pin.target_seq, tier_cents=self.pin.tier_cents)
            )
        elif self.extension is not None:
            request.extension.CopyFrom(
                payments_pb2.PinExtension(pin_id=self.extension.pin_id, tier_cents=self.extension.tier_cents)
            )
        elif self.tip is not None:
            request.tip.CopyFrom(
                payments_pb2.TipPurchase(amount_cents=self.tip.amount_cents, note=self.tip.note)
            )
        elif self.seat is not None:
            request.seat.CopyFrom(payments_pb2.SeatPurchase())
        return request


class Order(BaseModel):
    id: str
    kind: OrderKind
    state: OrderState
    room_id: str
    amount_cents: int = Field(description="The price, set by the server.")
    fee_cents: int = Field(description="ChatPop's share of it; the host gets the rest.")
    currency: str
    target_seq: int | None = Field(description="For a pin: the message.")
    pin_id: str | None = Field(description="For an extension: the pin extended.")
    note: str = Field(description="For a tip: the note.")
    payment_error: str = Field(description="The last payment error (a declined card…); empty when none.")
    refund_reason: str = Field(
        description="`outbid`, `not_top_pin`, `message_gone`, `banned`, `admin`, `room_closed`, `seats_full` "
        "(no Back Room seat was left when the payment landed), `already_seated`, `seat_removed` (the host "
        "removed the seat with a refund); empty unless refunding or refunded."
    )
    refund_message: str = Field(description="Why it was refunded, in a sentence for people.")
    test_mode: bool
    created_at: datetime | None
    updated_at: datetime | None
    fulfilled_seq: int | None = Field(
        description="For a fulfilled pin or extension: the granting entry's seq."
    )

    @classmethod
    def from_proto(cls, order: payments_pb2.Order) -> Order:
        return cls(
            id=order.id,
            kind=_KIND[order.kind],
            state=_STATE[order.state],
            room_id=order.room_id,
            amount_cents=order.amount_cents,
            fee_cents=order.fee_cents,
            currency=order.currency,
            target_seq=order.target_seq or None,
            pin_id=order.pin_id or None,
            note=order.note,
            payment_error=order.payment_error,
            refund_reason=order.refund_reason,
            refund_message=order.refund_message,
            test_mode=order.test_mode,
            created_at=models.timestamp(order.created_at),
            updated_at=models.timestamp(order.updated_at),
            fulfilled_seq=order.fulfilled_seq or None,
        )


class CreatedOrder(BaseModel):
    order: Order
    client_secret: str = Field(description="For Stripe.js to confirm the payment; empty in test mode.")


class OrderResponse(BaseModel):
    order: Order


class OrderPage(BaseModel):
    orders: list[Order] = Field(description="Newest first.")
    has_more: bool


class ConfirmTestRequest(models.RequestBody):
    outcome: Literal["succeed", "decline"] = Field(
        description="`succeed`: the test card goes through; `decline`: it is declined (the order keeps "
        "waiting for payment, with `payment_error`)."
    )


class WebhookReceipt(BaseModel):
    received: bool
    event_id: str
    duplicate: bool = Field(description="This event had been received before; nothing changed.")


class PayoutAccount(BaseModel):
    stripe_account_id: str = Field(description="Stripe's account id (`acct_…`; `acct_test_…` in test mode).")
    details_submitted: bool
    charges_enabled: bool
    payouts_enabled: bool
    can_receive: bool = Field(description="Your rooms can sell: charges are enabled.")
    updated_at: datetime | None
    test_mode: bool

    @classmethod
    def from_proto(cls, account: payments_pb2.PayoutAccount) -> PayoutAccount:
        return cls(
            stripe_account_id=account.stripe_account_id,
            details_submitted=account.details_submitted,
            charges_enabled=account.charges_enabled,
            payouts_enabled=account.payouts_enabled,
            can_receive=account.can_receive,
            updated_at=models.timestamp(account.updated_at),
            test_mode=account.test_mode,
        )


class PayoutAccountResponse(BaseModel):
    account: PayoutAccount | None = Field(description="Null when you never started onboarding.")


class OnboardingRequest(models.RequestBody):
    return_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=URL_MAX_LENGTH,
        description="A page of this site Stripe sends you back to (default: /payouts?returned=1).",
    )


class Onboarding(BaseModel):
    account: PayoutAccount | None
    onboarding_url: str = Field(
        description="Stripe's onboarding page; in test mode this site's /payouts/test-onboarding page."
    )


class Amounts(BaseModel):
    gross_cents: int = Field(description="What buyers paid, refunds taken out.")
    fee_cents: int = Field(description="ChatPop's fees, refunded fees taken out.")
    net_cents: int = Field(description="Your share: gross less fee.")
    refunded_cents: int
    count: int = Field(description="Orders paid and not refunded.")

    @classmethod
    def from_proto(cls, amounts: payments_pb2.Amounts) -> Amounts:
        return cls(
            gross_cents=amounts.gross_cents,
            fee_cents=amounts.fee_cents,
            net_cents=amounts.net_cents,
            refunded_cents=amounts.refunded_cents,
            count=amounts.count,
        )


class RoomEarnings(BaseModel):
    room_id: str
    room_code: str | None = Field(default=None, description="The room's code, when it could be looked up.")
    room_name: str | None = Field(default=None, description="The room's name, when it could be looked up.")
    pins: Amounts
    tips: Amounts
    seats: Amounts
    total: Amounts


class Earnings(BaseModel):
    currency: str
    pins: Amounts = Field(description="Paid pins and their extensions.")
    tips: Amounts
    seats: Amounts = Field(description="Back Room seats.")
    total: Amounts
    rooms: list[RoomEarnings] = Field(description="Rooms with any earnings, most earned first.")


class RefundRequest(models.RequestBody):
    reason: str = Field(min_length=1, max_length=REASON_MAX_LENGTH, description="Why, for the audit log.")


class RefundResult(BaseModel):
    order: Order
    changed: bool = Field(description="False when it was refunded (or being refunded) already.")


# --- configuration and what a room sells ---------------------------------------------------------


@router.get(
    "/api/v1/payments/config",
    response_model=PaymentsConfig,
    responses=error_responses(),
    summary="Whether payments run against Stripe or in test mode, the currency, Stripe's publishable key "
    "and ChatPop's fee",
)
async def payments_config(backends: BackendsDep) -> PaymentsConfig:
    config = await backends.payments.GetConfig(payments_pb2.GetConfigRequest(), timeout=backends.timeout)
    return PaymentsConfig(
        mode=_MODE.get(config.mode, "test"),
        currency=config.currency,
        publishable_key=config.publishable_key,
        platform_fee_percent=config.platform_fee_percent,
    )


async def _quote(backends: Backends, room_id: str, token: str) -> messaging_pb2.GetPaidPinQuoteResponse:
    quote: messaging_pb2.GetPaidPinQuoteResponse = await backends.messaging.GetPaidPinQuote(
        messaging_pb2.GetPaidPinQuoteRequest(room_id=room_id),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return quote


@router.get(
    "/api/v1/rooms/{code}/sales",
    response_model=RoomSales,
    responses=error_responses(401, 403, 404),
    summary="What the room sells: whether it is on, the pin tiers and tip bounds, and (with your room "
    "token) its live paid pins, the lowest outbidding tier and your top pin",
)
async def room_sales(code: RoomCode, backends: BackendsDep, token: OptionalToken) -> RoomSales:
    if token is not None:
        room_id, _principal = await room_principal(backends, code, token)
        sales, quote = await asyncio.gather(
            backends.payments.GetRoomSales(
                payments_pb2.GetRoomSalesRequest(room_id=room_id),
                metadata=auth_metadata(token),
                timeout=backends.timeout,
            ),
            _quote(backends, room_id, token),
        )
    else:
        room_id = await backends.room_id(code)
        sales = await backends.payments.GetRoomSales(
            payments_pb2.GetRoomSalesRequest(room_id=room_id), timeout=backends.timeout
        )
        quote = None
    return RoomSales(
        enabled=sales.enabled,
        disabled_reason=sales.disabled_reason,
        mode=_MODE.get(sales.mode, "test"),
        currency=sales.currency,
        pin_tiers=[PinTier(amount_cents=tier.amount_cents, minutes=tier.minutes) for tier in sales.pin_tiers],
        tip_presets_cents=list(sales.tip_presets_cents),
        tip_min_cents=sales.tip_min_cents,
        tip_max_cents=sales.tip_max_cents,
        paid_pins=[models.PaidPin.from_proto(pin) for pin in quote.paid_pins] if quote else [],
        min_pin_cents=(quote.min_cents or None) if quote else None,
        my_top_pin_id=quote.my_top_pin_id if quote else "",
    )


# --- orders ----------------------------------------------------------------------------------------


@router.post(
    "/api/v1/rooms/{code}/orders",
    status_code=status.HTTP_201_CREATED,
    response_model=CreatedOrder,
    responses={
        200: {"model": CreatedOrder, "description": "The idempotency key answered an earlier order"},
        **error_responses(401, 403, 404, 409),
    },
    summary="Buy a paid pin, an extension of your top pin, a tip or a Back Room seat (room token); priced "
    "by the server",
    description="409 `payments_not_enabled` (the host cannot receive money), `outbid_required` (a pin "
    "must outbid the top pin by a tier), `not_top_pin`, `room_closed`, `idempotency_key_reused`, "
    "`back_room_unavailable` (the room has no Back Room open), `seats_full`, `already_seated`; 422 "
    "`unknown_tier`, `tip_out_of_bounds`, `note_too_long`. Pay with Stripe.js and `client_secret`, or in "
    "test mode with `POST /api/v1/payments/orders/{order_id}/test-confirm`; then read the order until it "
    "settles.",
)
async def create_order(
    code: RoomCode, body: CreateOrderRequest, response: Response, backends: BackendsDep, token: RequiredToken
) -> CreatedOrder:
    room_id, _principal = await room_principal(backends, code, token)
    created = await backends.payments.CreateOrder(
        body.to_proto(room_id), metadata=auth_metadata(token), timeout=backends.timeout
    )
    response.status_code = status.HTTP_201_CREATED if created.created else status.HTTP_200_OK
    return CreatedOrder(order=Order.from_proto(created.order), client_secret=created.client_secret)


@router.get(
    "/api/v1/payments/orders/{order_id}",
    response_model=OrderResponse,
    responses=error_responses(401, 404),
    summary="One of your orders (any token of yours; admins see every order)",
)
async def get_order(order_id: OrderId, backends: BackendsDep, token: RequiredToken) -> OrderResponse:
    answer = await backends.payments.GetOrder(
        payments_pb2.GetOrderRequest(order_id=order_id),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return OrderResponse(order=Order.from_proto(answer.order))


@router.get(
    "/api/v1/payments/orders",
    response_model=OrderPage,
    responses=error_responses(401),
    summary="Your orders, newest first (access token, or a room token of yours)",
)
async def list_orders(
    backends: BackendsDep,
    token: RequiredToken,
    before: Annotated[
        str | None,
        Query(min_length=36, max_length=36, pattern=UUID_PATTERN, description="Orders older than this one."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=ORDERS_PAGE_MAX, description="Orders per page.")] = 50,
) -> OrderPage:
    page = await backends.payments.ListMyOrders(
        payments_pb2.ListMyOrdersRequest(before_order_id=before or "", limit=limit),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return OrderPage(orders=[Order.from_proto(order) for order in page.orders], has_more=page.has_more)


@router.post(
    "/api/v1/payments/orders/{order_id}/test-confirm",
    response_model=OrderResponse,
    responses=error_responses(401, 404, 409),
    summary="Test mode only: pay an order of yours with the test card, or have it declined; 409 "
    "`not_test_mode` when payments run against Stripe",
)
async def confirm_test_payment(
    order_id: OrderId, body: ConfirmTestRequest, backends: BackendsDep, token: RequiredToken
) -> OrderResponse:
    outcome = (
        payments_pb2.TEST_OUTCOME_SUCCEED if body.outcome == "succeed" else payments_pb2.TEST_OUTCOME_DECLINE
    )
    answer = await backends.payments.ConfirmTestPayment(
        payments_pb2.ConfirmTestPaymentRequest(order_id=order_id, outcome=outcome),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return OrderResponse(order=Order.from_proto(answer.order))


@router.post(
    "/api/v1/payments/stripe/webhook",
    response_model=WebhookReceipt,
    responses=error_responses(409),
    summary="Stripe's webhook endpoint: the body exactly as Stripe sent it, with its Stripe-Signature "
    "header; 400 `invalid_signature` unless it verifies (and is recent), 200 otherwise, duplicates "
    "included",
)
async def stripe_webhook(request: Request, backends: BackendsDep) -> WebhookReceipt:
    payload = await request.body()
    signature = request.headers.get("stripe-signature", "")
    try:
        answer = await backends.payments.HandleStripeWebhook(
            payments_pb2.HandleStripeWebhookRequest(payload=payload, signature=signature),
            timeout=backends.timeout,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise ApiError(400, "invalid_signature", "The webhook's signature does not verify.") from exc
        raise
    return WebhookReceipt(received=True, event_id=answer.event_id, duplicate=answer.duplicate)


# --- payout accounts and earnings ------------------------------------------------------------------


@router.get(
    "/api/v1/payments/payout-account",
    response_model=PayoutAccountResponse,
    responses=error_responses(401),
    summary="Your payout account (access token); `refresh=true` asks Stripe for its state now",
)
async def payout_account(
    backends: BackendsDep,
    token: RequiredToken,
    refresh: Annotated[
        bool, Query(description="Ask Stripe now rather than answer what was last learned.")
    ] = False,
) -> PayoutAccountResponse:
    answer = await backends.payments.GetPayoutAccount(
        payments_pb2.GetPayoutAccountRequest(refresh=refresh),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return PayoutAccountResponse(
        account=PayoutAccount.from_proto(answer.account) if answer.HasField("account") else None
    )


@router.post(
    "/api/v1/payments/payout-account/onboarding",
    response_model=Onboarding,
    responses=error_responses(401, 403),
    summary="Start (or continue) setting up payouts with Stripe Connect (access token of an account; 403 "
    "`account_required` for anonymous sessions): open `onboarding_url`",
)
async def start_onboarding(
    body: OnboardingRequest, backends: BackendsDep, settings: SettingsDep, token: RequiredToken
) -> Onboarding:
    site = settings.public_url
    return_url = body.return_url or f"{site}/payouts?returned=1"
    if not return_url.startswith(f"{site}/"):
        raise ApiError(422, "invalid_return_url", f"return_url must be a page of this site ({site}/…).")
    answer = await backends.payments.StartPayoutOnboarding(
        payments_pb2.StartPayoutOnboardingRequest(return_url=return_url, refresh_url=f"{site}/payouts"),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return Onboarding(
        account=PayoutAccount.from_proto(answer.account) if answer.HasField("account") else None,
        onboarding_url=answer.onboarding_url,
    )


@router.post(
    "/api/v1/payments/payout-account/test-complete",
    response_model=PayoutAccountResponse,
    responses=error_responses(401, 403, 409),
    summary="Test mode only: finish payout onboarding as Stripe would (access token of an account); 409 "
    "`not_test_mode` when payments run against Stripe",
)
async def complete_test_onboarding(backends: BackendsDep, token: RequiredToken) -> PayoutAccountResponse:
    answer = await backends.payments.CompleteTestOnboarding(
        payments_pb2.CompleteTestOnboardingRequest(), metadata=auth_metadata(token), timeout=backends.timeout
    )
    return PayoutAccountResponse(account=PayoutAccount.from_proto(answer.account))


async def _room_names(backends: Backends, room_ids: list[str]) -> dict[str, rooms_pb2.Room]:
    """Rooms by id, for naming them; a room that cannot be read now stays unnamed."""

    async def one(room_id: str) -> rooms_pb2.Room | None:
        try:
            answer = await backends.rooms.GetRoom(
                rooms_pb2.GetRoomRequest(room_id=room_id), timeout=backends.timeout
            )
        except grpc.aio.AioRpcError:
            return None
        room: rooms_pb2.Room = answer.room
        return room

    found = await asyncio.gather(*(one(room_id) for room_id in room_ids))
    return {room.id: room for room in found if room is not None}


@router.get(
    "/api/v1/payments/earnings",
    response_model=Earnings,
    responses=error_responses(401),
    summary="What you earned as a host, per room and overall, pins, tips and Back Room seats apart (access "
    "token)",
)
async def earnings(backends: BackendsDep, token: RequiredToken) -> Earnings:
    answer = await backends.payments.GetEarnings(
        payments_pb2.GetEarningsRequest(), metadata=auth_metadata(token), timeout=backends.timeout
    )
    named = await _room_names(backends, [room.room_id for room in answer.rooms[:NAMED_ROOMS_MAX]])
    return Earnings(
        currency=answer.currency,
        pins=Amounts.from_proto(answer.pins),
        tips=Amounts.from_proto(answer.tips),
        seats=Amounts.from_proto(answer.seats),
        total=Amounts.from_proto(answer.total),
        rooms=[
            RoomEarnings(
                room_id=room.room_id,
                room_code=named[room.room_id].code if room.room_id in named else None,
                room_name=named[room.room_id].name if room.room_id in named else None,
                pins=Amounts.from_proto(room.pins),
                tips=Amounts.from_proto(room.tips),
                seats=Amounts.from_proto(room.seats),
                total=Amounts.from_proto(room.total),
            )
            for room in answer.rooms
        ],
    )


# --- admins ----------------------------------------------------------------------------------------


@router.post(
    "/api/v1/admin/orders/{order_id}/refund",
    response_model=RefundResult,
    responses=error_responses(401, 403, 404, 409),
    tags=["admin"],
    summary="Refund a paid or fulfilled order in full (admins); recorded in the audit log as "
    "`payment.refunded`; asking again changes nothing",
)
async def refund_order(
    order_id: OrderId, body: RefundRequest, backends: BackendsDep, token: RequiredToken
) -> RefundResult:
    answer = await backends.payments.RefundOrder(
        payments_pb2.RefundOrderRequest(order_id=order_id, reason=body.reason),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return RefundResult(order=Order.from_proto(answer.order), changed=answer.changed)

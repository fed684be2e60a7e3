"""PaymentsService: authorises and validates each call, then hands it to the capability that owns it
(purchases, events, payouts, sales, refunds, earnings)."""

from __future__ import annotations

import time
import uuid

import asyncpg
import grpc

from chatpop.payments.v1 import payments_pb2, payments_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2_grpc
from chatpop_common.auth import Principal, current_principal, require_principal
from chatpop_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from chatpop_common.service_auth import ServiceCredentials
from chatpop_payments import earnings, orders, refunds
from chatpop_payments.events import EventHandler, EventNotReady
from chatpop_payments.metrics import WEBHOOKS_REFUSED
from chatpop_payments.orders import Order, parse_id
from chatpop_payments.payouts import Payouts
from chatpop_payments.purchases import Purchases
from chatpop_payments.sales import Sales
from chatpop_payments.settings import Settings
from chatpop_payments.webhooks import InvalidSignature, verify

DEFAULT_PAGE = 50
MAX_PAGE = 100


def _access(principal: Principal) -> uuid.UUID:
    if principal.token_type != "access":
        raise Unauthenticated("An access token is required.", code="invalid_token")
    return parse_id(principal.subject, "subject")


def _account(principal: Principal) -> uuid.UUID:
    identity = _access(principal)
    if principal.kind != "user":
        raise PermissionDenied("Payouts need an account: sign up or log in first.", code="account_required")
    return identity


def _not_test_mode() -> FailedPrecondition:
    return FailedPrecondition("Test payments are off: payments run against Stripe.", code="not_test_mode")


class PaymentsServicer(payments_pb2_grpc.PaymentsServiceServicer):
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        events: EventHandler,
        purchases: Purchases,
        payouts: Payouts,
        sales: Sales,
        rooms: rooms_pb2_grpc.RoomsServiceStub,
        credentials: ServiceCredentials,
    ) -> None:
        self._settings = settings
        self._rooms = rooms
        self._credentials = credentials
        self._pool = pool
        self._events = events
        self._purchases = purchases
        self._payouts = payouts
        self._sales = sales

    @property
    def _test_mode(self) -> bool:
        return self._settings.test_mode

    async def GetConfig(
        self, request: payments_pb2.GetConfigRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.GetConfigResponse:
        return payments_pb2.GetConfigResponse(
            mode=payments_pb2.MODE_TEST if self._test_mode else payments_pb2.MODE_STRIPE,
            currency=self._settings.currency,
            publishable_key="" if self._test_mode else self._settings.stripe_publishable_key,
            platform_fee_percent=self._settings.platform_fee_percent,
        )

    # --- payout accounts ------------------------------------------------------------------------

    async def GetPayoutAccount(
        self, request: payments_pb2.GetPayoutAccountRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.GetPayoutAccountResponse:
        principal = require_principal()
        identity = _access(principal)
        if principal.kind != "user":
            return payments_pb2.GetPayoutAccountResponse()
        account = await self._payouts.get(identity, refresh=request.refresh)
        if account is None:
            return payments_pb2.GetPayoutAccountResponse()
        return payments_pb2.GetPayoutAccountResponse(account=account.to_proto())

    async def StartPayoutOnboarding(
        self, request: payments_pb2.StartPayoutOnboardingRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.StartPayoutOnboardingResponse:
        identity = _account(require_principal())
        account, url = await self._payouts.start_onboarding(identity, request.return_url, request.refresh_url)
        return payments_pb2.StartPayoutOnboardingResponse(account=account.to_proto(), onboarding_url=url)

    async def CompleteTestOnboarding(
        self, request: payments_pb2.CompleteTestOnboardingRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.CompleteTestOnboardingResponse:
        identity = _account(require_principal())
        if not self._test_mode:
            raise _not_test_mode()
        account = await self._payouts.complete_test_onboarding(identity)
        return payments_pb2.CompleteTestOnboardingResponse(account=account.to_proto())

    # --- selling --------------------------------------------------------------------------------

    async def GetRoomSales(
        self, request: payments_pb2.GetRoomSalesRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.GetRoomSalesResponse:
        return await self._sales.of_room(request.room_id, current_principal())

    async def CreateOrder(
        self, request: payments_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.CreateOrderResponse:
        order, client_secret, created = await self._purchases.create(require_principal(), request)
        return payments_pb2.CreateOrderResponse(
            order=order.to_proto(), client_secret=client_secret, created=created
        )

    async def _visible_order(self, order_id: str) -> Order:
        """The order when the caller bought it (any token of the buyer's identity) or is an admin."""
        principal = require_principal()
        order = await orders.get(self._pool, parse_id(order_id))
        admin = principal.token_type == "access" and principal.is_admin
        if order is None or not (admin or principal.subject == str(order.buyer_identity_id)):
            raise NotFound("There is no such order.", code="order_not_found")
        return order

    async def GetOrder(
        self, request: payments_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.GetOrderResponse:
        order = await self._visible_order(request.order_id)
        return payments_pb2.GetOrderResponse(order=order.to_proto())

    async def ListMyOrders(
        self, request: payments_pb2.ListMyOrdersRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.ListMyOrdersResponse:
        principal = require_principal()
        if principal.token_type not in ("access", "room"):
            raise Unauthenticated("An access or room token is required.", code="invalid_token")
        limit = request.limit or DEFAULT_PAGE
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument(f"limit must be between 1 and {MAX_PAGE}.", code="invalid_limit")
        before = parse_id(request.before_order_id, "before_order_id") if request.before_order_id else None
        page, more = await orders.list_for_buyer(
            self._pool, parse_id(principal.subject, "subject"), before, limit
        )
        return payments_pb2.ListMyOrdersResponse(orders=[order.to_proto() for order in page], has_more=more)

    async def ConfirmTestPayment(
        self, request: payments_pb2.ConfirmTestPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.ConfirmTestPaymentResponse:
        if not self._test_mode:
            raise _not_test_mode()
        if request.outcome not in (payments_pb2.TEST_OUTCOME_SUCCEED, payments_pb2.TEST_OUTCOME_DECLINE):
            raise InvalidArgument("outcome must be succeed or decline.", code="invalid_outcome")
        order = await self._visible_order(request.order_id)
        if not order.test_mode:
            raise _not_test_mode()
        succeed = request.outcome == payments_pb2.TEST_OUTCOME_SUCCEED
        intent: dict[str, object] = {
            "id": f"pi_test_{order.id.hex}",
            "object": "payment_intent",
            "amount": order.amount_cents,
            "currency": order.currency,
            "status": "succeeded" if succeed else "requires_payment_method",
            "metadata": {"order_id": str(order.id), "kind": order.kind.value, "room_id": str(order.room_id)},
        }
        if not succeed:
            intent["last_payment_error"] = {"code": "card_declined", "message": "Your card was declined."}
        await self._events.handle(
            {
                "id": f"evt_test_{uuid.uuid4().hex}",
                "object": "event",
                "type": "payment_intent.succeeded" if succeed else "payment_intent.payment_failed",
                "created": int(time.time()),
                "livemode": False,
                "data": {"object": intent},
            },
            "test",
        )
        fresh = await orders.get(self._pool, order.id)
        assert fresh is not None
        return payments_pb2.ConfirmTestPaymentResponse(order=fresh.to_proto())

    # --- Stripe's webhook -----------------------------------------------------------------------

    async def HandleStripeWebhook(
        self, request: payments_pb2.HandleStripeWebhookRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.HandleStripeWebhookResponse:
        secret = self._settings.stripe_webhook_secret.get_secret_value()
        if self._test_mode or not secret:
            raise FailedPrecondition(
                "Stripe is not configured: payments run in test mode.", code="not_stripe_mode"
            )
        try:
            event = verify(request.payload, request.signature, secret)
        except InvalidSignature as exc:
            WEBHOOKS_REFUSED.inc()
            raise Unauthenticated(str(exc), code="invalid_signature") from exc
        try:
            handled = await self._events.handle(event, "webhook")
        except EventNotReady as exc:
            raise Unavailable(
                "This event cannot be applied yet; send it again.", code="event_not_ready"
            ) from exc
        return payments_pb2.HandleStripeWebhookResponse(
            event_id=handled.event_id, event_type=handled.event_type, duplicate=handled.duplicate
        )

    # --- hosts and admins -----------------------------------------------------------------------

    async def GetEarnings(
        self, request: payments_pb2.GetEarningsRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.GetEarningsResponse:
        identity = _access(require_principal())
        return await earnings.earnings(
            self._pool, identity, test_mode=self._test_mode, currency=self._settings.currency
        )

    async def RefundOrder(
        self, request: payments_pb2.RefundOrderRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.RefundOrderResponse:
        principal = require_principal()
        if not (principal.token_type == "access" and principal.is_admin):
            raise PermissionDenied("Only ChatPop's admins can refund orders.", code="admin_required")
        reason = refunds.check_reason(request.reason)
        order, changed = await refunds.admin_refund(
            self._pool, parse_id(request.order_id), principal.subject, reason
        )
        if changed:
            self._events.committed()
        return payments_pb2.RefundOrderResponse(order=order.to_proto(), changed=changed)

    async def RefundSeat(
        self, request: payments_pb2.RefundSeatRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.RefundSeatResponse:
        order, changed = await refunds.seat_refund(
            self._pool,
            self._rooms,
            self._credentials,
            require_principal(),
            parse_id(request.room_id, "room_id"),
            parse_id(request.order_id),
        )
        if changed:
            self._events.committed()
        return payments_pb2.RefundSeatResponse(order=order.to_proto(), changed=changed)

import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_STRIPE: _ClassVar[Mode]
    MODE_TEST: _ClassVar[Mode]

class OrderKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_KIND_UNSPECIFIED: _ClassVar[OrderKind]
    ORDER_KIND_PIN: _ClassVar[OrderKind]
    ORDER_KIND_PIN_EXTENSION: _ClassVar[OrderKind]
    ORDER_KIND_TIP: _ClassVar[OrderKind]
    ORDER_KIND_SEAT: _ClassVar[OrderKind]

class OrderState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_STATE_UNSPECIFIED: _ClassVar[OrderState]
    ORDER_STATE_CREATED: _ClassVar[OrderState]
    ORDER_STATE_AWAITING_PAYMENT: _ClassVar[OrderState]
    ORDER_STATE_PAID: _ClassVar[OrderState]
    ORDER_STATE_FULFILLED: _ClassVar[OrderState]
    ORDER_STATE_REFUNDING: _ClassVar[OrderState]
    ORDER_STATE_REFUNDED: _ClassVar[OrderState]
    ORDER_STATE_FAILED: _ClassVar[OrderState]
    ORDER_STATE_CANCELLED: _ClassVar[OrderState]

class TestOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEST_OUTCOME_UNSPECIFIED: _ClassVar[TestOutcome]
    TEST_OUTCOME_SUCCEED: _ClassVar[TestOutcome]
    TEST_OUTCOME_DECLINE: _ClassVar[TestOutcome]
MODE_UNSPECIFIED: Mode
MODE_STRIPE: Mode
MODE_TEST: Mode
ORDER_KIND_UNSPECIFIED: OrderKind
ORDER_KIND_PIN: OrderKind
ORDER_KIND_PIN_EXTENSION: OrderKind
ORDER_KIND_TIP: OrderKind
ORDER_KIND_SEAT: OrderKind
ORDER_STATE_UNSPECIFIED: OrderState
ORDER_STATE_CREATED: OrderState
ORDER_STATE_AWAITING_PAYMENT: OrderState
ORDER_STATE_PAID: OrderState
ORDER_STATE_FULFILLED: OrderState
ORDER_STATE_REFUNDING: OrderState
ORDER_STATE_REFUNDED: OrderState
ORDER_STATE_FAILED: OrderState
ORDER_STATE_CANCELLED: OrderState
TEST_OUTCOME_UNSPECIFIED: TestOutcome
TEST_OUTCOME_SUCCEED: TestOutcome
TEST_OUTCOME_DECLINE: TestOutcome

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("mode", "currency", "publishable_key", "platform_fee_percent")
    MODE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PUBLISHABLE_KEY_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FEE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    mode: Mode
    currency: str
    publishable_key: str
    platform_fee_percent: int
    def __init__(self, mode: _Optional[_Union[Mode, str]] = ..., currency: _Optional[str] = ..., publishable_key: _Optional[str] = ..., platform_fee_percent: _Optional[int] = ...) -> None: ...

class PayoutAccount(_message.Message):
    __slots__ = ("stripe_account_id", "details_submitted", "charges_enabled", "payouts_enabled", "can_receive", "updated_at", "test_mode")
    STRIPE_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    CHARGES_ENABLED_FIELD_NUMBER: _ClassVar[int]
    PAYOUTS_ENABLED_FIELD_NUMBER: _ClassVar[int]
    CAN_RECEIVE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    TEST_MODE_FIELD_NUMBER: _ClassVar[int]
    stripe_account_id: str
    details_submitted: bool
    charges_enabled: bool
    payouts_enabled: bool
    can_receive: bool
    updated_at: _timestamp_pb2.Timestamp
    test_mode: bool
    def __init__(self, stripe_account_id: _Optional[str] = ..., details_submitted: _Optional[bool] = ..., charges_enabled: _Optional[bool] = ..., payouts_enabled: _Optional[bool] = ..., can_receive: _Optional[bool] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., test_mode: _Optional[bool] = ...) -> None: ...

class GetPayoutAccountRequest(_message.Message):
    __slots__ = ("refresh",)
    REFRESH_FIELD_NUMBER: _ClassVar[int]
    refresh: bool
    def __init__(self, refresh: _Optional[bool] = ...) -> None: ...

class GetPayoutAccountResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: PayoutAccount
    def __init__(self, account: _Optional[_Union[PayoutAccount, _Mapping]] = ...) -> None: ...

class StartPayoutOnboardingRequest(_message.Message):
    __slots__ = ("return_url", "refresh_url")
    RETURN_URL_FIELD_NUMBER: _ClassVar[int]
    REFRESH_URL_FIELD_NUMBER: _ClassVar[int]
    return_url: str
    refresh_url: str
    def __init__(self, return_url: _Optional[str] = ..., refresh_url: _Optional[str] = ...) -> None: ...

class StartPayoutOnboardingResponse(_message.Message):
    __slots__ = ("account", "onboarding_url")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ONBOARDING_URL_FIELD_NUMBER: _ClassVar[int]
    account: PayoutAccount
    onboarding_url: str
    def __init__(self, account: _Optional[_Union[PayoutAccount, _Mapping]] = ..., onboarding_url: _Optional[str] = ...) -> None: ...

class CompleteTestOnboardingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CompleteTestOnboardingResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: PayoutAccount
    def __init__(self, account: _Optional[_Union[PayoutAccount, _Mapping]] = ...) -> None: ...

class PinTier(_message.Message):
    __slots__ = ("amount_cents", "minutes")
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    MINUTES_FIELD_NUMBER: _ClassVar[int]
    amount_cents: int
    minutes: int
    def __init__(self, amount_cents: _Optional[int] = ..., minutes: _Optional[int] = ...) -> None: ...

class GetRoomSalesRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class GetRoomSalesResponse(_message.Message):
    __slots__ = ("enabled", "disabled_reason", "currency", "pin_tiers", "tip_presets_cents", "tip_min_cents", "tip_max_cents", "mode")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    DISABLED_REASON_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PIN_TIERS_FIELD_NUMBER: _ClassVar[int]
    TIP_PRESETS_CENTS_FIELD_NUMBER: _ClassVar[int]
    TIP_MIN_CENTS_FIELD_NUMBER: _ClassVar[int]
    TIP_MAX_CENTS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    disabled_reason: str
    currency: str
    pin_tiers: _containers.RepeatedCompositeFieldContainer[PinTier]
    tip_presets_cents: _containers.RepeatedScalarFieldContainer[int]
    tip_min_cents: int
    tip_max_cents: int
    mode: Mode
    def __init__(self, enabled: _Optional[bool] = ..., disabled_reason: _Optional[str] = ..., currency: _Optional[str] = ..., pin_tiers: _Optional[_Iterable[_Union[PinTier, _Mapping]]] = ..., tip_presets_cents: _Optional[_Iterable[int]] = ..., tip_min_cents: _Optional[int] = ..., tip_max_cents: _Optional[int] = ..., mode: _Optional[_Union[Mode, str]] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("id", "kind", "state", "room_id", "buyer_participant_id", "buyer_identity_id", "host_identity_id", "amount_cents", "fee_cents", "currency", "target_seq", "pin_id", "note", "payment_error", "refund_reason", "refund_message", "stripe_payment_intent_id", "test_mode", "created_at", "updated_at", "fulfilled_seq")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    BUYER_PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    BUYER_IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    FEE_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    TARGET_SEQ_FIELD_NUMBER: _ClassVar[int]
    PIN_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ERROR_FIELD_NUMBER: _ClassVar[int]
    REFUND_REASON_FIELD_NUMBER: _ClassVar[int]
    REFUND_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STRIPE_PAYMENT_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_MODE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FULFILLED_SEQ_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: OrderKind
    state: OrderState
    room_id: str
    buyer_participant_id: str
    buyer_identity_id: str
    host_identity_id: str
    amount_cents: int
    fee_cents: int
    currency: str
    target_seq: int
    pin_id: str
    note: str
    payment_error: str
    refund_reason: str
    refund_message: str
    stripe_payment_intent_id: str
    test_mode: bool
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    fulfilled_seq: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[OrderKind, str]] = ..., state: _Optional[_Union[OrderState, str]] = ..., room_id: _Optional[str] = ..., buyer_participant_id: _Optional[str] = ..., buyer_identity_id: _Optional[str] = ..., host_identity_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., fee_cents: _Optional[int] = ..., currency: _Optional[str] = ..., target_seq: _Optional[int] = ..., pin_id: _Optional[str] = ..., note: _Optional[str] = ..., payment_error: _Optional[str] = ..., refund_reason: _Optional[str] = ..., refund_message: _Optional[str] = ..., stripe_payment_intent_id: _Optional[str] = ..., test_mode: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fulfilled_seq: _Optional[int] = ...) -> None: ...

class PinPurchase(_message.Message):
    __slots__ = ("target_seq", "tier_cents")
    TARGET_SEQ_FIELD_NUMBER: _ClassVar[int]
    TIER_CENTS_FIELD_NUMBER: _ClassVar[int]
    target_seq: int
    tier_cents: int
    def __init__(self, target_seq: _Optional[int] = ..., tier_cents: _Optional[int] = ...) -> None: ...

class PinExtension(_message.Message):
    __slots__ = ("pin_id", "tier_cents")
    PIN_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_CENTS_FIELD_NUMBER: _ClassVar[int]
    pin_id: str
    tier_cents: int
    def __init__(self, pin_id: _Optional[str] = ..., tier_cents: _Optional[int] = ...) -> None: ...

class TipPurchase(_message.Message):
    __slots__ = ("amount_cents", "note")
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    amount_cents: int
    note: str
    def __init__(self, amount_cents: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class SeatPurchase(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateOrderRequest(_message.Message):
    __slots__ = ("room_id", "idempotency_key", "pin", "extension", "tip", "seat")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PIN_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    TIP_FIELD_NUMBER: _ClassVar[int]
    SEAT_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    idempotency_key: str
    pin: PinPurchase
    extension: PinExtension
    tip: TipPurchase
    seat: SeatPurchase
    def __init__(self, room_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., pin: _Optional[_Union[PinPurchase, _Mapping]] = ..., extension: _Optional[_Union[PinExtension, _Mapping]] = ..., tip: _Optional[_Union[TipPurchase, _Mapping]] = ..., seat: _Optional[_Union[SeatPurchase, _Mapping]] = ...) -> None: ...

class CreateOrderResponse(_message.Message):
    __slots__ = ("order", "client_secret", "created")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    order: Order
    client_secret: str
    created: bool
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ..., client_secret: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class GetOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: Order
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...

class ListMyOrdersRequest(_message.Message):
    __slots__ = ("before_order_id", "limit")
    BEFORE_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    before_order_id: str
    limit: int
    def __init__(self, before_order_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListMyOrdersResponse(_message.Message):
    __slots__ = ("orders", "has_more")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[Order]
    has_more: bool
    def __init__(self, orders: _Optional[_Iterable[_Union[Order, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class ConfirmTestPaymentRequest(_message.Message):
    __slots__ = ("order_id", "outcome")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    outcome: TestOutcome
    def __init__(self, order_id: _Optional[str] = ..., outcome: _Optional[_Union[TestOutcome, str]] = ...) -> None: ...

class ConfirmTestPaymentResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: Order
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...

class HandleStripeWebhookRequest(_message.Message):
    __slots__ = ("payload", "signature")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    signature: str
    def __init__(self, payload: _Optional[bytes] = ..., signature: _Optional[str] = ...) -> None: ...

class HandleStripeWebhookResponse(_message.Message):
    __slots__ = ("event_id", "event_type", "duplicate")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    duplicate: bool
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class Amounts(_message.Message):
    __slots__ = ("gross_cents", "fee_cents", "net_cents", "refunded_cents", "count")
    GROSS_CENTS_FIELD_NUMBER: _ClassVar[int]
    FEE_CENTS_FIELD_NUMBER: _ClassVar[int]
    NET_CENTS_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_CENTS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    gross_cents: int
    fee_cents: int
    net_cents: int
    refunded_cents: int
    count: int
    def __init__(self, gross_cents: _Optional[int] = ..., fee_cents: _Optional[int] = ..., net_cents: _Optional[int] = ..., refunded_cents: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class RoomEarnings(_message.Message):
    __slots__ = ("room_id", "pins", "tips", "total", "seats")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PINS_FIELD_NUMBER: _ClassVar[int]
    TIPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SEATS_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    pins: Amounts
    tips: Amounts
    total: Amounts
    seats: Amounts
    def __init__(self, room_id: _Optional[str] = ..., pins: _Optional[_Union[Amounts, _Mapping]] = ..., tips: _Optional[_Union[Amounts, _Mapping]] = ..., total: _Optional[_Union[Amounts, _Mapping]] = ..., seats: _Optional[_Union[Amounts, _Mapping]] = ...) -> None: ...

class GetEarningsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetEarningsResponse(_message.Message):
    __slots__ = ("currency", "pins", "tips", "total", "rooms", "seats")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PINS_FIELD_NUMBER: _ClassVar[int]
    TIPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    SEATS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    pins: Amounts
    tips: Amounts
    total: Amounts
    rooms: _containers.RepeatedCompositeFieldContainer[RoomEarnings]
    seats: Amounts
    def __init__(self, currency: _Optional[str] = ..., pins: _Optional[_Union[Amounts, _Mapping]] = ..., tips: _Optional[_Union[Amounts, _Mapping]] = ..., total: _Optional[_Union[Amounts, _Mapping]] = ..., rooms: _Optional[_Iterable[_Union[RoomEarnings, _Mapping]]] = ..., seats: _Optional[_Union[Amounts, _Mapping]] = ...) -> None: ...

class RefundOrderRequest(_message.Message):
    __slots__ = ("order_id", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RefundOrderResponse(_message.Message):
    __slots__ = ("order", "changed")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    order: Order
    changed: bool
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class RefundSeatRequest(_message.Message):
    __slots__ = ("room_id", "order_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    order_id: str
    def __init__(self, room_id: _Optional[str] = ..., order_id: _Optional[str] = ...) -> None: ...

class RefundSeatResponse(_message.Message):
    __slots__ = ("order", "changed")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    order: Order
    changed: bool
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

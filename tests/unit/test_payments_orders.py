"""payments in-process: how orders move (forward only), how they are priced, how a webhook's
signature and time are checked, and the settings that must hold together."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from chatpop.payments.v1 import payments_pb2
from chatpop_common.errors import InvalidArgument
from chatpop_payments import purchases, states
from chatpop_payments.payouts import stand_in_onboarding_url
from chatpop_payments.settings import Settings
from chatpop_payments.states import FINAL, State, can_move, sources
from chatpop_payments.webhooks import FUTURE_LIMIT, TOLERANCE, InvalidSignature, verify

SECRET = "s" * 40
LIMITS = {"fee_percent": 10, "tip_min_cents": 100, "tip_max_cents": 50_000}

# --- states -----------------------------------------------------------------------------------------

ORDER = [
    State.CREATED,
    State.AWAITING_PAYMENT,
    State.PAID,
    State.FULFILLED,
    State.REFUNDING,
    State.REFUNDED,
]


def test_the_happy_paths_move_forward() -> None:
    assert can_move(State.CREATED, State.AWAITING_PAYMENT)
    assert can_move(State.AWAITING_PAYMENT, State.PAID)
    assert can_move(State.PAID, State.FULFILLED)
    assert can_move(State.PAID, State.REFUNDING)
    assert can_move(State.FULFILLED, State.REFUNDING)
    assert can_move(State.REFUNDING, State.REFUNDED)
    # A payment that arrived before the order learned its PaymentIntent still counts.
    assert can_move(State.CREATED, State.PAID)


def test_no_state_moves_back() -> None:
    for earlier, later in itertools.combinations(ORDER, 2):
        assert not can_move(later, earlier), (later, earlier)
    for state in State:
        assert not can_move(state, state)


def test_final_states_have_no_way_out_and_unpaid_ones_cannot_be_refunded() -> None:
    assert {State.REFUNDED, State.FAILED, State.CANCELLED} == FINAL
    for final, target in itertools.product(FINAL, State):
        assert not can_move(final, target)
    for unpaid in (State.CREATED, State.AWAITING_PAYMENT):
        assert not can_move(unpaid, State.REFUNDING)
        assert not can_move(unpaid, State.REFUNDED)
    # Money that arrived is never "cancelled" or "failed" afterwards.
    for paid in (State.PAID, State.FULFILLED, State.REFUNDING):
        assert not can_move(paid, State.CANCELLED)
        assert not can_move(paid, State.FAILED)


def test_sources_name_exactly_the_states_a_move_may_start_from() -> None:
    assert sources(State.PAID) == ["awaiting_payment", "created"]
    assert sources(State.REFUNDING) == ["fulfilled", "paid"]
    assert sources(State.REFUNDED) == ["refunding"]
    assert sources(State.CREATED) == []
    for target in State:
        assert {State(s) for s in sources(target)} == {a for a, b in states.TRANSITIONS if b == target}


def test_every_state_and_kind_has_its_proto() -> None:
    assert len(set(states.STATE_TO_PROTO.values())) == len(State)
    assert payments_pb2.ORDER_STATE_UNSPECIFIED not in states.STATE_TO_PROTO.values()
    assert len(set(states.KIND_TO_PROTO.values())) == len(states.Kind)


# --- pricing ----------------------------------------------------------------------------------------


def _request(**item: Any) -> payments_pb2.CreateOrderRequest:
    return payments_pb2.CreateOrderRequest(room_id=str(uuid.uuid4()), idempotency_key="k" * 12, **item)


def test_a_pin_costs_its_tier_and_the_fee_is_the_platforms_share() -> None:
    item = purchases.price(_request(pin=payments_pb2.PinPurchase(target_seq=7, tier_cents=500)), **LIMITS)
    assert (item.kind, item.amount_cents, item.fee_cents, item.target_seq) == (states.Kind.PIN, 500, 50, 7)
    cheap = purchases.price(
        _request(pin=payments_pb2.PinPurchase(target_seq=1, tier_cents=100)),
        fee_percent=15,
        tip_min_cents=100,
        tip_max_cents=50_000,
    )
    # 15% of 100 is 15 cents exactly; the host gets 85.
    assert (cheap.amount_cents, cheap.fee_cents) == (100, 15)


@pytest.mark.parametrize("cents", [0, 99, 150, 300, 2100, 20_500, -100])
def test_only_tier_amounts_buy_a_pin_or_an_extension(cents: int) -> None:
    with pytest.raises(InvalidArgument) as pin:
        purchases.price(_request(pin=payments_pb2.PinPurchase(target_seq=3, tier_cents=cents)), **LIMITS)
    assert pin.value.code == "unknown_tier"
    extension = payments_pb2.PinExtension(pin_id=str(uuid.uuid4()), tier_cents=cents)
    with pytest.raises(InvalidArgument) as extend:
        purchases.price(_request(extension=extension), **LIMITS)
    assert extend.value.code == "unknown_tier"


def test_a_pin_names_a_message_and_an_extension_names_a_pin() -> None:
    with pytest.raises(InvalidArgument) as no_message:
        purchases.price(_request(pin=payments_pb2.PinPurchase(target_seq=0, tier_cents=100)), **LIMITS)
    assert no_message.value.code == "invalid_target_seq"
    with pytest.raises(InvalidArgument) as no_pin:
        purchases.price(
            _request(extension=payments_pb2.PinExtension(pin_id="nope", tier_cents=100)), **LIMITS
        )
    assert no_pin.value.code == "invalid_pin_id"
    pin_id = uuid.uuid4()
    extension = purchases.price(
        _request(extension=payments_pb2.PinExtension(pin_id=str(pin_id), tier_cents=1000)), **LIMITS
    )
    assert (extension.kind, extension.pin_id, extension.amount_cents, extension.fee_cents) == (
        states.Kind.PIN_EXTENSION,
        pin_id,
        1000,
        100,
    )


@pytest.mark.parametrize(
    ("cents", "ok"), [(99, False), (100, True), (1234, True), (50_000, True), (50_001, False)]
)
def test_a_tip_lies_within_the_bounds(cents: int, ok: bool) -> None:
    request = _request(tip=payments_pb2.TipPurchase(amount_cents=cents, note=""))
    if ok:
        item = purchases.price(request, **LIMITS)
        assert (item.kind, item.amount_cents) == (states.Kind.TIP, cents)
        # Rounded half up to the cent: 10% of 1234 is 123.4 -> 123.
        assert item.fee_cents == {100: 10, 1234: 123, 50_000: 5000}[cents]
    else:
        with pytest.raises(InvalidArgument) as refused:
            purchases.price(request, **LIMITS)
        assert refused.value.code == "tip_out_of_bounds"


def test_a_tip_note_is_checked_like_a_message() -> None:
    tip = purchases.price(
        _request(tip=payments_pb2.TipPurchase(amount_cents=200, note="  thanks!\n  ")), **LIMITS
    )
    assert tip.note == "thanks!"
    assert purchases.price(_request(tip=payments_pb2.TipPurchase(amount_cents=200)), **LIMITS).note == ""
    assert len(purchases.tip_note("é" * 200)) == 200
    with pytest.raises(InvalidArgument) as long:
        purchases.tip_note("x" * 201)
    assert long.value.code == "note_too_long"
    with pytest.raises(InvalidArgument) as control:
        purchases.tip_note("bell\x07")
    assert control.value.code == "note_invalid_characters"


def test_an_order_must_name_what_it_buys_and_carry_a_key() -> None:
    with pytest.raises(InvalidArgument) as nothing:
        purchases.price(_request(), **LIMITS)
    assert nothing.value.code == "item_required"
    for bad in ("short", "x" * 65, "has space!", ""):
        with pytest.raises(InvalidArgument):
            purchases.idempotency_key(bad)
    assert (
        purchases.idempotency_key("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")
        == "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
    )


# --- webhook signatures -----------------------------------------------------------------------------


def _signed(payload: bytes, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


EVENT = json.dumps(
    {"id": "evt_1", "object": "event", "type": "payment_intent.succeeded", "data": {"object": {}}}
)


def test_a_signed_recent_event_verifies() -> None:
    now = time.time()
    event = verify(EVENT.encode(), _signed(EVENT.encode(), "whsec_abc", int(now)), "whsec_abc", now=now)
    assert (event["id"], event["type"]) == ("evt_1", "payment_intent.succeeded")


@pytest.mark.parametrize(
    "case", ["wrong_secret", "tampered", "future", "stale", "no_header", "no_timestamp", "not_json"]
)
def test_anything_else_is_refused(case: str) -> None:
    now = int(time.time())
    payload = EVENT.encode()
    header = _signed(payload, "whsec_abc", now)
    if case == "wrong_secret":
        header = _signed(payload, "whsec_other", now)
    elif case == "tampered":
        payload = payload.replace(b"evt_1", b"evt_2")
    elif case == "future":
        header = _signed(payload, "whsec_abc", now + FUTURE_LIMIT + 30)
    elif case == "stale":
        header = _signed(payload, "whsec_abc", now - TOLERANCE - 30)
    elif case == "no_header":
        header = ""
    elif case == "no_timestamp":
        header = header.split(",", 1)[1]
    elif case == "not_json":
        payload = b"\xff\xfe not json"
        header = _signed(payload, "whsec_abc", now)
    with pytest.raises(InvalidSignature):
        verify(payload, header, "whsec_abc", now=now)


def test_a_little_clock_skew_is_tolerated() -> None:
    now = int(time.time())
    ahead = _signed(EVENT.encode(), "whsec_abc", now + FUTURE_LIMIT - 20)
    assert verify(EVENT.encode(), ahead, "whsec_abc", now=now)["id"] == "evt_1"


# --- settings and onboarding links ------------------------------------------------------------------


def _settings(**values: Any) -> Settings:
    return Settings.model_validate(
        {"database_url": "postgresql://x/y", "service_token_secret": SECRET, **values}
    )


def test_test_mode_needs_no_stripe_setting_and_has_the_documented_defaults() -> None:
    settings = _settings()
    assert settings.test_mode
    assert (settings.platform_fee_percent, settings.tip_min_cents, settings.tip_max_cents) == (
        10,
        100,
        50_000,
    )
    assert settings.tip_presets_cents == (100, 200, 500, 1000)
    assert settings.reconcile_interval == 60
    assert settings.stripe_api_base == "https://api.stripe.com"


def test_a_secret_key_needs_the_publishable_key_and_the_webhook_secret() -> None:
    with pytest.raises(ValidationError, match="STRIPE_WEBHOOK_SECRET"):
        _settings(stripe_secret_key="sk_test_1", stripe_publishable_key="pk_test_1")
    with pytest.raises(ValidationError, match="STRIPE_PUBLISHABLE_KEY"):
        _settings(stripe_secret_key="sk_test_1", stripe_webhook_secret="whsec_1")
    with pytest.raises(ValidationError, match="STRIPE_SECRET_KEY is not"):
        _settings(stripe_webhook_secret="whsec_1")
    settings = _settings(
        stripe_secret_key="sk_test_1",
        stripe_publishable_key="pk_test_1",
        stripe_webhook_secret="whsec_1",
        stripe_api_base="http://127.0.0.1:12111/",
    )
    assert not settings.test_mode
    assert settings.stripe_api_base == "http://127.0.0.1:12111"


@pytest.mark.parametrize(
    "values",
    [
        {"service_token_secret": "short"},
        {"stripe_api_base": "ftp://stripe"},
        {"stripe_api_base": "https://api.stripe.com/v1"},
        {"platform_fee_percent": 101},
        {"tip_min_cents": 49},
        {"tip_min_cents": 600, "tip_max_cents": 500},
        {"tip_presets_cents": "100,abc"},
        {"tip_presets_cents": "50"},
        {"tip_presets_cents": "100,60000"},
    ],
)
def test_bad_settings_fail_at_start_up(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _settings(**values)


def test_tip_presets_come_from_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIP_PRESETS_CENTS", "500, 100,300")
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("SERVICE_TOKEN_SECRET", SECRET)
    assert Settings().tip_presets_cents == (100, 300, 500)  # type: ignore[call-arg]


def test_test_onboarding_sends_the_host_to_the_web_clients_page_on_the_same_site() -> None:
    url = stand_in_onboarding_url("https://chat.example/payouts?returned=1")
    assert (
        url
        == "https://chat.example/payouts/test-onboarding?return_url=https%3A%2F%2Fchat.example%2Fpayouts%3Freturned%3D1"
    )

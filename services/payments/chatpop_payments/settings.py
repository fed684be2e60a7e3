"""payments settings, read from the environment and validated at start-up."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from chatpop_common.service_auth import check_secret
from chatpop_common.settings import ServiceAddresses, ServiceSettings

STRIPE_API_BASE = "https://api.stripe.com"
# Stripe's smallest charge in most currencies is 50 cents; a tip below it could never be paid.
STRIPE_MIN_CHARGE_CENTS = 50


class Settings(ServiceSettings, ServiceAddresses):
    """GRPC_PORT, METRICS_PORT, DATABASE_URL (required), SERVICE_TOKEN_SECRET (required), STRIPE_*
    (optional: without STRIPE_SECRET_KEY payments run in test mode), CURRENCY, PLATFORM_FEE_PERCENT,
    TIP_MIN_CENTS, TIP_MAX_CENTS, TIP_PRESETS_CENTS, RECONCILE_INTERVAL, LEDGER_METRICS_INTERVAL,
    IDENTITY_ADDR, ROOMS_ADDR, MESSAGING_ADDR."""

    grpc_port: int = Field(7104, ge=0, le=65535)
    metrics_port: int = Field(9104, ge=0, le=65535)
    database_url: str = Field(..., min_length=1)
    # Without a secret key payments run in the clearly labelled local test mode (no Stripe calls).
    stripe_secret_key: SecretStr = SecretStr("")
    stripe_publishable_key: str = ""
    # The signing secret of the webhook endpoint (whsec_…); required with a secret key.
    stripe_webhook_secret: SecretStr = SecretStr("")
    # Where the Stripe API is reached: Stripe's own unless tests point it at a local fake.
    stripe_api_base: str = STRIPE_API_BASE
    currency: str = "usd"
    # The platform's share of every payment, in percent (Stripe's application fee).
    platform_fee_percent: int = Field(10, ge=0, le=100)
    # Bounds of a tip and the amounts offered as presets, in cents.
    tip_min_cents: int = Field(100, ge=STRIPE_MIN_CHARGE_CENTS)
    tip_max_cents: int = Field(50_000, ge=STRIPE_MIN_CHARGE_CENTS, le=99_999_999)
    tip_presets_cents: Annotated[tuple[int, ...], NoDecode] = (100, 200, 500, 1000)
    # Seconds between two rounds of reconciliation with Stripe's list of events (Stripe mode only).
    reconcile_interval: float = Field(60.0, gt=0)
    # Seconds between counts of the orders by state for the chatpop_payments gauge.
    ledger_metrics_interval: float = Field(15.0, gt=0)
    # Shared secret with which payments proves itself to identity for its service token (asking
    # rooms and messaging, fulfilment, audit events); at least 32 characters, the same everywhere.
    service_token_secret: SecretStr

    @field_validator("currency")
    @classmethod
    def _currency_is_iso(cls, value: str) -> str:
        code = value.strip().lower()
        if len(code) != 3 or not code.isascii() or not code.isalpha():
            raise ValueError("must be a three-letter ISO 4217 code such as usd")
        return code

    @field_validator("stripe_publishable_key")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("stripe_secret_key", "stripe_webhook_secret")
    @classmethod
    def _strip_secret(cls, value: SecretStr) -> SecretStr:
        return SecretStr(value.get_secret_value().strip())

    @field_validator("stripe_api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        base = value.strip().rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise ValueError("must be an http(s) URL without a path, such as https://api.stripe.com")
        return base

    @field_validator("service_token_secret")
    @classmethod
    def _service_token_secret(cls, value: SecretStr) -> SecretStr:
        check_secret(value.get_secret_value())
        return value

    @field_validator("tip_presets_cents", mode="before")
    @classmethod
    def _presets(cls, value: Any) -> Any:
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",") if item.strip()]
            if not all(item.isdigit() for item in items):
                raise ValueError("must be whole numbers of cents separated by commas, such as 100,200,500")
            return tuple(int(item) for item in items)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.tip_min_cents > self.tip_max_cents:
            raise ValueError("TIP_MIN_CENTS must not be above TIP_MAX_CENTS")
        if len(self.tip_presets_cents) > 8:
            raise ValueError("TIP_PRESETS_CENTS takes at most 8 amounts")
        outside = [p for p in self.tip_presets_cents if not self.tip_min_cents <= p <= self.tip_max_cents]
        if outside:
            raise ValueError("TIP_PRESETS_CENTS must lie between TIP_MIN_CENTS and TIP_MAX_CENTS")
        self.tip_presets_cents = tuple(sorted(set(self.tip_presets_cents)))
        secret_key = self.stripe_secret_key.get_secret_value()
        if not secret_key:
            if self.stripe_publishable_key:
                raise ValueError("STRIPE_PUBLISHABLE_KEY is set but STRIPE_SECRET_KEY is not")
            if self.stripe_webhook_secret.get_secret_value():
                raise ValueError("STRIPE_WEBHOOK_SECRET is set but STRIPE_SECRET_KEY is not")
            return self
        if not secret_key.startswith(("sk_", "rk_")):
            raise ValueError("STRIPE_SECRET_KEY must be a Stripe secret or restricted key (sk_… or rk_…)")
        if not self.stripe_publishable_key.startswith("pk_"):
            raise ValueError("STRIPE_PUBLISHABLE_KEY (pk_…) is required when STRIPE_SECRET_KEY is set")
        if not self.stripe_webhook_secret.get_secret_value().startswith("whsec_"):
            raise ValueError("STRIPE_WEBHOOK_SECRET (whsec_…) is required when STRIPE_SECRET_KEY is set")
        return self

    @property
    def test_mode(self) -> bool:
        return not self.stripe_secret_key.get_secret_value()

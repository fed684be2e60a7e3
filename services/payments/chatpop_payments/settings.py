"""payments settings, read from the environment and validated at start-up."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from chatpop_common.settings import ServiceAddresses, ServiceSettings


class Settings(ServiceSettings, ServiceAddresses):
    """GRPC_PORT, METRICS_PORT, DATABASE_URL (required), STRIPE_* (optional), CURRENCY,
    LEDGER_METRICS_INTERVAL."""

    grpc_port: int = Field(7104, ge=0, le=65535)
    metrics_port: int = Field(9104, ge=0, le=65535)
    database_url: str = Field(..., min_length=1)
    # Without a secret key payments run in the clearly labelled local test mode (no Stripe calls).
    stripe_secret_key: str = ""
    stripe_publishable_key: str = ""
    currency: str = "usd"
    # Seconds between counts of the ledger by state for the chatpop_payments gauge.
    ledger_metrics_interval: float = Field(15.0, gt=0)

    @field_validator("currency")
    @classmethod
    def _currency_is_iso(cls, value: str) -> str:
        code = value.strip().lower()
        if len(code) != 3 or not code.isascii() or not code.isalpha():
            raise ValueError("must be a three-letter ISO 4217 code such as usd")
        return code

    @field_validator("stripe_secret_key", "stripe_publishable_key")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _stripe_keys_match(self) -> Settings:
        if not self.stripe_secret_key:
            if self.stripe_publishable_key:
                raise ValueError("STRIPE_PUBLISHABLE_KEY is set but STRIPE_SECRET_KEY is not")
            return self
        if not self.stripe_secret_key.startswith(("sk_", "rk_")):
            raise ValueError("STRIPE_SECRET_KEY must be a Stripe secret or restricted key (sk_… or rk_…)")
        if not self.stripe_publishable_key.startswith("pk_"):
            raise ValueError("STRIPE_PUBLISHABLE_KEY (pk_…) is required when STRIPE_SECRET_KEY is set")
        return self

    @property
    def test_mode(self) -> bool:
        return not self.stripe_secret_key

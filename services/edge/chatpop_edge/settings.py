"""The edge's settings, read from the environment and validated at start-up (fail fast)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from chatpop_common.settings import ServiceAddresses

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EdgeSettings(ServiceAddresses):
    """HTTP/WebSocket front settings plus where the four services listen."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    # Base of the links handed out for rooms (`{public_url}/c/{code}`).
    public_url: str = "http://localhost:8080"
    # Socket peers whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated CIDRs).
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    # Secret for HMAC-SHA256 of client IPs: services only ever see the keyed hash.
    ip_hash_key: SecretStr
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|text)$")
    # Deadline for every unary call to a service.
    rpc_timeout: float = Field(default=5.0, gt=0)
    # How long GET /.well-known/jwks.json reuses identity's answer.
    jwks_cache_seconds: float = Field(default=60.0, ge=0)
    # Frames a socket may have waiting before it is closed as too slow (1013, reconnect and resume).
    ws_queue_limit: int = Field(default=1000, ge=10)
    # Most messages a resume backfills before the client is told to reload.
    resume_limit: int = Field(default=500, ge=1, le=10_000)
    # Minimum seconds between two typing frames relayed for one socket.
    typing_interval: float = Field(default=2.0, ge=0)
    # A socket the edge heard nothing from (no frame at all, pings included) for this long is closed
    # (4408): clients ping every few seconds, so only half-dead connections reach it.
    ws_idle_timeout: float = Field(default=30.0, ge=1)
    # Seconds between refreshes of what this process reports as online, and how long a report lives
    # at messaging without one: a process killed without a goodbye drops out after presence_ttl.
    presence_refresh: float = Field(default=10.0, gt=0)
    presence_ttl: int = Field(default=30, ge=2, le=3600)
    # Seconds open connections get to finish on SIGTERM.
    shutdown_grace: float = Field(default=10.0, ge=0)
    # The built web client (index.html + assets/); unset: services/edge/web/dist from `make web`.
    web_root: Path | None = None

    @model_validator(mode="after")
    def _presence_ttl_outlives_refreshes(self) -> EdgeSettings:
        if self.presence_ttl < 2 * self.presence_refresh:
            raise ValueError(
                "PRESENCE_TTL must be at least twice PRESENCE_REFRESH, so one late refresh is not fatal"
            )
        return self

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("PUBLIC_URL must start with http:// or https://")
        return value

    @field_validator("ip_hash_key")
    @classmethod
    def _ip_hash_key(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("IP_HASH_KEY must be a secret of at least 16 characters")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list | tuple):
            networks: list[IPNetwork] = []
            for item in value:
                try:
                    networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
                except ValueError as exc:
                    raise ValueError(f"TRUSTED_PROXIES: {item!r} is not an IP address or CIDR") from exc
            return tuple(networks)
        return value

    @property
    def ip_hash_secret(self) -> bytes:
        return self.ip_hash_key.get_secret_value().encode()

"""Typed settings read from the environment and validated at start-up (fail fast)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every gRPC service shares. Each service subclasses it with its own prefix-free fields."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(..., ge=0, le=65535)
    metrics_port: int = Field(..., ge=0, le=65535)
    database_url: str = ""
    redis_url: str = ""
    log_level: str = "INFO"
    log_format: str = Field("json", pattern="^(json|text)$")
    # Seconds in-flight RPCs get to finish after SIGTERM.
    shutdown_grace: float = Field(10.0, ge=0)
    db_pool_min: int = Field(1, ge=0)
    db_pool_max: int = Field(10, ge=1)
    # Seconds a new Postgres connection may take before the attempt counts as failed.
    db_connect_timeout: float = Field(3.0, gt=0)
    # Seconds a call that met a passing datastore failure keeps being retried (within its deadline)
    # before it is answered UNAVAILABLE; 0 answers at once.
    transient_retry_seconds: float = Field(3.0, ge=0)
    # Readiness: datastores are probed every interval; this many failures in a row of a required one
    # turn the service NOT_SERVING, the first success turns it back.
    readiness_interval: float = Field(1.0, gt=0)
    readiness_failures: int = Field(3, ge=1)
    readiness_probe_timeout: float = Field(2.0, gt=0)


class ServiceAddresses(BaseSettings):
    """Where the other services listen (host:port). Used by whoever calls them."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    identity_addr: str = "127.0.0.1:7101"
    rooms_addr: str = "127.0.0.1:7102"
    messaging_addr: str = "127.0.0.1:7103"
    payments_addr: str = "127.0.0.1:7104"

"""Typed settings read from the environment and validated at start-up (fail fast)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

SettingsT = TypeVar("SettingsT", bound=BaseSettings)

# The exit status of a process whose settings are invalid: `make run` stops at once on it instead
# of starting the process again.
INVALID_SETTINGS_EXIT = 2


def load_settings(name: str, factory: Callable[[], SettingsT]) -> SettingsT:
    """The process's settings from the environment; invalid ones end it with a message naming each
    variable (never its value, which may be a secret) and exit status 2."""
    try:
        return factory()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']).upper() or 'SETTINGS'}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        print(f"{name}: invalid settings: {problems}", file=sys.stderr)
        raise SystemExit(INVALID_SETTINGS_EXIT) from None


class ServiceSettings(BaseSettings):
    """Settings every gRPC service shares. Each service subclasses it with its own prefix-free fields."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(..., ge=0, le=65535)
    metrics_port: int = Field(..., ge=0, le=65535)
    database_url: str = ""
    redis_url: str = ""
    # REDIS_URL names a Redis Cluster (one or more seed nodes, comma-separated) instead of one server.
    redis_cluster: bool = False
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

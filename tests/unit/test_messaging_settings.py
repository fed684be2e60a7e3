"""messaging's settings: the documented environment variables, their defaults, and failing fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from chatpop_messaging.keys import generate_master_keys
from chatpop_messaging.settings import MessagingSettings

VARIABLES = (
    "GRPC_PORT",
    "METRICS_PORT",
    "DATABASE_URL",
    "REDIS_URL",
    "ROOMS_ADDR",
    "IDENTITY_ADDR",
    "MESSAGE_MAX_CHARS",
    "HOT_CACHE_SIZE",
    "SEND_RATE_LIMIT",
    "SEND_RATE_BURST",
    "SEND_RATE_LEASE",
    "RESUME_MAX",
    "PARTICIPANT_CACHE_TTL",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SERVICE_TOKEN_SECRET", "unit-test-service-token-secret-0123456789")
    monkeypatch.delenv("MASTER_KEYS_FILE", raising=False)
    monkeypatch.setenv("MASTER_KEYS", generate_master_keys())


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/chatpop")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    settings = MessagingSettings()  # type: ignore[call-arg]
    assert (settings.grpc_port, settings.metrics_port) == (7103, 9103)
    assert settings.message_max_chars == 4000
    assert settings.hot_cache_size == 500
    assert (settings.send_rate_limit, settings.send_rate_burst) == (60, 20)
    assert settings.send_rate_lease == 10
    assert settings.resume_max == 1000
    assert settings.participant_cache_ttl == 30


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "DATABASE_URL": "postgresql://db/chatpop",
        "REDIS_URL": "redis://cache:6379/0",
        "GRPC_PORT": "17103",
        "ROOMS_ADDR": "rooms:7102",
        "MESSAGE_MAX_CHARS": "280",
        "HOT_CACHE_SIZE": "50",
        "SEND_RATE_LIMIT": "30",
        "SEND_RATE_BURST": "5",
        "SEND_RATE_LEASE": "0",
        "RESUME_MAX": "200",
        "PARTICIPANT_CACHE_TTL": "2.5",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = MessagingSettings()  # type: ignore[call-arg]
    assert settings.grpc_port == 17103
    assert settings.rooms_addr == "rooms:7102"
    assert settings.message_max_chars == 280
    assert settings.hot_cache_size == 50
    assert (settings.send_rate_limit, settings.send_rate_burst) == (30, 5)
    assert settings.send_rate_lease == 0
    assert settings.resume_max == 200
    assert settings.participant_cache_ttl == 2.5


@pytest.mark.parametrize(
    "environment",
    [
        {"DATABASE_URL": "postgresql://db/chatpop"},
        {"REDIS_URL": "redis://cache:6379/0"},
        {"DATABASE_URL": "postgresql://db/chatpop", "REDIS_URL": "redis://x", "MESSAGE_MAX_CHARS": "0"},
        {"DATABASE_URL": "postgresql://db/chatpop", "REDIS_URL": "redis://x", "SEND_RATE_LIMIT": "-1"},
        {"DATABASE_URL": "postgresql://db/chatpop", "REDIS_URL": "redis://x", "SEND_RATE_LEASE": "-1"},
    ],
)
def test_missing_or_invalid_settings_fail(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        MessagingSettings()  # type: ignore[call-arg]


def test_the_service_refuses_to_start_without_redis() -> None:
    environment = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    environment["DATABASE_URL"] = "postgresql://127.0.0.1:1/chatpop"
    result = subprocess.run(
        [sys.executable, "-m", "chatpop_messaging"],
        env={**environment, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr


def test_master_keys_are_required_and_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/chatpop")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    monkeypatch.delenv("MASTER_KEYS")
    with pytest.raises(ValidationError, match="MASTER_KEYS"):
        MessagingSettings()  # type: ignore[call-arg]
    monkeypatch.setenv("MASTER_KEYS", json.dumps({"current": 1, "keys": {"1": "c2hvcnQ="}}))
    with pytest.raises(ValidationError, match="32 bytes"):
        MessagingSettings()  # type: ignore[call-arg]
    monkeypatch.delenv("MASTER_KEYS")
    path = tmp_path / "master-keys.json"
    path.write_text(generate_master_keys(3))
    monkeypatch.setenv("MASTER_KEYS_FILE", str(path))
    assert MessagingSettings().master_key_set().current == 3  # type: ignore[call-arg]
    monkeypatch.setenv("MASTER_KEYS_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(ValidationError, match="MASTER_KEYS_FILE"):
        MessagingSettings()  # type: ignore[call-arg]

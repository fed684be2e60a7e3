"""Start-up checks of identity's mail settings: SMTP_URL, MAIL_FROM and PUBLIC_URL fail fast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from chatpop_identity.keys import write_new_key
from chatpop_identity.mail import SmtpConfig, parse_sender
from chatpop_identity.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", SmtpConfig("mail.example.com", 587, implicit_tls=False)),
        ("smtp://mail.example.com:25", SmtpConfig("mail.example.com", 25, implicit_tls=False)),
        ("SMTPS://mail.example.com", SmtpConfig("mail.example.com", 465, implicit_tls=True)),
        (
            "smtp://no-reply%40example.com:p%3Ass%2Fw@mail.example.com:2525/",
            SmtpConfig("mail.example.com", 2525, False, "no-reply@example.com", "p:ss/w"),
        ),
        ("smtps://apikey:secret@[2001:db8::1]:465", SmtpConfig("2001:db8::1", 465, True, "apikey", "secret")),
    ],
)
def test_smtp_urls_name_the_server_the_tls_and_the_credentials(url: str, expected: SmtpConfig) -> None:
    config = SmtpConfig.from_url(url)
    assert config == expected
    assert config.password == expected.password
    assert "secret" not in repr(config) and "p:ss" not in config.describe()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mail.example.com:587", "must start with smtp://"),
        ("http://mail.example.com", "must start with smtp://"),
        ("smtp://", "names no host"),
        ("smtp://:password@mail.example.com", "password but no user name"),
        ("smtp://mail.example.com:99999", "not a valid URL"),
        ("smtp://mail.example.com:port", "not a valid URL"),
        ("smtp://mail.example.com/inbox", "no path, query or fragment"),
        ("smtp://mail.example.com?tls=1", "no path, query or fragment"),
    ],
)
def test_nonsense_smtp_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        SmtpConfig.from_url(url)


def test_the_sender_is_one_address() -> None:
    assert str(parse_sender("ChatPop <no-reply@localhost>")) == "ChatPop <no-reply@localhost>"
    assert str(parse_sender(" no-reply@chat.example.com ")) == "no-reply@chat.example.com"
    for bad in ("", "ChatPop", "a@b.c, d@e.f", "ChatPop <>", "<@example.com>"):
        with pytest.raises(ValueError, match="MAIL_FROM must be one address"):
            parse_sender(bad)


def _settings(tmp_path: Path, **values: Any) -> Settings:
    key = tmp_path / "signing.pem"
    if not key.exists():
        write_new_key(key)
    return Settings.model_validate(
        {
            "database_url": "postgresql://x",
            "redis_url": "redis://x",
            "identity_signing_key_file": key,
            "service_token_secret": "unit-test-service-token-secret-0123456789",
            **values,
        }
    )


def test_settings_default_to_logging_links_for_a_local_run(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.smtp is None
    assert settings.mail_from == "ChatPop <no-reply@localhost>"
    assert settings.public_url == "http://localhost:8080"
    assert (settings.password_reset_ttl, settings.reserved_username_quarantine_days) == (1800, 30)
    assert settings.reserved_username_change_interval == 86_400
    configured = _settings(
        tmp_path, smtp_url="smtps://u:pw@mail.example.com", public_url="https://chat.example.com/"
    )
    assert configured.smtp == SmtpConfig("mail.example.com", 465, True, "u", "pw")
    assert configured.public_url == "https://chat.example.com"
    assert "pw" not in repr(configured)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("smtp_url", "smtp//mail.example.com"),
        ("mail_from", "nobody"),
        ("public_url", "chat.example.com"),
        ("password_reset_ttl", 0),
        ("reserved_username_quarantine_days", -1),
    ],
)
def test_bad_mail_settings_stop_the_settings(tmp_path: Path, field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as raised:
        _settings(tmp_path, **{field: value})
    assert raised.value.errors()[0]["loc"] == (field,)


def test_identity_refuses_to_start_on_a_bad_smtp_url(tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    write_new_key(key)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(str(ROOT / "services" / name) for name in ("common", "identity")),
        "DATABASE_URL": "postgresql://127.0.0.1:1/none",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "IDENTITY_SIGNING_KEY_FILE": str(key),
        "SMTP_URL": "smtp://user:hunter2@",
    }
    result = subprocess.run(
        [sys.executable, "-m", "chatpop_identity"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "SMTP_URL" in result.stderr and "names no host" in result.stderr
    assert "hunter2" not in result.stderr

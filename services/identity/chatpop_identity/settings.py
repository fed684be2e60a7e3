"""Identity settings, read from the environment and checked at start-up.

A missing DATABASE_URL or an unusable signing key stops the process before it serves anything.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from chatpop_common.service_auth import check_secret
from chatpop_common.settings import ServiceAddresses, ServiceSettings
from chatpop_identity.generator import WORDLIST_DIR, UsernameGenerator
from chatpop_identity.keys import load_private_key, load_public_key
from chatpop_identity.mail import SmtpConfig, parse_sender

DAY = 86_400


def _rooms_addr() -> str:
    return ServiceAddresses().rooms_addr


class Settings(ServiceSettings):
    grpc_port: int = Field(7101, ge=0, le=65535)
    metrics_port: int = Field(9101, ge=0, le=65535)
    database_url: str = Field(..., min_length=1)
    # Redis holds the per-IP session creation counters (keys `identity:*`).
    redis_url: str = Field(..., min_length=1)
    # rooms forgets a deleted account's participants (ForgetSubject) when identity asks.
    rooms_addr: str = Field(default_factory=_rooms_addr, min_length=1)

    # PEM Ed25519 private key that signs every token (see `python -m chatpop_identity.keys`).
    identity_signing_key_file: Path
    # Comma-separated PEM public keys that still verify during a key rotation.
    identity_extra_public_key_files: str = ""

    # Shared secret with which the other services prove who they are when they ask for a service
    # token (chatpop_common.service_auth); at least 32 characters.
    service_token_secret: SecretStr
    # Seconds a service token lives; services fetch the next one halfway through.
    service_token_ttl: int = Field(300, ge=10, le=3600)

    access_token_ttl: int = Field(900, ge=1)
    refresh_token_ttl: int = Field(30 * DAY, ge=1)
    room_token_ttl: int = Field(3600, ge=1)
    # Seconds between purges of refresh-token families that have wholly expired.
    refresh_token_purge_interval: float = Field(3600, gt=0)

    # Unset means argon2-cffi's defaults (production); tests lower them to stay fast.
    argon2_time_cost: int | None = Field(None, ge=1)
    argon2_memory_cost: int | None = Field(None, ge=8)  # KiB
    argon2_parallelism: int | None = Field(None, ge=1)

    # New anonymous sessions one client IP (keyed hash) may start: `limit` per window on average, up to
    # `burst` at once. A class or a pub quiz behind one address arrives all at once, so the burst is
    # large; one device flooding sessions is still held to a trickle.
    anonymous_session_limit: int = Field(60, ge=1)
    anonymous_session_window: int = Field(3600, ge=1)
    anonymous_session_burst: int = Field(40, ge=1)

    # Directory holding adjectives.txt and nouns.txt for generated usernames.
    username_words_dir: Path = WORDLIST_DIR

    # Where password reset mails go out: smtp://user:pass@host:587 (STARTTLS when offered) or
    # smtps://user:pass@host:465 (TLS). Empty: nothing is mailed, the link is logged (local runs).
    smtp_url: SecretStr = SecretStr("")
    smtp_timeout: float = Field(10.0, gt=0)
    mail_from: str = "ChatPop <no-reply@localhost>"
    # Base of the links in mails ({public_url}/reset-password?token=…): the edge's public address.
    public_url: str = "http://localhost:8080"
    # Seconds a reset link works.
    password_reset_ttl: int = Field(1800, ge=1)
    # Reset requests per email address and per client IP (both as keyed hashes), per window.
    password_reset_email_limit: int = Field(3, ge=1)
    password_reset_email_window: int = Field(3600, ge=1)
    password_reset_network_limit: int = Field(20, ge=1)
    password_reset_network_window: int = Field(3600, ge=1)
    # Attempts to change a password (right or wrong current one) per account, per window.
    password_change_limit: int = Field(10, ge=1)
    password_change_window: int = Field(3600, ge=1)
    # Seconds between two changes of an account's reserved username (0: no limit), and days a
    # given-up name is held back from other accounts (0: free at once).
    reserved_username_change_interval: int = Field(DAY, ge=0)
    reserved_username_quarantine_days: int = Field(30, ge=0, le=3650)
    # Failed logins are counted per email and network over windows this long, each window becoming
    # one audit event once it has closed (within about two windows).
    audit_login_failure_window: int = Field(60, ge=1, le=3600)

    @field_validator("service_token_secret")
    @classmethod
    def _service_token_secret(cls, value: SecretStr) -> SecretStr:
        check_secret(value.get_secret_value())
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value().strip():
            SmtpConfig.from_url(value.get_secret_value())
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str) -> str:
        parse_sender(value)
        return value.strip()

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
            raise ValueError("PUBLIC_URL must start with http:// or https://, like https://chat.example.com")
        return value

    @property
    def smtp(self) -> SmtpConfig | None:
        raw = self.smtp_url.get_secret_value().strip()
        return SmtpConfig.from_url(raw) if raw else None

    @field_validator("username_words_dir")
    @classmethod
    def _word_lists_load(cls, path: Path) -> Path:
        UsernameGenerator.from_directory(path)
        return path

    @field_validator("identity_signing_key_file")
    @classmethod
    def _signing_key_loads(cls, path: Path) -> Path:
        load_private_key(path)
        return path

    @field_validator("identity_extra_public_key_files")
    @classmethod
    def _extra_keys_load(cls, value: str) -> str:
        for path in _split_paths(value):
            load_public_key(path)
        return value

    @property
    def extra_public_key_paths(self) -> list[Path]:
        return _split_paths(self.identity_extra_public_key_files)


def _split_paths(value: str) -> list[Path]:
    return [Path(part.strip()) for part in value.split(",") if part.strip()]

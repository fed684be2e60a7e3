"""Identity settings, read from the environment and checked at start-up.

A missing DATABASE_URL or an unusable signing key stops the process before it serves anything.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from chatpop_common.settings import ServiceSettings
from chatpop_identity.generator import WORDLIST_DIR, UsernameGenerator
from chatpop_identity.keys import load_private_key, load_public_key

DAY = 86_400


class Settings(ServiceSettings):
    grpc_port: int = Field(7101, ge=0, le=65535)
    metrics_port: int = Field(9101, ge=0, le=65535)
    database_url: str = Field(..., min_length=1)
    # Redis holds the per-IP session creation counters (keys `identity:*`).
    redis_url: str = Field(..., min_length=1)

    # PEM Ed25519 private key that signs every token (see `python -m chatpop_identity.keys`).
    identity_signing_key_file: Path
    # Comma-separated PEM public keys that still verify during a key rotation.
    identity_extra_public_key_files: str = ""

    access_token_ttl: int = Field(900, ge=1)
    refresh_token_ttl: int = Field(30 * DAY, ge=1)
    room_token_ttl: int = Field(3600, ge=1)
    # Seconds between purges of refresh-token families that have wholly expired.
    refresh_token_purge_interval: float = Field(3600, gt=0)

    # Unset means argon2-cffi's defaults (production); tests lower them to stay fast.
    argon2_time_cost: int | None = Field(None, ge=1)
    argon2_memory_cost: int | None = Field(None, ge=8)  # KiB
    argon2_parallelism: int | None = Field(None, ge=1)

    # New anonymous sessions one client IP (keyed hash) may start per window.
    anonymous_session_limit: int = Field(5, ge=1)
    anonymous_session_window: int = Field(3600, ge=1)

    # Directory holding adjectives.txt and nouns.txt for generated usernames.
    username_words_dir: Path = WORDLIST_DIR

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

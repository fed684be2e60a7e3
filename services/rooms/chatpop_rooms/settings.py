"""Rooms settings, read from the environment and validated at start-up."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from chatpop_common.service_auth import check_secret
from chatpop_common.settings import ServiceAddresses, ServiceSettings


def _identity_addr() -> str:
    return ServiceAddresses().identity_addr


def _messaging_addr() -> str:
    return ServiceAddresses().messaging_addr


class Settings(ServiceSettings):
    grpc_port: int = Field(7102, ge=0, le=65535)
    metrics_port: int = Field(9102, ge=0, le=65535)
    database_url: str = Field(..., min_length=1)
    redis_url: str = Field(..., min_length=1)
    identity_addr: str = Field(default_factory=_identity_addr, min_length=1)
    # messaging erases closed rooms and forgets deleted accounts' participants when rooms asks.
    messaging_addr: str = Field(default_factory=_messaging_addr, min_length=1)

    # Wrong or missing access codes a client may try per room within the window.
    join_attempt_limit: int = Field(5, ge=1)
    # Wrong or missing access codes all clients together may try per room within the window. Much higher
    # than the per-client limit so that one stranger cannot lock everybody out of a room, yet still a
    # ceiling on guessing from many addresses at once.
    join_room_attempt_limit: int = Field(50, ge=1)
    # Seconds a window of attempts lasts; a locked-out client waits until it ends.
    join_attempt_window: int = Field(900, ge=1)

    # argon2id cost of access-code hashes (argon2-cffi's RFC 9106 "low memory" profile by default).
    access_code_hash_time_cost: int = Field(3, ge=1)
    access_code_hash_memory_kib: int = Field(65536, ge=8)
    access_code_hash_parallelism: int = Field(4, ge=1)

    # Dice rolls: per device (session or account) and room within the window; a rolled name is held
    # for its roller this many seconds so nobody else takes it meanwhile.
    username_roll_limit: int = Field(20, ge=1)
    username_roll_window: int = Field(3600, ge=1)
    username_hold_seconds: int = Field(300, ge=1)

    # New anonymous participants one client address (keyed hash) may add to a room per window, unless
    # the room's host chose another number. Sized for a class or a pub quiz on one Wi-Fi; returning
    # participants and accounts are not counted.
    anonymous_usernames_per_ip: int = Field(40, ge=1, le=1000)
    anonymous_usernames_window: int = Field(3600, ge=1)
    # Rooms an anonymous session may create per window; accounts are not limited.
    anonymous_room_limit: int = Field(3, ge=1)
    anonymous_room_window: int = Field(3600, ge=1)

    # Secret from which the key that seals access codes for their hosts is derived (never stored in
    # the database). Changing it makes earlier codes unreadable to hosts, not unusable.
    access_code_key: SecretStr

    # Shared secret with which rooms proves itself to identity for its service token (audit events,
    # site-ban checks); at least 32 characters, the same in every service.
    service_token_secret: SecretStr

    @field_validator("service_token_secret")
    @classmethod
    def _service_token_secret(cls, value: SecretStr) -> SecretStr:
        check_secret(value.get_secret_value())
        return value

    @field_validator("access_code_key")
    @classmethod
    def _access_code_key(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("ACCESS_CODE_KEY must be a secret of at least 32 characters")
        return value

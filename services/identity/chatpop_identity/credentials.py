"""Email and password rules, and password hashing with argon2id.

Hashing and verifying are CPU-bound by design, so they run in worker threads and never stall the
event loop that serves every other call.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chatpop_common.errors import InvalidArgument

EMAIL_MAX_LENGTH = 254
EMAIL_LOCAL_MAX_LENGTH = 64
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 256

# Deliberately basic: one "@", no spaces or control characters, and a dotted domain of ordinary
# labels. Whether the mailbox exists is for a confirmation mail to find out, not a regex.
_LOCAL = re.compile(r"[^\s@\x00-\x1f\x7f]+")
_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")


def normalize_email(raw: str) -> str:
    """Trimmed and lower-cased, or InvalidArgument code `invalid_email`."""
    email = raw.strip().lower()
    local, at, domain = email.rpartition("@")
    valid = (
        bool(at)
        and len(email) <= EMAIL_MAX_LENGTH
        and 0 < len(local) <= EMAIL_LOCAL_MAX_LENGTH
        and _LOCAL.fullmatch(local) is not None
        and _DOMAIN.fullmatch(domain) is not None
    )
    if not valid:
        raise InvalidArgument("Enter a valid email address, like name@example.com.", code="invalid_email")
    return email


def check_password(password: str) -> str:
    """The password unchanged, or InvalidArgument code `weak_password`."""
    if len(password) < PASSWORD_MIN_LENGTH:
        raise InvalidArgument(
            f"The password must be at least {PASSWORD_MIN_LENGTH} characters long.", code="weak_password"
        )
    if len(password) > PASSWORD_MAX_LENGTH:
        raise InvalidArgument(
            f"The password must be at most {PASSWORD_MAX_LENGTH} characters long.", code="weak_password"
        )
    if not password.strip():
        raise InvalidArgument("The password cannot be only spaces.", code="weak_password")
    return password


@dataclass(frozen=True)
class Verification:
    ok: bool
    # A fresh hash to store when the stored one used weaker parameters than today's.
    new_hash: str | None = None


class Passwords:
    """argon2id hashing with the configured parameters, plus a dummy hash for unknown accounts."""

    def __init__(
        self,
        *,
        time_cost: int | None = None,
        memory_cost: int | None = None,
        parallelism: int | None = None,
    ) -> None:
        params: dict[str, Any] = {
            name: value
            for name, value in (
                ("time_cost", time_cost),
                ("memory_cost", memory_cost),
                ("parallelism", parallelism),
            )
            if value is not None
        }
        self._hasher = PasswordHasher(**params)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    def _verify(self, stored_hash: str, password: str) -> Verification:
        try:
            self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return Verification(ok=False)
        if self._hasher.check_needs_rehash(stored_hash):
            return Verification(ok=True, new_hash=self._hasher.hash(password))
        return Verification(ok=True)

    async def verify(self, stored_hash: str, password: str) -> Verification:
        return await asyncio.to_thread(self._verify, stored_hash, password)

    async def prepare(self) -> None:
        """Make the dummy hash up front, so not even the first unknown email answers faster."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))

    async def verify_dummy(self, password: str) -> None:
        """Spend the time a real check costs, so a reply does not tell whether an account exists."""
        await self.prepare()
        assert self._dummy_hash is not None
        await self.verify(self._dummy_hash, password)

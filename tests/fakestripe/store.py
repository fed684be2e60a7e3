"""What the fake remembers: platforms (a Stripe account with its own keys) and their objects.

Every API key belongs to one platform, and a platform sees only its own objects, events and webhook
endpoints, so tests isolate themselves by taking a fresh platform. Objects are kept as the JSON
dicts the API answers with; each collection keeps creation order (lists answer newest first).
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fakestripe.errors import no_such

API_VERSION = "2026-10-28.endive"
_ALPHABET = string.ascii_letters + string.digits

# The collections an id's prefix points to, and the name Stripe gives the object in errors.
COLLECTIONS = {
    "pi": ("payment_intents", "payment_intent"),
    "ch": ("charges", "charge"),
    "pm": ("payment_methods", "payment_method"),
    "re": ("refunds", "refund"),
    "tr": ("transfers", "transfer"),
    "trr": ("transfer_reversals", "transfer_reversal"),
    "fee": ("application_fees", "application fee"),
    "fr": ("fee_refunds", "fee refund"),
    "dp": ("disputes", "dispute"),
    "acct": ("accounts", "account"),
    "evt": ("events", "event"),
    "we": ("webhook_endpoints", "webhook endpoint"),
}


def token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 24) -> str:
    return f"{prefix}_{token(length)}"


@dataclass
class Fault:
    """An answer the next matching requests get instead of (or after) being carried out."""

    count: int
    status: int
    method: str | None
    path_prefix: str | None
    after: bool
    delay: float
    should_retry: bool | None


@dataclass
class IdempotentResult:
    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: dict[str, Any]


@dataclass
class Platform:
    """One Stripe account using the API (ChatPop's platform account, in production)."""

    account_id: str
    secret_key: str
    publishable_key: str
    webhook_secret: str
    clock_offset: float = 0.0
    refunds_pending: bool = False
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], IdempotentResult] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    account_links: dict[str, dict[str, Any]] = field(default_factory=dict)

    def now(self) -> int:
        return int(time.time() + self.clock_offset)

    def collection(self, name: str) -> dict[str, dict[str, Any]]:
        return self.objects.setdefault(name, {})

    def add(self, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.collection(name)[obj["id"]] = obj
        return obj

    def find(self, object_id: str) -> dict[str, Any] | None:
        prefix = object_id.split("_", 1)[0]
        entry = COLLECTIONS.get(prefix)
        if entry is None:
            return None
        return self.collection(entry[0]).get(object_id)

    def get(self, object_id: str, *, param: str = "id") -> dict[str, Any]:
        obj = self.find(object_id)
        if obj is None:
            kind = COLLECTIONS.get(object_id.split("_", 1)[0], ("", "object"))[1]
            raise no_such(kind, object_id, param=param)
        return obj

    def newest_first(self, name: str) -> list[dict[str, Any]]:
        return list(reversed(self.collection(name).values()))

    def oldest_first(self, name: str) -> Iterator[dict[str, Any]]:
        return iter(list(self.collection(name).values()))


class Store:
    """All platforms of one fake server, found by any of their API keys."""

    def __init__(self) -> None:
        self.platforms: dict[str, Platform] = {}
        self._by_key: dict[str, tuple[Platform, str]] = {}

    def new_platform(
        self,
        *,
        secret_key: str | None = None,
        publishable_key: str | None = None,
        webhook_secret: str | None = None,
    ) -> Platform:
        key = token(24)
        platform = Platform(
            account_id=new_id("acct", 16),
            secret_key=secret_key or f"sk_test_{key}",
            publishable_key=publishable_key or f"pk_test_{key}",
            webhook_secret=webhook_secret or new_id("whsec", 32),
        )
        for taken in (platform.secret_key, platform.publishable_key):
            if taken in self._by_key:
                raise ValueError(f"the key {taken[:8]}… belongs to another platform already")
        self.platforms[platform.account_id] = platform
        self._by_key[platform.secret_key] = (platform, "secret")
        self._by_key[platform.publishable_key] = (platform, "publishable")
        return platform

    def by_key(self, key: str) -> tuple[Platform, str] | None:
        return self._by_key.get(key)


def snapshot(obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy as the API shows it: keys starting with "_" are the fake's own notes."""
    return _public(obj)  # type: ignore[no-any-return]


def _public(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _public(item) for key, item in value.items() if not key.startswith("_")}
    if isinstance(value, list):
        return [_public(item) for item in value]
    return value

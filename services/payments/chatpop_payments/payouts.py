"""Payout accounts: a host's Stripe Connect Express account, onboarding, and what payments last
learned of it.

Only registered accounts may have one (an anonymous session has nobody to pay out to), so a room
whose host is anonymous can never sell. Stripe's news about an account (account.updated, or
Account.retrieve on refresh) is written only when it is not older than what was last written
(`synced_at`, in whole seconds as Stripe's event times are), so a late event never undoes a fresher
state.

In test mode no Stripe account exists: onboarding records a test account (`acct_test_…`) and sends
the host to the web client's test onboarding page (/payouts/test-onboarding) instead of Stripe's;
CompleteTestOnboarding moves its flags through the same account.updated handling Stripe's events go
through. A test account never lets a host sell while payments run against Stripe.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from chatpop.payments.v1 import payments_pb2
from chatpop_common.errors import InvalidArgument, Unavailable
from chatpop_payments.stripe_api import StripeApi, StripeRefused, StripeUnavailable

if TYPE_CHECKING:
    from chatpop_payments.events import EventHandler

log = logging.getLogger(__name__)

URL_MAX = 2000
TEST_ONBOARDING_PATH = "/payouts/test-onboarding"
_COLUMNS = (
    "identity_id, stripe_account_id, test_mode, details_submitted, charges_enabled, payouts_enabled,"
    " updated_at"
)
_GET = f"SELECT {_COLUMNS} FROM payout_accounts WHERE identity_id = $1"  # noqa: S608 - fixed columns
# A Stripe account replaces a test one, never another Stripe one.
_RECORD_STRIPE_ACCOUNT = f"""
INSERT INTO payout_accounts (identity_id, stripe_account_id, test_mode, details_submitted, charges_enabled,
    payouts_enabled, synced_at)
VALUES ($1, $2, false, $3, $4, $5, date_trunc('second', now()))
ON CONFLICT (identity_id) DO UPDATE
SET stripe_account_id = EXCLUDED.stripe_account_id, test_mode = false,
    details_submitted = EXCLUDED.details_submitted, charges_enabled = EXCLUDED.charges_enabled,
    payouts_enabled = EXCLUDED.payouts_enabled, synced_at = EXCLUDED.synced_at, updated_at = now()
WHERE payout_accounts.test_mode OR payout_accounts.stripe_account_id IS NULL
RETURNING {_COLUMNS}
"""  # noqa: S608 - fixed columns


@dataclass(frozen=True, slots=True)
class PayoutAccount:
    identity_id: uuid.UUID
    stripe_account_id: str | None
    test_mode: bool
    details_submitted: bool
    charges_enabled: bool
    payouts_enabled: bool
    updated_at: datetime

    @property
    def can_receive(self) -> bool:
        return self.charges_enabled and self.stripe_account_id is not None

    def to_proto(self) -> payments_pb2.PayoutAccount:
        updated = Timestamp()
        updated.FromDatetime(self.updated_at)
        return payments_pb2.PayoutAccount(
            stripe_account_id=self.stripe_account_id or "",
            details_submitted=self.details_submitted,
            charges_enabled=self.charges_enabled,
            payouts_enabled=self.payouts_enabled,
            can_receive=self.can_receive,
            updated_at=updated,
            test_mode=self.test_mode,
        )


def _account(row: asyncpg.Record | None) -> PayoutAccount | None:
    return PayoutAccount(**dict(row)) if row is not None else None


async def get(db: asyncpg.Pool | asyncpg.Connection, identity_id: uuid.UUID) -> PayoutAccount | None:
    return _account(await db.fetchrow(_GET, identity_id))


async def receiving(pool: asyncpg.Pool, identity_id: uuid.UUID, *, test_mode: bool) -> PayoutAccount | None:
    """The host's account when it can receive money in the mode payments run in now."""
    account = await get(pool, identity_id)
    if account is None or account.test_mode != test_mode or not account.can_receive:
        return None
    return account


def _flag(account: Mapping[str, Any], name: str) -> bool:
    return account.get(name) is True


async def apply_account(
    conn: asyncpg.Connection, account: Mapping[str, Any], *, as_of: int, test_mode: bool
) -> str:
    """Write Stripe's (or the test mode's) account state if it is news; the outcome in a word."""
    account_id = account.get("id")
    if not isinstance(account_id, str) or not account_id:
        return "unknown_account"
    status = await conn.execute(
        """
        UPDATE payout_accounts
        SET details_submitted = $2, charges_enabled = $3, payouts_enabled = $4,
            synced_at = to_timestamp($5), updated_at = now()
        WHERE stripe_account_id = $1 AND test_mode = $6
          AND (synced_at IS NULL OR synced_at <= to_timestamp($5))
        """,
        account_id,
        _flag(account, "details_submitted"),
        _flag(account, "charges_enabled"),
        _flag(account, "payouts_enabled"),
        as_of,
        test_mode,
    )
    if status == "UPDATE 1":
        return "account_updated"
    known = await conn.fetchval(
        "SELECT true FROM payout_accounts WHERE stripe_account_id = $1 AND test_mode = $2",
        account_id,
        test_mode,
    )
    return "stale" if known else "unknown_account"


def check_url(value: str, what: str) -> str:
    url = value.strip()
    parts = urlsplit(url)
    if len(url) > URL_MAX or parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"{what} must be an absolute http(s) URL.", code=f"invalid_{what}")
    return url


def stand_in_onboarding_url(return_url: str) -> str:
    """The web client's page that stands in for Stripe's onboarding, on the site of `return_url`."""
    parts = urlsplit(return_url)
    return urlunsplit(
        (parts.scheme, parts.netloc, TEST_ONBOARDING_PATH, urlencode({"return_url": return_url}), "")
    )


class Payouts:
    def __init__(self, pool: asyncpg.Pool, stripe: StripeApi | None, events: EventHandler) -> None:
        self._pool = pool
        self._stripe = stripe
        self._events = events

    @property
    def test_mode(self) -> bool:
        return self._stripe is None

    async def get(self, identity_id: uuid.UUID, *, refresh: bool) -> PayoutAccount | None:
        account = await get(self._pool, identity_id)
        stripe = self._stripe
        if refresh and account and account.stripe_account_id and not account.test_mode and stripe:
            fresh = await self._call(stripe.retrieve_account(account.stripe_account_id))
            async with self._pool.acquire() as conn:
                await apply_account(conn, fresh, as_of=int(time.time()), test_mode=False)
            account = await get(self._pool, identity_id)
        return account

    async def start_onboarding(
        self, identity_id: uuid.UUID, return_url: str, refresh_url: str
    ) -> tuple[PayoutAccount, str]:
        return_url = check_url(return_url, "return_url")
        refresh_url = check_url(refresh_url or return_url, "refresh_url")
        if self._stripe is None:
            return await self._test_account(identity_id), stand_in_onboarding_url(return_url)
        account = await get(self._pool, identity_id)
        if account is None or account.test_mode or not account.stripe_account_id:
            # One Stripe account per identity: the key makes a retried creation the same account.
            created = await self._call(
                self._stripe.create_account(
                    idempotency_key=f"payout_account:{identity_id}:create",
                    metadata={"identity_id": str(identity_id)},
                )
            )
            recorded = await self._pool.fetchrow(
                _RECORD_STRIPE_ACCOUNT,
                identity_id,
                created["id"],
                _flag(created, "details_submitted"),
                _flag(created, "charges_enabled"),
                _flag(created, "payouts_enabled"),
            )
            account = _account(recorded) or await get(self._pool, identity_id)
        assert account is not None and account.stripe_account_id
        url = await self._call(
            self._stripe.create_account_link(
                idempotency_key=f"payout_account:{identity_id}:link:{uuid.uuid4().hex}",
                account_id=account.stripe_account_id,
                return_url=return_url,
                refresh_url=refresh_url,
            )
        )
        return account, url

    async def complete_test_onboarding(self, identity_id: uuid.UUID) -> PayoutAccount:
        account = await self._test_account(identity_id)
        assert account.stripe_account_id
        await self._events.handle(
            {
                "id": f"evt_test_{uuid.uuid4().hex}",
                "object": "event",
                "type": "account.updated",
                "created": int(time.time()),
                "livemode": False,
                "data": {
                    "object": {
                        "id": account.stripe_account_id,
                        "object": "account",
                        "details_submitted": True,
                        "charges_enabled": True,
                        "payouts_enabled": True,
                        "metadata": {"identity_id": str(identity_id)},
                    }
                },
            },
            "test",
        )
        fresh = await get(self._pool, identity_id)
        assert fresh is not None
        return fresh

    async def _test_account(self, identity_id: uuid.UUID) -> PayoutAccount:
        """The identity's test account, recorded on first use (a Stripe one is left as it is)."""
        await self._pool.execute(
            "INSERT INTO payout_accounts (identity_id, stripe_account_id, test_mode)"
            " VALUES ($1, $2, true) ON CONFLICT (identity_id) DO NOTHING",
            identity_id,
            f"acct_test_{uuid.uuid4().hex[:16]}",
        )
        account = await get(self._pool, identity_id)
        assert account is not None
        return account

    @staticmethod
    async def _call(call: Any) -> Any:
        try:
            return await call
        except StripeUnavailable as exc:
            log.warning("Stripe unavailable for a payout account: %s", exc)
            raise Unavailable("Stripe could not be reached; try again.", code="stripe_unavailable") from exc
        except StripeRefused as exc:
            log.error("Stripe refused a payout account request: %s (%s)", exc, exc.code)
            raise Unavailable(
                "Payouts cannot be set up right now; try again later.", code="payouts_unavailable"
            ) from exc

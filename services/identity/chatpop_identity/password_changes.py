"""Passwords of accounts: forgotten (a reset link by mail) or changed (knowing the current one).

Both end the same way, in one transaction: the new hash is stored, every refresh-token family of
the account is revoked (every device is signed out), reset links still outstanding stop working,
and a new family signs in the device that made the change. Access tokens already handed out stay
valid until they expire (ACCESS_TOKEN_TTL): they are stateless by design.

A reset request never tells whether an account exists: its answer is the same either way, and the
lookup, the token and the mail all happen after the answer has gone, in a task of their own.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import html
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage

import asyncpg
import redis

from chatpop_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from chatpop_common.fixed_window import FixedWindowLimiter
from chatpop_common.keyslots import tagged
from chatpop_common.wording import wait_words
from chatpop_identity import audit
from chatpop_identity.credentials import PASSWORD_MAX_LENGTH, Passwords, check_password, normalize_email
from chatpop_identity.mail import SmtpMailer
from chatpop_identity.store import (
    IDENTITY_COLUMNS,
    USER,
    IdentityRecord,
    IdentityStore,
    NewRefreshToken,
    identity_record,
    insert_refresh_token,
)

log = logging.getLogger(__name__)

RESET_TOKEN_BYTES = 32
# Used and expired reset rows stay this long after expiry, so a late click on an old link is told
# "expired" or "already used" rather than "not valid"; the purge deletes them afterwards.
RESET_ROW_RETENTION = timedelta(days=7)
# Longer than any real token (43 characters): anything past it cannot be one, so it is not hashed.
RESET_TOKEN_MAX_LENGTH = 128
MAIL_KIND = "password_reset"

_REPLACE_PASSWORD = f"""
    UPDATE identities SET password_hash = $2
    WHERE id = $1 AND kind = $3 AND ($4::text IS NULL OR password_hash = $4)
    RETURNING {IDENTITY_COLUMNS}
"""  # noqa: S608 - a fixed column list; every value is a bind parameter

Now = Callable[[], datetime]


def hash_reset_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class ResetStatus(enum.Enum):
    RESET = "reset"
    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"


@dataclass(frozen=True)
class ResetOutcome:
    status: ResetStatus
    identity: IdentityRecord | None = None


async def _replace_password(
    conn: asyncpg.Connection,
    identity_id: uuid.UUID,
    new_hash: str,
    refresh: NewRefreshToken,
    now: datetime,
    *,
    event_kind: str,
    expected_hash: str | None = None,
) -> IdentityRecord | None:
    """Store the new hash, sign every device out and sign this one in, and record `event_kind` in the
    audit log; None when nothing matched."""
    row = await conn.fetchrow(_REPLACE_PASSWORD, identity_id, new_hash, USER, expected_hash)
    if row is None:
        return None
    revoked = await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE identity_id = $1 AND revoked_at IS NULL",
        identity_id,
        now,
    )
    await conn.execute(
        "UPDATE password_resets SET used_at = $2 WHERE identity_id = $1 AND used_at IS NULL",
        identity_id,
        now,
    )
    await insert_refresh_token(conn, identity_id, uuid.uuid4(), refresh)
    account = str(identity_id)
    await audit.record(
        conn,
        audit.NewEvent(
            kind=event_kind,
            actor=account,
            target=account,
            details={"refresh_tokens_revoked": int(revoked.split()[-1])},
        ),
    )
    return identity_record(row)


class PasswordStore:
    """SQL for reset tokens and password replacement (tables `password_resets`, `identities`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add_reset(
        self,
        identity_id: uuid.UUID,
        token_hash: bytes,
        created_at: datetime,
        expires_at: datetime,
        client_ip_hash: str = "",
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO password_resets (token_hash, identity_id, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4)",
                token_hash,
                identity_id,
                created_at,
                expires_at,
            )
            # Whoever asked is unknown (anyone may type an address): the account is the target.
            await audit.record(
                conn,
                audit.NewEvent(
                    kind=audit.PASSWORD_RESET_REQUESTED, target=str(identity_id), ip_hash=client_ip_hash
                ),
            )

    async def reset(
        self, token_hash: bytes, new_hash: str, refresh: NewRefreshToken, now: datetime
    ) -> ResetOutcome:
        """Use the token up and, if it was still good, replace the password.

        The row lock makes two clicks on one link queue up: the first resets, the second finds the
        token used. An expired token is used up too (committed), so it can never come back.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT identity_id, expires_at, used_at FROM password_resets"
                " WHERE token_hash = $1 FOR UPDATE",
                token_hash,
            )
            if row is None:
                return ResetOutcome(ResetStatus.UNKNOWN)
            if row["used_at"] is not None:
                return ResetOutcome(ResetStatus.USED)
            await conn.execute(
                "UPDATE password_resets SET used_at = $2 WHERE token_hash = $1", token_hash, now
            )
            if row["expires_at"] <= now:
                return ResetOutcome(ResetStatus.EXPIRED)
            identity = await _replace_password(
                conn, row["identity_id"], new_hash, refresh, now, event_kind=audit.PASSWORD_RESET_COMPLETED
            )
        if identity is None:
            return ResetOutcome(ResetStatus.UNKNOWN)
        return ResetOutcome(ResetStatus.RESET, identity)

    async def change(
        self,
        identity_id: uuid.UUID,
        old_hash: str,
        new_hash: str,
        refresh: NewRefreshToken,
        now: datetime,
    ) -> IdentityRecord | None:
        """Replace the password if it is still `old_hash` (None when it changed meanwhile)."""
        async with self._pool.acquire() as conn, conn.transaction():
            return await _replace_password(
                conn,
                identity_id,
                new_hash,
                refresh,
                now,
                event_kind=audit.PASSWORD_CHANGED,
                expected_hash=old_hash,
            )

    async def purge(self, now: datetime) -> int:
        """Delete reset rows that expired more than RESET_ROW_RETENTION ago; returns how many."""
        status = await self._pool.execute(
            "DELETE FROM password_resets WHERE expires_at < $1", now - RESET_ROW_RETENTION
        )
        return int(status.split()[-1])


@dataclass(frozen=True)
class ResetMailSettings:
    sender: Address
    # Base of the link in the mail: {public_url}/reset-password?token=…
    public_url: str
    ttl_seconds: int


def reset_message(settings: ResetMailSettings, recipient: str, link: str) -> EmailMessage:
    """The reset mail: plain text, with a simple HTML alternative."""
    minutes = max(1, settings.ttl_seconds // 60)
    message = EmailMessage()
    message["Subject"] = "Reset your ChatPop password"
    message["From"] = settings.sender
    message["To"] = recipient
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        "Hello,\n\n"
        "Someone asked to reset the password of the ChatPop account that uses this email address.\n"
        "To choose a new password, open this link:\n\n"
        f"{link}\n\n"
        f"The link works once, for the next {minutes} minutes. Resetting signs you out everywhere else.\n\n"
        "If you did not ask for this, ignore this mail: your password stays as it is.\n\n"
        "ChatPop\n"
    )
    message.add_alternative(
        "<!doctype html><html><body>"
        "<p>Hello,</p>"
        "<p>Someone asked to reset the password of the ChatPop account that uses this email address.</p>"
        f'<p><a href="{html.escape(link)}">Choose a new password</a></p>'
        f"<p>The link works once, for the next {minutes} minutes. "
        "Resetting signs you out everywhere else.</p>"
        "<p>If you did not ask for this, ignore this mail: your password stays as it is.</p>"
        "<p>ChatPop</p>"
        "</body></html>",
        subtype="html",
    )
    return message


@dataclass(frozen=True)
class ResetLimits:
    """Reset requests per email (keyed hash) and per client IP (keyed hash), each per window."""

    per_email: FixedWindowLimiter
    per_network: FixedWindowLimiter
    # HMAC key for emails in limiter keys: Redis never holds an address, nor a plain hash of one.
    email_key: bytes


class PasswordChanges:
    """Reset by mail, reset with the mailed token, and change with the current password."""

    def __init__(
        self,
        *,
        identities: IdentityStore,
        store: PasswordStore,
        passwords: Passwords,
        mail: ResetMailSettings,
        mailer: SmtpMailer | None,
        limits: ResetLimits,
        change_limiter: FixedWindowLimiter,
        now: Now,
    ) -> None:
        self._identities = identities
        self._store = store
        self._passwords = passwords
        self._mail = mail
        self._mailer = mailer
        self._limits = limits
        self._change_limiter = change_limiter
        self._now = now
        self._sending: set[asyncio.Task[None]] = set()

    # --- forgot ---------------------------------------------------------------------------------

    async def request_reset(self, raw_email: str, client_ip_hash: str) -> None:
        """Check the limits, then mail a link in the background if the account exists."""
        email = normalize_email(raw_email)
        email_hash = hmac.new(self._limits.email_key, email.encode(), hashlib.sha256).hexdigest()
        try:
            if client_ip_hash:
                network_key = tagged("identity:reset-network", client_ip_hash)
                decision = await self._limits.per_network.hit(network_key)
                if not decision.allowed:
                    raise _too_many_requests(decision.retry_after)
            decision = await self._limits.per_email.hit(tagged("identity:reset-email", email_hash))
        except redis.RedisError as exc:
            # Without the limits, this endpoint could flood someone's inbox: refuse until Redis is back.
            log.warning("password reset limits unavailable: %s", exc)
            raise Unavailable(
                "Password resets are briefly unavailable. Please try again in a few minutes.",
                code="reset_unavailable",
            ) from exc
        if not decision.allowed:
            raise _too_many_requests(decision.retry_after)
        task = asyncio.create_task(self._mail_reset(email, client_ip_hash), name="password reset mail")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _mail_reset(self, email: str, client_ip_hash: str) -> None:
        try:
            identity = await self._identities.find_user_by_email(email)
            if identity is None or identity.password_hash is None:
                return
            token = secrets.token_urlsafe(RESET_TOKEN_BYTES)
            now = self._now()
            expires_at = now + timedelta(seconds=self._mail.ttl_seconds)
            await self._store.add_reset(identity.id, hash_reset_token(token), now, expires_at, client_ip_hash)
            link = f"{self._mail.public_url}/reset-password?token={token}"
            if self._mailer is None:
                log.warning(
                    "Password reset link (no SMTP_URL set, nothing was mailed) for %s: %s", email, link
                )
                return
            await self._mailer.send(reset_message(self._mail, email, link), kind=MAIL_KIND)
        except Exception:
            # Nobody waits for this task: whatever went wrong is logged here or nowhere.
            log.exception("could not prepare a password reset mail")

    async def drain(self, within: float) -> None:
        """Let mails already on their way finish (at shutdown), for at most `within` seconds."""
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=within)

    # --- reset ----------------------------------------------------------------------------------

    async def reset(self, token: str, new_password: str, refresh: NewRefreshToken) -> IdentityRecord:
        token = token.strip()
        if not token:
            raise InvalidArgument(
                "The reset link has no token. Open the link from the mail again.", code="reset_token_invalid"
            )
        # The password is checked before the token is used up: a weak one can be fixed and the
        # same link tried again.
        password = check_password(new_password)
        new_hash = await self._passwords.hash(password)
        if len(token) > RESET_TOKEN_MAX_LENGTH:
            outcome = ResetOutcome(ResetStatus.UNKNOWN)
        else:
            outcome = await self._store.reset(hash_reset_token(token), new_hash, refresh, self._now())
        # One status for every unusable token, told apart by code: the link is what is wrong.
        if outcome.status is ResetStatus.EXPIRED:
            raise InvalidArgument(
                "This reset link has expired. Ask for a new one.", code="reset_token_expired"
            )
        if outcome.status is ResetStatus.USED:
            raise InvalidArgument(
                "This reset link was already used. Ask for a new one if you still need it.",
                code="reset_token_used",
            )
        if outcome.identity is None:
            raise InvalidArgument(
                "This reset link is not valid. Check that you opened the whole link, or ask for a new one.",
                code="reset_token_invalid",
            )
        return outcome.identity

    # --- change ---------------------------------------------------------------------------------

    async def change(
        self, identity_id: uuid.UUID, current_password: str, new_password: str, refresh: NewRefreshToken
    ) -> IdentityRecord:
        password = check_password(new_password)
        identity = await self._identities.get(identity_id)
        if identity is None or identity.kind != USER or identity.password_hash is None:
            raise NotFound("This account no longer exists.", code="identity_not_found")
        await self._limit_changes(identity_id)
        verification = await self._passwords.verify(
            identity.password_hash, current_password[: PASSWORD_MAX_LENGTH + 1]
        )
        if not verification.ok:
            raise PermissionDenied("Your current password is not right.", code="current_password_incorrect")
        new_hash = await self._passwords.hash(password)
        now = self._now()
        changed = await self._store.change(identity_id, identity.password_hash, new_hash, refresh, now)
        if changed is None:
            raise FailedPrecondition(
                "Your password was changed meanwhile. Sign in again with the new one.",
                code="password_changed_meanwhile",
            )
        return changed

    async def _limit_changes(self, identity_id: uuid.UUID) -> None:
        """Guessing the current password with a stolen access token is slowed to a few tries."""
        try:
            decision = await self._change_limiter.hit(tagged("identity:password-change", str(identity_id)))
        except redis.RedisError as exc:
            log.warning("password change limits unavailable: %s", exc)
            return
        if not decision.allowed:
            raise ResourceExhausted(
                f"Too many attempts to change your password. Try again {wait_words(decision.retry_after)}.",
                code="too_many_password_changes",
                retry_after=decision.retry_after,
            )


def _too_many_requests(retry_after: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"Too many password reset requests. Try again {wait_words(retry_after)}.",
        code="too_many_reset_requests",
        retry_after=retry_after,
    )

"""Deleting an account (DeleteAccount): what identity keeps, what goes, and telling rooms.

The caller proves it is the account's owner with its password again (attempts limited per account,
like password changes). Then, in one transaction:
- the `identities` row becomes a tombstone of kind `deleted`: its email, password hash, reserved
  username and admin flag are gone; only its id and creation time stay, so audit events naming it
  still mean something and no later account can ever get the same id;
- every refresh token and password reset link of the account is deleted, and names it gave up that
  were held back for it are released (its reserved username is free for anyone at once: its past
  messages are renamed, so nobody can pose as their author);
- the audit log records `identity.account_deleted`;
- the outbox holds `account.deleted` {subject, erase_messages}: the relay calls rooms' ForgetSubject
  with identity's own service credential until it succeeds, and rooms passes it on to messaging.

Access tokens are checked locally by each service and cannot be recalled; from the commit on, every
identity call with the deleted account's token answers UNAUTHENTICATED `account_deleted` (so do the
edge's /auth/me and refresh), identity issues no more room tokens for it, and rooms refuses its token
for creating or joining rooms once it forgot the account. What is left is the access token's own
lifetime (ACCESS_TOKEN_TTL, 15 minutes by default) for services that only verify signatures.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import grpc
import redis

from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common import outbox
from chatpop_common.errors import NotFound, PermissionDenied, ResourceExhausted
from chatpop_common.fixed_window import FixedWindowLimiter
from chatpop_common.keyslots import tagged
from chatpop_common.wording import wait_words
from chatpop_identity import audit
from chatpop_identity.credentials import PASSWORD_MAX_LENGTH, Passwords
from chatpop_identity.tokens import TokenIssuer

log = logging.getLogger(__name__)

DELETED = "deleted"
TOPIC = "account.deleted"
ACCOUNT_DELETED = "identity.account_deleted"
FORGET_TIMEOUT = 30.0

_TOMBSTONE = """
UPDATE identities SET kind = 'deleted', email = NULL, password_hash = NULL, reserved_username = NULL,
    reserved_username_lower = NULL, reserved_username_changed_at = NULL, is_admin = false,
    deleted_at = now()
WHERE id = $1 AND kind = 'user' AND password_hash = $2
"""


@dataclass(frozen=True, slots=True)
class Deletion:
    subject: str
    erase_messages: bool


class AccountDeletions:
    def __init__(self, pool: asyncpg.Pool, passwords: Passwords, limiter: FixedWindowLimiter) -> None:
        self._pool = pool
        self._passwords = passwords
        self._limiter = limiter

    async def delete(self, identity_id: uuid.UUID, password: str, *, erase_messages: bool) -> Deletion:
        row = await self._pool.fetchrow(
            "SELECT kind, password_hash FROM identities WHERE id = $1", identity_id
        )
        if row is None or row["kind"] != "user" or row["password_hash"] is None:
            raise NotFound("This account no longer exists.", code="identity_not_found")
        await self._limit(identity_id)
        verification = await self._passwords.verify(row["password_hash"], password[: PASSWORD_MAX_LENGTH + 1])
        if not verification.ok:
            raise PermissionDenied("The password is not right.", code="wrong_password")
        subject = str(identity_id)
        deletion = Deletion(subject, erase_messages)
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(_TOMBSTONE, identity_id, row["password_hash"])
            if status != "UPDATE 1":
                # The password changed (or the account went) between the check and now.
                raise PermissionDenied("The password is not right.", code="wrong_password")
            await conn.execute("DELETE FROM refresh_tokens WHERE identity_id = $1", identity_id)
            await conn.execute("DELETE FROM password_resets WHERE identity_id = $1", identity_id)
            await conn.execute("DELETE FROM released_usernames WHERE previous_owner = $1", identity_id)
            await audit.record(
                conn,
                audit.NewEvent(
                    kind=ACCOUNT_DELETED,
                    actor=subject,
                    target=subject,
                    details={"erase_messages": erase_messages},
                    idempotency_key=f"{ACCOUNT_DELETED}:{subject}",
                ),
            )
            payload = json.dumps({"subject": subject, "erase_messages": erase_messages}).encode()
            await outbox.add(conn, TOPIC, payload, subject)
        return deletion

    async def _limit(self, identity_id: uuid.UUID) -> None:
        """Guessing the password with a stolen access token is slowed to a few tries."""
        try:
            decision = await self._limiter.hit(tagged("identity:account-delete", str(identity_id)))
        except redis.RedisError as exc:
            log.warning("account deletion limits unavailable: %s", exc)
            return
        if not decision.allowed:
            raise ResourceExhausted(
                f"Too many attempts to delete this account. Try again {wait_words(decision.retry_after)}.",
                code="too_many_attempts",
                retry_after=decision.retry_after,
            )


class OwnServiceToken:
    """identity's own service credential, signed here (it is the issuer), renewed halfway through."""

    def __init__(self, tokens: TokenIssuer) -> None:
        self._tokens = tokens
        self._token = ""
        self._renew_at = 0.0

    async def metadata(self) -> Sequence[tuple[str, str]]:
        now = time.monotonic()
        if not self._token or now >= self._renew_at:
            signed = self._tokens.service_token("identity")
            self._token = signed.token
            self._renew_at = now + signed.expires_in / 2
        return (("authorization", f"Bearer {self._token}"),)


def _deletion(message: outbox.Message) -> Deletion:
    try:
        body = json.loads(message.payload)
        return Deletion(str(body["subject"]), bool(body["erase_messages"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise outbox.PermanentFailure(f"not an account deletion: {exc}") from exc


class ForgetDelivery:
    """The `account.deleted` outbox handler: rooms' ForgetSubject, until it succeeds."""

    def __init__(self, rooms: rooms_pb2_grpc.RoomsServiceStub, credentials: OwnServiceToken) -> None:
        self._rooms = rooms
        self._credentials = credentials

    async def __call__(self, messages: Sequence[outbox.Message]) -> None:
        for message in messages:
            deletion = _deletion(message)
            try:
                await self._rooms.ForgetSubject(
                    rooms_pb2.ForgetSubjectRequest(
                        subject=deletion.subject, erase_messages=deletion.erase_messages
                    ),
                    metadata=await self._credentials.metadata(),
                    timeout=FORGET_TIMEOUT,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise outbox.PermanentFailure(f"ForgetSubject refused: {exc.details()}") from exc
                raise

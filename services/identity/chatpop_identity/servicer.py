"""IdentityService: anonymous sessions, accounts, token pairs, public keys and room tokens."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import redis

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop_common.auth import Principal, current_principal, require_principal
from chatpop_common.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from chatpop_common.keyslots import tagged
from chatpop_common.service_auth import SERVICE_NAMES, proof_is_valid, require_service
from chatpop_common.token_bucket import TokenBucketLimiter
from chatpop_common.usernames import USERNAME_MAX_LENGTH, normalize_username, username_key
from chatpop_common.wording import wait_words
from chatpop_identity import audit
from chatpop_identity.account_deletion import DELETED, AccountDeletions
from chatpop_identity.admins import Admin, Admins
from chatpop_identity.credentials import (
    EMAIL_MAX_LENGTH,
    PASSWORD_MAX_LENGTH,
    Passwords,
    check_password,
    normalize_email,
)
from chatpop_identity.generator import DEFAULT_DIGITS, UsernameGenerator
from chatpop_identity.keys import KeyRing
from chatpop_identity.login_failures import LoginFailures
from chatpop_identity.password_changes import PasswordChanges
from chatpop_identity.quarantine import quarantined
from chatpop_identity.site_bans import (
    SiteBans,
    check_identity_id,
    check_ip_hash,
    check_limit,
    check_reason,
    site_banned,
)
from chatpop_identity.store import (
    ANONYMOUS,
    USER,
    IdentityRecord,
    IdentityStore,
    NewRefreshToken,
    RotationStatus,
)
from chatpop_identity.tokens import RoomGrant, TokenIssuer
from chatpop_identity.username_changes import UsernameChanges

_KINDS = {
    ANONYMOUS: identity_pb2.IDENTITY_KIND_ANONYMOUS,
    USER: identity_pb2.IDENTITY_KIND_USER,
}
log = logging.getLogger(__name__)

# The services whose credential may append to the audit log.
AUDIT_WRITERS = ("rooms", "messaging", "payments")
# A keyed hash is short; anything longer is not one.
CLIENT_IP_HASH_MAX = 128
SUGGEST_MAX = 50
SUGGEST_DEFAULT = 10
_PROBLEMS = {
    "username_invalid": identity_pb2.USERNAME_PROBLEM_INVALID,
    "username_reserved": identity_pb2.USERNAME_PROBLEM_RESERVED_WORD,
    "username_profane": identity_pb2.USERNAME_PROBLEM_PROFANITY,
}
# One message for a wrong email and a wrong password, so replies do not reveal which accounts exist.
_BAD_CREDENTIALS = "The email or password is incorrect."

Now = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _uuid(value: str, field: str) -> uuid.UUID:
    text = value.strip()
    if not text:
        raise InvalidArgument(f"{field} is required", code="invalid_argument")
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidArgument(f"{field} must be a UUID", code="invalid_argument") from None


def identity_message(identity: IdentityRecord) -> identity_pb2.Identity:
    message = identity_pb2.Identity(
        id=str(identity.id),
        kind=_KINDS.get(identity.kind, identity_pb2.IDENTITY_KIND_UNSPECIFIED),
    )
    if identity.kind == USER:
        message.email = identity.email or ""
        message.reserved_username = identity.reserved_username or ""
    message.created_at.FromDatetime(identity.created_at)
    return message


def audit_event_message(event: audit.Event) -> identity_pb2.AuditEvent:
    message = identity_pb2.AuditEvent(
        id=event.id,
        kind=event.kind,
        actor=event.actor or "",
        target=event.target or "",
        room_id=str(event.room_id) if event.room_id else "",
        ip_hash=event.ip_hash or "",
        details_json=json.dumps(event.details, separators=(",", ":")),
    )
    message.at.FromDatetime(event.at)
    return message


def admin_message(admin: Admin) -> identity_pb2.AdminAccount:
    message = identity_pb2.AdminAccount(
        user_id=str(admin.account), email=admin.email, username=admin.username or ""
    )
    if admin.granted_at is not None:
        message.granted_at.FromDatetime(admin.granted_at)
    return message


def _client_ip_hash(value: str) -> str:
    """A keyed hash as callers send it; it goes into Postgres (the audit log), which holds no NUL."""
    if len(value) > CLIENT_IP_HASH_MAX or "\x00" in value:
        raise InvalidArgument("client_ip_hash is not a hash.", code="invalid_client_ip_hash")
    return value


def _time_bound(request: Any, name: str) -> datetime | None:
    if not request.HasField(name):
        return None
    try:
        bound: datetime = getattr(request, name).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{name} is not a usable time.", code="invalid_argument") from None
    return bound


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(
        self,
        *,
        store: IdentityStore,
        keys: KeyRing,
        tokens: TokenIssuer,
        passwords: Passwords,
        refresh_ttl: int,
        generator: UsernameGenerator,
        password_changes: PasswordChanges,
        username_changes: UsernameChanges,
        audit_log: audit.AuditLog,
        login_failures: LoginFailures,
        site_bans: SiteBans,
        admins: Admins,
        service_token_secret: str,
        session_limiter: TokenBucketLimiter | None = None,
        account_deletions: AccountDeletions | None = None,
        now: Now = _utcnow,
    ) -> None:
        self._account_deletions = account_deletions
        self._service_token_secret = service_token_secret
        self._store = store
        self._audit = audit_log
        self._login_failures = login_failures
        self._site_bans = site_bans
        self._admins = admins
        self._generator = generator
        self._password_changes = password_changes
        self._username_changes = username_changes
        self._session_limiter = session_limiter
        self._keys = keys
        self._tokens = tokens
        self._passwords = passwords
        self._refresh_ttl = refresh_ttl
        self._now = now

    def _new_refresh(self) -> tuple[str, NewRefreshToken]:
        token = secrets.token_urlsafe(32)
        expires_at = self._now() + timedelta(seconds=self._refresh_ttl)
        return token, NewRefreshToken(token_hash=hash_refresh_token(token), expires_at=expires_at)

    def _pair(self, identity: IdentityRecord, refresh_token: str) -> identity_pb2.TokenPair:
        access = self._tokens.access_token(str(identity.id), identity.kind, admin=identity.is_admin)
        return identity_pb2.TokenPair(
            access_token=access.token,
            refresh_token=refresh_token,
            access_expires_in=access.expires_in,
            refresh_expires_in=self._refresh_ttl,
        )

    async def CreateAnonymousSession(
        self, request: identity_pb2.CreateAnonymousSessionRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.CreateAnonymousSessionResponse:
        if _client_ip_hash(request.client_ip_hash):
            await self._refuse_banned_network(request.client_ip_hash)
            await self._limit_sessions(request.client_ip_hash)
        refresh_token, refresh = self._new_refresh()
        identity = await self._store.create_anonymous(refresh)
        return identity_pb2.CreateAnonymousSessionResponse(
            identity=identity_message(identity), tokens=self._pair(identity, refresh_token)
        )

    async def _refuse_banned_network(self, client_ip_hash: str) -> None:
        """PERMISSION_DENIED `site_banned` when the caller's network is banned site-wide. Asked before
        anything else, so the answer tells nothing about accounts."""
        if client_ip_hash and await self._site_bans.banned(client_ip_hash=client_ip_hash):
            raise site_banned()

    async def _limit_sessions(self, client_ip_hash: str) -> None:
        """At most N new anonymous sessions per client IP per window (accounts are not limited here)."""
        if self._session_limiter is None:
            return
        try:
            decision = await self._session_limiter.hit(tagged("identity:anon-sessions", client_ip_hash))
        except redis.RedisError as exc:
            # A Redis outage must not lock every newcomer out; the limit resumes with Redis.
            log.warning("session limits unavailable: %s", exc)
            return
        if not decision.allowed:
            raise ResourceExhausted(
                "Too many new sessions were started from your network. Sign in, or try again"
                f" {wait_words(decision.retry_after)}.",
                code="too_many_sessions",
                retry_after=decision.retry_after,
            )

    async def Register(
        self, request: identity_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.RegisterResponse:
        # An anonymous token in the metadata changes nothing: the account is a separate identity
        # and the anonymous session lives on beside it.
        await self._refuse_banned_network(_client_ip_hash(request.client_ip_hash))
        email = normalize_email(request.email)
        password = check_password(request.password)
        username = (
            normalize_username(request.reserved_username) if request.reserved_username.strip() else None
        )
        password_hash = await self._passwords.hash(password)
        refresh_token, refresh = self._new_refresh()
        identity = await self._store.create_user(
            email=email, password_hash=password_hash, reserved_username=username, refresh=refresh
        )
        return identity_pb2.RegisterResponse(
            identity=identity_message(identity), tokens=self._pair(identity, refresh_token)
        )

    async def Login(
        self, request: identity_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.LoginResponse:
        # Every failure path spends one hash verification and one count in the audit log's tallies,
        # so timing says nothing about accounts.
        ip_hash = _client_ip_hash(request.client_ip_hash)
        await self._refuse_banned_network(ip_hash)
        password = request.password[: PASSWORD_MAX_LENGTH + 1]
        try:
            email = normalize_email(request.email)
        except InvalidArgument:
            email = ""
        identity = await self._store.find_user_by_email(email) if email else None
        if identity is None or identity.password_hash is None:
            await self._passwords.verify_dummy(password)
            typed = email or request.email.strip().lower()[:EMAIL_MAX_LENGTH]
            await self._login_failures.count(typed, ip_hash, None)
            raise Unauthenticated(_BAD_CREDENTIALS, code="invalid_credentials")
        verification = await self._passwords.verify(identity.password_hash, password)
        if not verification.ok:
            await self._login_failures.count(email, ip_hash, identity.id)
            raise Unauthenticated(_BAD_CREDENTIALS, code="invalid_credentials")
        if await self._site_bans.banned(identity_id=identity.id):
            raise site_banned()
        if verification.new_hash is not None:
            await self._store.replace_password_hash(
                identity.id, identity.password_hash, verification.new_hash
            )
        refresh_token, refresh = self._new_refresh()
        account = str(identity.id)
        await self._store.start_family(
            identity.id,
            refresh,
            audit.NewEvent(kind=audit.LOGIN_SUCCEEDED, actor=account, target=account, ip_hash=ip_hash),
        )
        return identity_pb2.LoginResponse(
            identity=identity_message(identity), tokens=self._pair(identity, refresh_token)
        )

    async def RefreshTokens(
        self, request: identity_pb2.RefreshTokensRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.RefreshTokensResponse:
        ip_hash = _client_ip_hash(request.client_ip_hash)
        if not request.refresh_token:
            raise Unauthenticated("A refresh token is required.", code="invalid_refresh_token")
        if await self._site_bans.token_owner_banned(hash_refresh_token(request.refresh_token)):
            raise site_banned()
        refresh_token, replacement = self._new_refresh()
        rotation = await self._store.rotate(
            hash_refresh_token(request.refresh_token), replacement, self._now(), ip_hash
        )
        if rotation.status is RotationStatus.REUSED:
            raise Unauthenticated(
                "This refresh token was already used; sign in again.", code="refresh_token_reused"
            )
        if rotation.identity is None:
            raise Unauthenticated(
                "The refresh token is invalid or has expired; sign in again.", code="invalid_refresh_token"
            )
        return identity_pb2.RefreshTokensResponse(
            identity=identity_message(rotation.identity), tokens=self._pair(rotation.identity, refresh_token)
        )

    async def Logout(
        self, request: identity_pb2.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.LogoutResponse:
        if not request.refresh_token:
            raise InvalidArgument("A refresh token is required.", code="invalid_argument")
        await self._store.revoke_family_of(hash_refresh_token(request.refresh_token), self._now())
        return identity_pb2.LogoutResponse()

    async def GetIdentity(
        self, request: identity_pb2.GetIdentityRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.GetIdentityResponse:
        principal = require_principal()
        if principal.token_type != "access":
            raise Unauthenticated("An access token is required.", code="invalid_token")
        identity = await self._store.get(_uuid(principal.subject, "the token subject"))
        if identity is None:
            raise NotFound("This identity no longer exists.", code="identity_not_found")
        _refuse_deleted(identity)
        return identity_pb2.GetIdentityResponse(identity=identity_message(identity))

    async def DeleteAccount(
        self, request: identity_pb2.DeleteAccountRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.DeleteAccountResponse:
        principal = _require_account("Only registered accounts can be deleted.")
        if self._account_deletions is None:
            raise PermissionDenied("Accounts cannot be deleted here.", code="account_deletion_unavailable")
        deletion = await self._account_deletions.delete(
            _uuid(principal.subject, "the token subject"),
            request.password,
            erase_messages=request.erase_messages,
        )
        return identity_pb2.DeleteAccountResponse(subject=deletion.subject)

    async def GetPublicKeys(
        self, request: identity_pb2.GetPublicKeysRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.GetPublicKeysResponse:
        return identity_pb2.GetPublicKeysResponse(
            keys=[identity_pb2.PublicKey(**jwk) for jwk in self._keys.jwks()]
        )

    async def IssueRoomToken(
        self, request: identity_pb2.IssueRoomTokenRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.IssueRoomTokenResponse:
        room_id = _uuid(request.room_id, "room_id")
        participant_id = _uuid(request.participant_id, "participant_id")
        subject = _uuid(request.subject, "subject")
        if request.version < 0:
            raise InvalidArgument("Version cannot be negative.", code="invalid_argument")
        username = request.username.strip()
        if not username or len(username) > USERNAME_MAX_LENGTH:
            raise InvalidArgument(
                f"Username must be 1 to {USERNAME_MAX_LENGTH} characters.", code="invalid_argument"
            )
        # The rooms service may forward the joining caller's token; when it does, the token must
        # name the same identity the room token is for.
        caller = current_principal()
        if caller is not None and caller.token_type == "access" and caller.subject != str(subject):
            raise PermissionDenied("The caller's token names another identity.", code="subject_mismatch")
        identity = await self._store.get(subject)
        if identity is None:
            raise NotFound("No identity has this subject.", code="identity_not_found")
        _refuse_deleted(identity)
        signed = self._tokens.room_token(
            RoomGrant(
                room_id=str(room_id),
                participant_id=str(participant_id),
                subject=str(subject),
                kind=identity.kind,
                version=request.version,
                is_host=request.is_host,
                username=username,
            )
        )
        return identity_pb2.IssueRoomTokenResponse(room_token=signed.token, expires_in=signed.expires_in)

    async def CheckUsername(
        self, request: identity_pb2.CheckUsernameRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.CheckUsernameResponse:
        name = request.username.strip()
        try:
            normalize_username(name)
        except InvalidArgument as exc:
            problem = _PROBLEMS.get(exc.code, identity_pb2.USERNAME_PROBLEM_INVALID)
            if problem == identity_pb2.USERNAME_PROBLEM_INVALID:
                return identity_pb2.CheckUsernameResponse(
                    username=name[: USERNAME_MAX_LENGTH * 4],
                    available=False,
                    problem=problem,
                    message=exc.message,
                )
            owner = await self._store.reserved_username_owner(username_key(name))
            return identity_pb2.CheckUsernameResponse(
                username=name,
                available=False,
                problem=problem,
                message=exc.message,
                taken=owner is not None,
                yours=_is_caller(owner),
            )
        owner = await self._store.reserved_username_owner(username_key(name))
        if owner is None:
            held = await self._store.quarantine(username_key(name))
            if held is None or _is_caller(held.previous_owner):
                return identity_pb2.CheckUsernameResponse(username=name, available=True)
            # Held back like a reserved name (taken): rooms refuses it to everyone meanwhile.
            return identity_pb2.CheckUsernameResponse(
                username=name,
                available=False,
                problem=identity_pb2.USERNAME_PROBLEM_QUARANTINED,
                message=quarantined(held, self._now()).message,
                taken=True,
            )
        yours = _is_caller(owner)
        return identity_pb2.CheckUsernameResponse(
            username=name,
            available=False,
            problem=identity_pb2.USERNAME_PROBLEM_TAKEN,
            message="This is already your username." if yours else "That username is already taken.",
            taken=True,
            yours=yours,
        )

    async def ReserveUsername(
        self, request: identity_pb2.ReserveUsernameRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.ReserveUsernameResponse:
        principal = _require_account()
        username = normalize_username(request.username)
        identity = await self._store.reserve_username(_uuid(principal.subject, "the token subject"), username)
        return identity_pb2.ReserveUsernameResponse(identity=identity_message(identity))

    async def SuggestUsernames(
        self, request: identity_pb2.SuggestUsernamesRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.SuggestUsernamesResponse:
        count = request.count or SUGGEST_DEFAULT
        if not 1 <= count <= SUGGEST_MAX:
            raise InvalidArgument(f"Count must be 1 to {SUGGEST_MAX}.", code="invalid_argument")
        if request.digits < 0:
            raise InvalidArgument("Digits cannot be negative.", code="invalid_argument")
        # More digits than the word lists leave room for is capped, not refused: callers escalate
        # blindly as a namespace fills up.
        digits = min(request.digits or DEFAULT_DIGITS, self._generator.max_digits)
        names = self._generator.batch(count, digits)
        reserved = await self._store.reserved_among([username_key(name) for name in names])
        return identity_pb2.SuggestUsernamesResponse(
            usernames=[name for name in names if username_key(name) not in reserved]
        )

    async def ChangeReservedUsername(
        self, request: identity_pb2.ChangeReservedUsernameRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.ChangeReservedUsernameResponse:
        principal = _require_account()
        username = normalize_username(request.username)
        change = await self._username_changes.change(_uuid(principal.subject, "the token subject"), username)
        return identity_pb2.ChangeReservedUsernameResponse(
            identity=identity_message(change.identity), previous_username=change.previous or ""
        )

    async def RequestPasswordReset(
        self, request: identity_pb2.RequestPasswordResetRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.RequestPasswordResetResponse:
        await self._password_changes.request_reset(request.email, _client_ip_hash(request.client_ip_hash))
        return identity_pb2.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: identity_pb2.ResetPasswordRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.ResetPasswordResponse:
        refresh_token, refresh = self._new_refresh()
        identity = await self._password_changes.reset(request.token, request.new_password, refresh)
        return identity_pb2.ResetPasswordResponse(
            identity=identity_message(identity), tokens=self._pair(identity, refresh_token)
        )

    async def ChangePassword(
        self, request: identity_pb2.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.ChangePasswordResponse:
        principal = _require_account("Only registered accounts have a password to change.")
        refresh_token, refresh = self._new_refresh()
        identity = await self._password_changes.change(
            _uuid(principal.subject, "the token subject"),
            request.current_password,
            request.new_password,
            refresh,
        )
        return identity_pb2.ChangePasswordResponse(
            identity=identity_message(identity), tokens=self._pair(identity, refresh_token)
        )

    # --- audit log (admins) -----------------------------------------------------------------------

    async def _require_admin(self) -> None:
        """An admin's access token, of an account that is still an admin: a revoked admin's token
        keeps its claim until it expires, but identity asks its own table."""
        principal = require_principal()
        if principal.token_type != "access" or not principal.is_admin:
            raise PermissionDenied("Only admins may do this.", code="forbidden")
        if not await self._store.is_admin(_uuid(principal.subject, "the token subject")):
            raise PermissionDenied("This account is no longer an admin.", code="forbidden")

    async def ListAuditEvents(
        self, request: identity_pb2.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.ListAuditEventsResponse:
        # Admins, and the operator's admin CLI.
        if require_service("cli", admins=True).token_type != "service":
            await self._require_admin()
        if request.before_id < 0:
            raise InvalidArgument("before_id cannot be negative.", code="invalid_argument")
        filters = audit.Filters(
            kind=audit.check_kind(request.kind),
            actor=audit.check_text(request.actor, "actor"),
            target=audit.check_text(request.target, "target"),
            room_id=audit.check_room_id(request.room_id),
            since=_time_bound(request, "since"),
            until=_time_bound(request, "until"),
        )
        page = await self._audit.page(
            filters, before=request.before_id or None, limit=audit.check_page_size(request.page_size)
        )
        return identity_pb2.ListAuditEventsResponse(
            events=[audit_event_message(event) for event in page.events],
            next_before_id=page.next_before or 0,
        )

    async def RecordAuditEvents(
        self, request: identity_pb2.RecordAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.RecordAuditEventsResponse:
        # Other services' own events come with their service credential; admins may append too.
        caller = require_service(*AUDIT_WRITERS, admins=True)
        if caller.token_type != "service":
            await self._require_admin()
        if not 1 <= len(request.events) <= audit.BATCH_MAX:
            raise InvalidArgument(f"Send 1 to {audit.BATCH_MAX} events.", code="invalid_argument")
        events = [
            audit.check_new_event(
                kind=event.kind,
                actor=event.actor,
                target=event.target,
                room_id=event.room_id,
                ip_hash=event.ip_hash,
                details_json=event.details_json,
                idempotency_key=event.idempotency_key,
            )
            for event in request.events
        ]
        recorded = await self._audit.record_batch(events)
        return identity_pb2.RecordAuditEventsResponse(recorded=recorded)

    # --- site-wide bans (admins) -----------------------------------------------------------------

    async def BanSite(
        self, request: identity_pb2.BanSiteRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.BanSiteResponse:
        await self._require_admin()
        reason = check_reason(request.reason)
        ban, changed = await self._site_bans.ban(
            identity_id=check_identity_id(request.identity_id),
            client_ip_hash=check_ip_hash(request.client_ip_hash),
            reason=reason,
            banned_by=require_principal().subject,
            now=self._now(),
        )
        return identity_pb2.BanSiteResponse(ban=ban.message(), changed=changed)

    async def LiftSiteBan(
        self, request: identity_pb2.LiftSiteBanRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.LiftSiteBanResponse:
        await self._require_admin()
        ban, changed = await self._site_bans.lift(request.ban_id, require_principal().subject)
        return identity_pb2.LiftSiteBanResponse(ban=ban.message(), changed=changed)

    async def ListSiteBans(
        self, request: identity_pb2.ListSiteBansRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.ListSiteBansResponse:
        await self._require_admin()
        bans = await self._site_bans.in_force(check_limit(request.limit))
        return identity_pb2.ListSiteBansResponse(bans=[ban.message() for ban in bans])

    async def CheckSiteBan(
        self, request: identity_pb2.CheckSiteBanRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.CheckSiteBanResponse:
        require_service("rooms", "edge", admins=True)
        banned = await self._site_bans.banned(
            identity_id=check_identity_id(request.identity_id),
            client_ip_hash=check_ip_hash(request.client_ip_hash),
        )
        return identity_pb2.CheckSiteBanResponse(banned=banned)

    async def IssueServiceToken(
        self, request: identity_pb2.IssueServiceTokenRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.IssueServiceTokenResponse:
        service = request.service.strip()
        now = self._now().timestamp()
        if service not in SERVICE_NAMES or not proof_is_valid(
            self._service_token_secret, service, request.issued_at, request.proof, now
        ):
            log.warning("service token refused", extra={"service": service[:32]})
            raise Unauthenticated("The service proof is wrong or too old.", code="invalid_service_proof")
        signed = self._tokens.service_token(service)
        return identity_pb2.IssueServiceTokenResponse(
            service_token=signed.token, expires_in=signed.expires_in
        )

    async def GetAuditStats(
        self, request: identity_pb2.GetAuditStatsRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.GetAuditStatsResponse:
        await self._require_admin()
        return identity_pb2.GetAuditStatsResponse(events_today=await self._audit.count_today())

    # --- the admin role (the admin CLI) ----------------------------------------------------------

    async def GrantAdmin(
        self, request: identity_pb2.GrantAdminRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.GrantAdminResponse:
        require_service("cli")
        change = await self._admins.set(normalize_email(request.email), True)
        return identity_pb2.GrantAdminResponse(user_id=str(change.account), changed=change.changed)

    async def RevokeAdmin(
        self, request: identity_pb2.RevokeAdminRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.RevokeAdminResponse:
        require_service("cli")
        change = await self._admins.set(normalize_email(request.email), False)
        return identity_pb2.RevokeAdminResponse(user_id=str(change.account), changed=change.changed)

    async def ListAdmins(
        self, request: identity_pb2.ListAdminsRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.ListAdminsResponse:
        require_service("cli")
        admins = await self._admins.current()
        return identity_pb2.ListAdminsResponse(admins=[admin_message(admin) for admin in admins])


def _refuse_deleted(identity: IdentityRecord) -> None:
    """A deleted account's tokens outlive it until they expire; identity honours none of them."""
    if identity.kind == DELETED:
        raise Unauthenticated("This account was deleted.", code="account_deleted")


def _is_caller(owner: uuid.UUID | None) -> bool:
    caller = current_principal()
    return (
        owner is not None
        and caller is not None
        and caller.token_type == "access"
        and caller.subject == str(owner)
    )


def _require_account(refusal: str = "Only registered accounts can reserve a username.") -> Principal:
    principal = require_principal()
    if principal.token_type != "access":
        raise Unauthenticated("An access token is required.", code="invalid_token")
    if principal.kind != USER:
        raise PermissionDenied(refusal, code="account_required")
    return principal

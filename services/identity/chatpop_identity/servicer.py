"""IdentityService: anonymous sessions, accounts, token pairs, public keys and room tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop_common.auth import current_principal, require_principal
from chatpop_common.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from chatpop_common.usernames import USERNAME_MAX_LENGTH, normalize_username
from chatpop_identity.credentials import (
    PASSWORD_MAX_LENGTH,
    Passwords,
    check_password,
    normalize_email,
)
from chatpop_identity.keys import KeyRing
from chatpop_identity.store import (
    ANONYMOUS,
    USER,
    IdentityRecord,
    IdentityStore,
    NewRefreshToken,
    RotationStatus,
)
from chatpop_identity.tokens import RoomGrant, TokenIssuer

_KINDS = {
    ANONYMOUS: identity_pb2.IDENTITY_KIND_ANONYMOUS,
    USER: identity_pb2.IDENTITY_KIND_USER,
}
# A keyed hash is short; anything longer is not one.
CLIENT_IP_HASH_MAX = 128
# One message for a wrong email and a wrong password, so replies do not reveal which accounts exist.
_BAD_CREDENTIALS = "the email or password is incorrect"

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


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(
        self,
        *,
        store: IdentityStore,
        keys: KeyRing,
        tokens: TokenIssuer,
        passwords: Passwords,
        refresh_ttl: int,
        now: Now = _utcnow,
    ) -> None:
        self._store = store
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
        access = self._tokens.access_token(str(identity.id), identity.kind)
        return identity_pb2.TokenPair(
            access_token=access.token,
            refresh_token=refresh_token,
            access_expires_in=access.expires_in,
            refresh_expires_in=self._refresh_ttl,
        )

    async def CreateAnonymousSession(
        self, request: identity_pb2.CreateAnonymousSessionRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.CreateAnonymousSessionResponse:
        if len(request.client_ip_hash) > CLIENT_IP_HASH_MAX:
            raise InvalidArgument("client_ip_hash is too long to be a hash", code="invalid_client_ip_hash")
        refresh_token, refresh = self._new_refresh()
        identity = await self._store.create_anonymous(refresh)
        return identity_pb2.CreateAnonymousSessionResponse(
            identity=identity_message(identity), tokens=self._pair(identity, refresh_token)
        )

    async def Register(
        self, request: identity_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.RegisterResponse:
        # An anonymous token in the metadata changes nothing: the account is a separate identity
        # and the anonymous session lives on beside it.
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
        # Every failure path spends one hash verification, so timing says nothing about accounts.
        password = request.password[: PASSWORD_MAX_LENGTH + 1]
        try:
            email = normalize_email(request.email)
        except InvalidArgument:
            email = ""
        identity = await self._store.find_user_by_email(email) if email else None
        if identity is None or identity.password_hash is None:
            await self._passwords.verify_dummy(password)
            raise Unauthenticated(_BAD_CREDENTIALS, code="invalid_credentials")
        verification = await self._passwords.verify(identity.password_hash, password)
        if not verification.ok:
            raise Unauthenticated(_BAD_CREDENTIALS, code="invalid_credentials")
        if verification.new_hash is not None:
            await self._store.replace_password_hash(
                identity.id, identity.password_hash, verification.new_hash
            )
        refresh_token, refresh = self._new_refresh()
        await self._store.start_family(identity.id, refresh)
        return identity_pb2.LoginResponse(
            identity=identity_message(identity), tokens=self._pair(identity, refresh_token)
        )

    async def RefreshTokens(
        self, request: identity_pb2.RefreshTokensRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.RefreshTokensResponse:
        if not request.refresh_token:
            raise Unauthenticated("a refresh token is required", code="invalid_refresh_token")
        refresh_token, replacement = self._new_refresh()
        rotation = await self._store.rotate(
            hash_refresh_token(request.refresh_token), replacement, self._now()
        )
        if rotation.status is RotationStatus.REUSED:
            raise Unauthenticated(
                "this refresh token was already used; sign in again", code="refresh_token_reused"
            )
        if rotation.identity is None:
            raise Unauthenticated(
                "the refresh token is invalid or has expired; sign in again", code="invalid_refresh_token"
            )
        return identity_pb2.RefreshTokensResponse(
            identity=identity_message(rotation.identity), tokens=self._pair(rotation.identity, refresh_token)
        )

    async def Logout(
        self, request: identity_pb2.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.LogoutResponse:
        if not request.refresh_token:
            raise InvalidArgument("a refresh token is required", code="invalid_argument")
        await self._store.revoke_family_of(hash_refresh_token(request.refresh_token), self._now())
        return identity_pb2.LogoutResponse()

    async def GetIdentity(
        self, request: identity_pb2.GetIdentityRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.GetIdentityResponse:
        principal = require_principal()
        if principal.token_type != "access":
            raise Unauthenticated("an access token is required", code="invalid_token")
        identity = await self._store.get(_uuid(principal.subject, "the token subject"))
        if identity is None:
            raise NotFound("this identity no longer exists", code="identity_not_found")
        return identity_pb2.GetIdentityResponse(identity=identity_message(identity))

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
            raise InvalidArgument("version cannot be negative", code="invalid_argument")
        username = request.username.strip()
        if not username or len(username) > USERNAME_MAX_LENGTH:
            raise InvalidArgument(
                f"username must be 1 to {USERNAME_MAX_LENGTH} characters", code="invalid_argument"
            )
        # The rooms service may forward the joining caller's token; when it does, the token must
        # name the same identity the room token is for.
        caller = current_principal()
        if caller is not None and caller.token_type == "access" and caller.subject != str(subject):
            raise PermissionDenied("the caller's token names another identity", code="subject_mismatch")
        identity = await self._store.get(subject)
        if identity is None:
            raise NotFound("no identity has this subject", code="identity_not_found")
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

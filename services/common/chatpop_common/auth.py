"""Token verification shared by every service.

identity signs two kinds of EdDSA (Ed25519) JWTs, each with a `kid` header:
- access tokens (`typ: access`, audience `chatpop`) name an identity (`sub`) and its kind, and
  carry `adm: true` when the account was an admin at the time the token was issued;
- room tokens (`typ: room`, audience `chatpop:room:<room_id>`) bind a participant to one room;
- service tokens (`typ: service`, audience `chatpop:service`) name a ChatPop service (`sub`), for
  the calls no end user may make (chatpop_common.service_auth).

Every service verifies locally with public keys fetched from identity and cached by kid.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chatpop_common.errors import PermissionDenied, Unauthenticated

ISSUER = "chatpop"
ACCESS_AUDIENCE = "chatpop"
SERVICE_AUDIENCE = "chatpop:service"
SERVICE_TOKEN_TYPE = "service"
ALGORITHM = "EdDSA"
LEEWAY_SECONDS = 5


def room_audience(room_id: str) -> str:
    return f"chatpop:room:{room_id}"


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller. `room_id`/`participant_id` are set for room tokens only."""

    subject: str
    kind: str  # "anonymous" | "user" | "service"
    token_type: str  # "access" | "room" | "service"
    room_id: str = ""
    participant_id: str = ""
    version: int = 0
    is_host: bool = False
    token_id: str = ""
    # Access tokens of admin accounts only (claim `adm`), as of the token's issue.
    is_admin: bool = False

    def require_room(self, room_id: str) -> Principal:
        if self.token_type != "room" or self.room_id != room_id:
            raise PermissionDenied("This token is not valid for this room.", code="wrong_room")
        return self


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("chatpop_principal", default=None)


def current_principal() -> Principal | None:
    return _current.get()


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _current.reset(token)


def require_principal() -> Principal:
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("A valid token is required.", code="unauthenticated")
    return principal


KeyFetcher = Callable[[], Awaitable[Mapping[str, Ed25519PublicKey]]]


class KeyCache:
    """Public keys by kid, refreshed on an unknown kid at most once per `min_refresh` seconds."""

    def __init__(self, fetch: KeyFetcher, *, min_refresh: float = 10.0) -> None:
        self._fetch = fetch
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._last_refresh = 0.0
        self._min_refresh = min_refresh
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> Ed25519PublicKey | None:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            key = self._keys.get(kid)
            stale = time.monotonic() - self._last_refresh >= self._min_refresh
            if (key is None and stale) or not self._keys:
                self._keys = dict(await self._fetch())
                self._last_refresh = time.monotonic()
                key = self._keys.get(kid)
        return key


class TokenVerifier:
    """Verifies access and room tokens: EdDSA only, known kid, issuer, audience, exp/nbf."""

    def __init__(self, keys: KeyCache, *, cache_size: int = 10_000) -> None:
        self._keys = keys
        # Verified tokens by their exact text, with their expiry: a socket or client sends the same
        # token on every call, and an Ed25519 check per call is the costliest part of a small RPC.
        # Only successes are cached; expiry is still checked on every hit.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_size = cache_size

    async def _decode(self, token: str, audience: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The token is malformed.", code="invalid_token") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated("The token uses an unsupported algorithm.", code="invalid_token")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("The token names no signing key.", code="invalid_token")
        key = await self._keys.get(kid)
        if key is None:
            raise Unauthenticated("The token was signed by an unknown key.", code="invalid_token")
        options: Any = {"require": ["exp", "iat", "nbf", "sub", "typ", "iss", "aud"]}
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options=options,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("The token has expired.", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The token is not valid.", code="invalid_token") from exc
        return claims

    async def verify(self, token: str) -> Principal:
        """Verify either kind of token, checking the audience that its type requires."""
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires_at = cached
            if time.time() < expires_at + LEEWAY_SECONDS:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        expires_at, principal = await self._verify_uncached(token)
        self._verified[token] = (principal, expires_at)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return principal

    async def _verify_uncached(self, token: str) -> tuple[float, Principal]:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The token is malformed.", code="invalid_token") from exc
        typ = unverified.get("typ")
        if typ == "access":
            claims = await self._decode(token, audience=ACCESS_AUDIENCE)
            return float(claims["exp"]), Principal(
                subject=str(claims["sub"]),
                kind=str(claims.get("knd", "anonymous")),
                token_type="access",
                token_id=str(claims.get("jti", "")),
                is_admin=claims.get("adm") is True,
            )
        if typ == "room":
            room_id = str(unverified.get("rid", ""))
            claims = await self._decode(token, audience=room_audience(room_id))
            # A process may hold thousands of room principals (one per open socket): the strings
            # many of them share are kept once.
            return float(claims["exp"]), Principal(
                subject=str(claims["sub"]),
                kind=sys.intern(str(claims.get("knd", "anonymous"))),
                token_type="room",
                room_id=sys.intern(str(claims["rid"])),
                participant_id=str(claims.get("pid", "")),
                version=int(claims.get("ver", 0)),
                is_host=bool(claims.get("host", False)),
                token_id=str(claims.get("jti", "")),
            )
        if typ == SERVICE_TOKEN_TYPE:
            claims = await self._decode(token, audience=SERVICE_AUDIENCE)
            return float(claims["exp"]), Principal(
                subject=str(claims["sub"]),
                kind=SERVICE_TOKEN_TYPE,
                token_type=SERVICE_TOKEN_TYPE,
                token_id=str(claims.get("jti", "")),
            )
        raise Unauthenticated("The token has an unknown type.", code="invalid_token")

    async def verify_access(self, token: str) -> Principal:
        principal = await self.verify(token)
        if principal.token_type != "access":
            raise Unauthenticated("An access token is required.", code="invalid_token")
        return principal

    async def verify_room(self, token: str, room_id: str) -> Principal:
        principal = await self.verify(token)
        if principal.token_type != "room":
            raise Unauthenticated("A room token is required.", code="invalid_token")
        return principal.require_room(room_id)


def bearer_from_metadata(metadata: Any) -> str | None:
    """The bearer token from gRPC invocation metadata, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    return None

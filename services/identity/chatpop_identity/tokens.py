"""Signing access, room and service tokens (EdDSA JWTs) as chatpop_common.auth.TokenVerifier checks them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from chatpop_common.auth import (
    ACCESS_AUDIENCE,
    ALGORITHM,
    ISSUER,
    SERVICE_AUDIENCE,
    SERVICE_TOKEN_TYPE,
    room_audience,
)
from chatpop_identity.keys import KeyRing

Clock = Callable[[], float]


@dataclass(frozen=True)
class SignedToken:
    token: str
    expires_in: int
    token_id: str


@dataclass(frozen=True)
class RoomGrant:
    """What a room token states about one participant of one room."""

    room_id: str
    participant_id: str
    subject: str
    kind: str
    version: int
    is_host: bool
    username: str


class TokenIssuer:
    def __init__(
        self,
        keys: KeyRing,
        *,
        access_ttl: int,
        room_ttl: int,
        service_ttl: int = 300,
        clock: Clock = time.time,
    ) -> None:
        self._keys = keys
        self._access_ttl = access_ttl
        self._room_ttl = room_ttl
        self._service_ttl = service_ttl
        self._clock = clock

    def _sign(self, claims: dict[str, Any], ttl: int) -> SignedToken:
        now = int(self._clock())
        token_id = uuid.uuid4().hex
        payload = {
            "iss": ISSUER,
            **claims,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": token_id,
        }
        token = jwt.encode(
            payload,
            self._keys.signing_key,
            algorithm=ALGORITHM,
            headers={"kid": self._keys.kid, "typ": "JWT"},
        )
        return SignedToken(token=token, expires_in=ttl, token_id=token_id)

    def access_token(self, subject: str, kind: str, *, admin: bool = False) -> SignedToken:
        claims: dict[str, Any] = {"aud": ACCESS_AUDIENCE, "sub": subject, "typ": "access", "knd": kind}
        if admin:
            # Only admins' tokens carry the claim; everyone else's token looks as it always did.
            claims["adm"] = True
        return self._sign(claims, self._access_ttl)

    def room_token(self, grant: RoomGrant) -> SignedToken:
        claims = {
            "aud": room_audience(grant.room_id),
            "sub": grant.subject,
            "typ": "room",
            "rid": grant.room_id,
            "pid": grant.participant_id,
            "ver": grant.version,
            "host": grant.is_host,
            "usr": grant.username,
            "knd": grant.kind,
        }
        return self._sign(claims, self._room_ttl)

    def service_token(self, service: str) -> SignedToken:
        claims = {"aud": SERVICE_AUDIENCE, "sub": service, "typ": SERVICE_TOKEN_TYPE}
        return self._sign(claims, self._service_ttl)

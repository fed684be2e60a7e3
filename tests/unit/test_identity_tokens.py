"""Token signing: header, claims, and agreement with chatpop_common.auth.TokenVerifier."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chatpop_common.auth import KeyCache, TokenVerifier
from chatpop_common.errors import PermissionDenied, Unauthenticated
from chatpop_identity.keys import KeyRing, thumbprint
from chatpop_identity.tokens import RoomGrant, TokenIssuer


def _verifier(ring: KeyRing) -> TokenVerifier:
    async def fetch() -> Mapping[str, Ed25519PublicKey]:
        return ring.public_keys

    return TokenVerifier(KeyCache(fetch))


def _grant(room_id: str, **overrides: object) -> RoomGrant:
    values: dict[str, object] = {
        "room_id": room_id,
        "participant_id": str(uuid.uuid4()),
        "subject": str(uuid.uuid4()),
        "kind": "user",
        "version": 3,
        "is_host": True,
        "username": "SwiftWolf123",
    }
    values.update(overrides)
    return RoomGrant(**values)  # type: ignore[arg-type]


def test_kid_is_the_rfc8037_jwk_thumbprint() -> None:
    # RFC 8037 appendix A.1 (key) and A.3 (its RFC 7638 thumbprint).
    seed = base64.urlsafe_b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
    key = Ed25519PrivateKey.from_private_bytes(seed)
    assert thumbprint(key.public_key()) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert KeyRing.create(key).kid == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


async def test_access_token_header_claims_and_verification() -> None:
    ring = KeyRing.create(Ed25519PrivateKey.generate())
    issuer = TokenIssuer(ring, access_ttl=900, room_ttl=3600)
    subject = str(uuid.uuid4())
    before = int(time.time())
    signed = issuer.access_token(subject, "anonymous")

    header = jwt.get_unverified_header(signed.token)
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": ring.kid}
    claims = jwt.decode(signed.token, options={"verify_signature": False})
    assert set(claims) == {"iss", "aud", "sub", "typ", "knd", "iat", "nbf", "exp", "jti"}
    assert claims["iss"] == "chatpop"
    assert claims["aud"] == "chatpop"
    assert claims["sub"] == subject
    assert claims["typ"] == "access"
    assert claims["knd"] == "anonymous"
    assert claims["nbf"] == claims["iat"] >= before
    assert claims["exp"] == claims["iat"] + 900
    assert claims["jti"] == signed.token_id
    assert signed.expires_in == 900

    principal = await _verifier(ring).verify_access(signed.token)
    assert principal.subject == subject
    assert principal.kind == "anonymous"
    assert principal.token_type == "access"
    assert principal.token_id == signed.token_id


def test_every_token_gets_its_own_id() -> None:
    issuer = TokenIssuer(KeyRing.create(Ed25519PrivateKey.generate()), access_ttl=60, room_ttl=60)
    first = issuer.access_token(str(uuid.uuid4()), "user")
    second = issuer.access_token(str(uuid.uuid4()), "user")
    assert first.token_id != second.token_id


async def test_room_token_claims_and_room_binding() -> None:
    ring = KeyRing.create(Ed25519PrivateKey.generate())
    issuer = TokenIssuer(ring, access_ttl=900, room_ttl=3600)
    room_id = str(uuid.uuid4())
    grant = _grant(room_id)
    signed = issuer.room_token(grant)

    claims = jwt.decode(signed.token, options={"verify_signature": False})
    assert claims["aud"] == f"chatpop:room:{room_id}"
    assert claims["typ"] == "room"
    assert (claims["rid"], claims["pid"], claims["sub"]) == (room_id, grant.participant_id, grant.subject)
    assert (claims["ver"], claims["host"], claims["usr"], claims["knd"]) == (3, True, "SwiftWolf123", "user")
    assert claims["exp"] - claims["iat"] == 3600

    verifier = _verifier(ring)
    principal = await verifier.verify_room(signed.token, room_id)
    assert principal.room_id == room_id
    assert principal.participant_id == grant.participant_id
    assert principal.version == 3
    assert principal.is_host is True
    assert principal.kind == "user"
    with pytest.raises(PermissionDenied) as info:
        await verifier.verify_room(signed.token, str(uuid.uuid4()))
    assert info.value.code == "wrong_room"
    with pytest.raises(Unauthenticated):
        await verifier.verify_access(signed.token)


async def test_expired_token_is_rejected() -> None:
    ring = KeyRing.create(Ed25519PrivateKey.generate())
    an_hour_ago = time.time() - 3600
    issuer = TokenIssuer(ring, access_ttl=900, room_ttl=900, clock=lambda: an_hour_ago)
    with pytest.raises(Unauthenticated) as info:
        await _verifier(ring).verify(issuer.access_token(str(uuid.uuid4()), "user").token)
    assert info.value.code == "token_expired"


async def test_token_from_another_key_is_rejected() -> None:
    ring = KeyRing.create(Ed25519PrivateKey.generate())
    stranger = KeyRing.create(Ed25519PrivateKey.generate())
    forged = TokenIssuer(stranger, access_ttl=60, room_ttl=60).access_token(str(uuid.uuid4()), "user")
    with pytest.raises(Unauthenticated) as info:
        await _verifier(ring).verify(forged.token)
    assert info.value.code == "invalid_token"


async def test_retired_key_still_verifies_while_listed() -> None:
    old = KeyRing.create(Ed25519PrivateKey.generate())
    new = KeyRing.create(Ed25519PrivateKey.generate(), [old.signing_key.public_key()])
    token = TokenIssuer(old, access_ttl=60, room_ttl=60).access_token(str(uuid.uuid4()), "user").token
    assert (await _verifier(new).verify(token)).kind == "user"
    assert [jwk["kid"] for jwk in new.jwks()] == [new.kid, old.kid]
    assert all(
        jwk.keys() == {"kty", "crv", "x", "kid", "alg", "use"}
        and (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
        for jwk in new.jwks()
    )

"""The admin claim: only admins' access tokens carry it, and only an access token's `adm: true` counts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chatpop_common.auth import KeyCache, TokenVerifier, room_audience
from chatpop_edge.app import create_app
from chatpop_edge.settings import EdgeSettings
from chatpop_identity.keys import KeyRing
from chatpop_identity.tokens import TokenIssuer


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.create(Ed25519PrivateKey.generate())


def _verifier(ring: KeyRing) -> TokenVerifier:
    async def fetch() -> Mapping[str, Ed25519PublicKey]:
        return ring.public_keys

    return TokenVerifier(KeyCache(fetch))


def _signed(ring: KeyRing, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": "chatpop", "sub": str(uuid.uuid4()), "iat": now, "nbf": now, "exp": now + 60, **claims}
    return jwt.encode(payload, ring.signing_key, algorithm="EdDSA", headers={"kid": ring.kid})


async def test_an_admins_access_token_carries_the_claim(ring: KeyRing) -> None:
    issuer = TokenIssuer(ring, access_ttl=60, room_ttl=60)
    admin = issuer.access_token(str(uuid.uuid4()), "user", admin=True).token
    assert jwt.decode(admin, options={"verify_signature": False})["adm"] is True
    assert (await _verifier(ring).verify_access(admin)).is_admin is True


async def test_everyone_elses_token_has_no_claim_at_all(ring: KeyRing) -> None:
    issuer = TokenIssuer(ring, access_ttl=60, room_ttl=60)
    for kind in ("user", "anonymous"):
        token = issuer.access_token(str(uuid.uuid4()), kind).token
        assert "adm" not in jwt.decode(token, options={"verify_signature": False})
        assert (await _verifier(ring).verify_access(token)).is_admin is False


@pytest.mark.parametrize("value", ["true", 1, [True], {"admin": True}, None])
async def test_only_a_literal_true_counts(ring: KeyRing, value: object) -> None:
    token = _signed(ring, aud="chatpop", typ="access", knd="user", adm=value)
    assert (await _verifier(ring).verify_access(token)).is_admin is False


async def test_a_room_token_never_makes_an_admin(ring: KeyRing) -> None:
    room_id = str(uuid.uuid4())
    token = _signed(ring, aud=room_audience(room_id), typ="room", rid=room_id, pid="p", adm=True)
    assert (await _verifier(ring).verify_room(token, room_id)).is_admin is False


def test_the_audit_resource_is_documented_with_its_refusals() -> None:
    document = create_app(
        EdgeSettings.model_validate(
            {
                "ip_hash_key": "unit-test-ip-hash-key",
                "media_url_key": "m" * 32,
                "service_token_secret": "s" * 32,
            }
        )
    ).openapi()
    operation = document["paths"]["/api/v1/admin/audit"]["get"]
    assert {"401", "403", "422"} <= set(operation["responses"])
    assert {p["name"] for p in operation["parameters"]} == {
        "kind",
        "actor",
        "target",
        "room_id",
        "before",
        "limit",
    }
    limit = next(p for p in operation["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 200, 50)

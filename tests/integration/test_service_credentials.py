"""Service credentials: identity issues a service token only for a valid proof, and the calls that no
end user may make accept that token (of an allowed service) and refuse users' tokens, forged and
expired ones."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chatpop.identity.v1 import identity_pb2
from chatpop_common.clients import bearer
from chatpop_common.errors import error_details
from chatpop_common.service_auth import ServiceCredentials, service_proof
from chatpop_identity.keys import KeyRing, load_private_key
from tests.integration.identity_server import PASSWORD, SERVICE_TOKEN_SECRET

if TYPE_CHECKING:
    from chatpop.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub as Stub


async def _fails(call: Any, status: grpc.StatusCode, code: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == status, info.value.details()
    assert error_details(info.value)[0] == code, info.value.details()


async def _issue(
    stub: Stub, service: str, issued_at: int, proof: str
) -> identity_pb2.IssueServiceTokenResponse:
    response: identity_pb2.IssueServiceTokenResponse = await stub.IssueServiceToken(
        identity_pb2.IssueServiceTokenRequest(service=service, issued_at=issued_at, proof=proof)
    )
    return response


def _record(stub: Stub, token: str, kind: str = "room.test_event") -> Any:
    event = identity_pb2.NewAuditEvent(kind=kind, idempotency_key=f"test:{uuid.uuid4().hex}")
    return stub.RecordAuditEvents(
        identity_pb2.RecordAuditEventsRequest(events=[event]), metadata=bearer(token)
    )


def _sign(key: Ed25519PrivateKey, claims: dict[str, Any]) -> str:
    kid = KeyRing.create(key).kid
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


def _service_claims(service: str, *, age: int = 0, ttl: int = 300) -> dict[str, Any]:
    now = int(time.time()) - age
    return {
        "iss": "chatpop",
        "aud": "chatpop:service",
        "sub": service,
        "typ": "service",
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }


async def test_a_service_token_is_issued_only_for_a_valid_proof(stub: Stub) -> None:
    now = int(time.time())
    issued = await _issue(stub, "rooms", now, service_proof(SERVICE_TOKEN_SECRET, "rooms", now))
    claims = jwt.decode(issued.service_token, options={"verify_signature": False})
    assert (claims["typ"], claims["sub"], claims["aud"]) == ("service", "rooms", "chatpop:service")
    assert 0 < issued.expires_in <= 300

    wrong_secret = "another-secret-that-is-long-enough-0123456789"
    refusals = [
        ("rooms", now, service_proof(wrong_secret, "rooms", now)),
        # A proof made for one service does not serve another.
        ("messaging", now, service_proof(SERVICE_TOKEN_SECRET, "rooms", now)),
        # Too old, and from too far in the future.
        ("rooms", now - 600, service_proof(SERVICE_TOKEN_SECRET, "rooms", now - 600)),
        ("rooms", now + 600, service_proof(SERVICE_TOKEN_SECRET, "rooms", now + 600)),
        # Not one of ChatPop's services; the secret itself is not a proof.
        ("somebody", now, service_proof(SERVICE_TOKEN_SECRET, "somebody", now)),
        ("rooms", now, SERVICE_TOKEN_SECRET),
        ("rooms", now, ""),
    ]
    for service, issued_at, proof in refusals:
        await _fails(
            _issue(stub, service, issued_at, proof), grpc.StatusCode.UNAUTHENTICATED, "invalid_service_proof"
        )


async def test_rooms_credential_records_audit_events_and_user_tokens_cannot(stub: Stub) -> None:
    credentials = ServiceCredentials(stub, "rooms", SERVICE_TOKEN_SECRET)  # type: ignore[arg-type]
    metadata = await credentials.metadata()
    kind = f"room.test_{uuid.uuid4().hex[:8]}"
    event = identity_pb2.NewAuditEvent(kind=kind, actor="host", idempotency_key=f"test:{uuid.uuid4().hex}")
    recorded = await stub.RecordAuditEvents(
        identity_pb2.RecordAuditEventsRequest(events=[event]), metadata=metadata
    )
    assert recorded.recorded == 1
    # The same token is reused until it is halfway through its life.
    assert await credentials.metadata() == metadata

    email = f"svc-{uuid.uuid4().hex[:12]}@example.com"
    account = await stub.Register(identity_pb2.RegisterRequest(email=email, password=PASSWORD))
    anonymous = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    for token in (account.tokens.access_token, anonymous.tokens.access_token):
        await _fails(_record(stub, token), grpc.StatusCode.PERMISSION_DENIED, "forbidden")
    await _fails(
        stub.RecordAuditEvents(identity_pb2.RecordAuditEventsRequest(events=[event])),
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated",
    )
    # The edge holds a service token too, but it does not write to the audit log.
    edge = await ServiceCredentials(stub, "edge", SERVICE_TOKEN_SECRET).token()  # type: ignore[arg-type]
    await _fails(_record(stub, edge), grpc.StatusCode.PERMISSION_DENIED, "forbidden")

    # An admin sees what rooms recorded.
    cli = await ServiceCredentials(stub, "cli", SERVICE_TOKEN_SECRET).metadata()  # type: ignore[arg-type]
    await stub.GrantAdmin(identity_pb2.GrantAdminRequest(email=email), metadata=cli)
    admin = await stub.Login(identity_pb2.LoginRequest(email=email, password=PASSWORD))
    listed = await stub.ListAuditEvents(
        identity_pb2.ListAuditEventsRequest(kind=kind), metadata=bearer(admin.tokens.access_token)
    )
    assert [(e.kind, e.actor) for e in listed.events] == [(kind, "host")]
    assert json.loads(listed.events[0].details_json) == {}


async def test_expired_and_forged_service_tokens_are_refused(stub: Stub, key_file: Path) -> None:
    key = load_private_key(key_file)
    expired = _sign(key, _service_claims("rooms", age=3600))
    await _fails(_record(stub, expired), grpc.StatusCode.UNAUTHENTICATED, "token_expired")
    forged = _sign(Ed25519PrivateKey.generate(), _service_claims("rooms"))
    await _fails(_record(stub, forged), grpc.StatusCode.UNAUTHENTICATED, "invalid_token")
    # A token of identity's own key but for the access audience is not a service token.
    wrong_audience = _sign(key, {**_service_claims("rooms"), "aud": "chatpop"})
    await _fails(_record(stub, wrong_audience), grpc.StatusCode.UNAUTHENTICATED, "invalid_token")
    # Signed properly, it works: the refusals above are about the tokens, not the call.
    valid = _sign(key, _service_claims("rooms"))
    recorded = await _record(stub, valid)
    assert recorded.recorded == 1


async def test_site_ban_checks_need_a_service_credential(stub: Stub) -> None:
    request = identity_pb2.CheckSiteBanRequest(identity_id=str(uuid.uuid4()))
    await _fails(stub.CheckSiteBan(request), grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")
    anonymous = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    await _fails(
        stub.CheckSiteBan(request, metadata=bearer(anonymous.tokens.access_token)),
        grpc.StatusCode.PERMISSION_DENIED,
        "forbidden",
    )
    rooms = ServiceCredentials(stub, "rooms", SERVICE_TOKEN_SECRET)  # type: ignore[arg-type]
    answer = await stub.CheckSiteBan(request, metadata=await rooms.metadata())
    assert answer.banned is False

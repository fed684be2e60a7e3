"""IdentityService over gRPC: a real server in-process on a free port, against the test Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from prometheus_client import REGISTRY

from chatpop.identity.v1 import identity_pb2
from chatpop_common.auth import KeyCache, TokenVerifier
from chatpop_common.clients import bearer, jwks_to_keys
from chatpop_common.datastores import create_pg_pool
from chatpop_common.errors import PermissionDenied, error_details
from chatpop_identity.keys import load_private_key, public_pem, thumbprint, write_new_key
from chatpop_identity.store import IdentityStore
from tests.integration.identity_server import PASSWORD, running_identity

if TYPE_CHECKING:
    from chatpop.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub as Stub


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "identity"})
    yield conn
    await conn.close()


def _email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


# Consonants only: random names can then never spell a word the profanity filter refuses.
_NAME_LETTERS = "bdghjmnpqrvwxz"


def _letters(count: int) -> str:
    return "".join(_NAME_LETTERS[byte % len(_NAME_LETTERS)] for byte in os.urandom(count))


def _username() -> str:
    return f"u_{_letters(10)}"


async def _fails(call: Any, status: grpc.StatusCode, code: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == status, info.value.details()
    assert error_details(info.value)[0] == code
    return info.value


async def _register(stub: Stub, email: str | None = None, **fields: Any) -> identity_pb2.RegisterResponse:
    request = identity_pb2.RegisterRequest(email=email or _email(), password=PASSWORD, **fields)
    response: identity_pb2.RegisterResponse = await stub.Register(request)
    return response


def _verifier(stub: Stub) -> TokenVerifier:
    """Verifies the way other services do: with keys fetched over GetPublicKeys."""

    async def fetch() -> Mapping[str, Ed25519PublicKey]:
        response = await stub.GetPublicKeys(identity_pb2.GetPublicKeysRequest())
        return jwks_to_keys(response.keys)

    return TokenVerifier(KeyCache(fetch))


async def _me(stub: Stub, token: str) -> identity_pb2.Identity:
    response = await stub.GetIdentity(identity_pb2.GetIdentityRequest(), metadata=bearer(token))
    identity: identity_pb2.Identity = response.identity
    return identity


async def test_anonymous_session_holds_no_personal_data(stub: Stub) -> None:
    response = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    identity = response.identity
    assert uuid.UUID(identity.id)
    assert identity.kind == identity_pb2.IDENTITY_KIND_ANONYMOUS
    assert identity.email == ""
    assert identity.reserved_username == ""
    assert identity.created_at.seconds > 0
    tokens = response.tokens
    assert tokens.access_token and tokens.refresh_token
    assert (tokens.access_expires_in, tokens.refresh_expires_in) == (900, 30 * 86400)

    principal = await _verifier(stub).verify_access(tokens.access_token)
    assert (principal.subject, principal.kind) == (identity.id, "anonymous")
    assert await _me(stub, tokens.access_token) == identity


async def test_anonymous_session_refuses_an_oversized_ip_hash(stub: Stub) -> None:
    request = identity_pb2.CreateAnonymousSessionRequest(client_ip_hash="x" * 129)
    await _fails(
        stub.CreateAnonymousSession(request), grpc.StatusCode.INVALID_ARGUMENT, "invalid_client_ip_hash"
    )
    accepted = await stub.CreateAnonymousSession(
        identity_pb2.CreateAnonymousSessionRequest(client_ip_hash="a" * 64)
    )
    assert accepted.identity.kind == identity_pb2.IDENTITY_KIND_ANONYMOUS


async def test_two_anonymous_sessions_are_different_identities(stub: Stub) -> None:
    first = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    second = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    assert first.identity.id != second.identity.id
    assert first.tokens.refresh_token != second.tokens.refresh_token


async def test_register_normalises_email_and_keeps_username_case(stub: Stub) -> None:
    email = _email()
    username = "Ab_" + _letters(10)
    response = await _register(stub, f"  {email.upper()} ", reserved_username=f" {username} ")
    identity = response.identity
    assert identity.kind == identity_pb2.IDENTITY_KIND_USER
    assert identity.email == email
    assert identity.reserved_username == username

    principal = await _verifier(stub).verify_access(response.tokens.access_token)
    assert (principal.subject, principal.kind) == (identity.id, "user")
    assert await _me(stub, response.tokens.access_token) == identity


async def test_register_then_login(stub: Stub) -> None:
    email = _email()
    registered = await _register(stub, email)
    login = await stub.Login(identity_pb2.LoginRequest(email=f" {email.title()}", password=PASSWORD))
    assert login.identity == registered.identity
    assert login.tokens.refresh_token != registered.tokens.refresh_token
    assert (await _me(stub, login.tokens.access_token)).email == email


async def test_wrong_password_and_unknown_email_look_the_same(stub: Stub) -> None:
    email = _email()
    await _register(stub, email)
    wrong_password = await _fails(
        stub.Login(identity_pb2.LoginRequest(email=email, password="not the password")),
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid_credentials",
    )
    unknown_email = await _fails(
        stub.Login(identity_pb2.LoginRequest(email=_email(), password=PASSWORD)),
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid_credentials",
    )
    malformed_email = await _fails(
        stub.Login(identity_pb2.LoginRequest(email="nobody", password=PASSWORD)),
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid_credentials",
    )
    assert wrong_password.details() == unknown_email.details() == malformed_email.details()


async def test_login_with_empty_credentials_fails(stub: Stub) -> None:
    await _fails(
        stub.Login(identity_pb2.LoginRequest(email="", password="")),
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid_credentials",
    )


async def test_duplicate_email_is_refused_and_the_first_account_survives(stub: Stub) -> None:
    email = _email()
    first = await _register(stub, email)
    await _fails(
        stub.Register(identity_pb2.RegisterRequest(email=email.upper(), password="another password")),
        grpc.StatusCode.ALREADY_EXISTS,
        "email_taken",
    )
    login = await stub.Login(identity_pb2.LoginRequest(email=email, password=PASSWORD))
    assert login.identity.id == first.identity.id


async def test_reserved_username_is_unique_ignoring_case(stub: Stub) -> None:
    username = "Zz_" + _letters(10)
    await _register(stub, reserved_username=username)
    email = _email()
    await _fails(
        stub.Register(
            identity_pb2.RegisterRequest(email=email, password=PASSWORD, reserved_username=username.lower())
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "username_taken",
    )
    # The refused registration left nothing behind: the email is still free.
    assert (await _register(stub, email)).identity.email == email


@pytest.mark.parametrize(
    ("email", "password", "username", "code"),
    [
        ("not-an-email", PASSWORD, "", "invalid_email"),
        ("two@@example.com", PASSWORD, "", "invalid_email"),
        ("spaces in@example.com", PASSWORD, "", "invalid_email"),
        ("nodomain@example", PASSWORD, "", "invalid_email"),
        ("", PASSWORD, "", "invalid_email"),
        (None, "short", "", "weak_password"),
        (None, "x" * 257, "", "weak_password"),
        (None, " " * 10, "", "weak_password"),
        (None, PASSWORD, "abc", "username_invalid"),
        (None, PASSWORD, "bad name!", "username_invalid"),
        (None, PASSWORD, "Admin_1", "username_reserved"),
    ],
)
async def test_register_rejects_bad_input(
    stub: Stub, email: str | None, password: str, username: str, code: str
) -> None:
    fresh_email = email if email is not None else _email()
    request = identity_pb2.RegisterRequest(email=fresh_email, password=password, reserved_username=username)
    error = await _fails(stub.Register(request), grpc.StatusCode.INVALID_ARGUMENT, code)
    assert error.details()
    if email is None:
        # Nothing was created: the same email registers fine with valid input.
        assert (await _register(stub, fresh_email)).identity.email == fresh_email


async def test_registering_with_an_anonymous_token_creates_a_separate_identity(stub: Stub) -> None:
    anonymous = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    request = identity_pb2.RegisterRequest(email=_email(), password=PASSWORD)
    account = await stub.Register(request, metadata=bearer(anonymous.tokens.access_token))
    assert account.identity.id != anonymous.identity.id
    # Both sessions live on side by side.
    assert (await _me(stub, anonymous.tokens.access_token)).kind == identity_pb2.IDENTITY_KIND_ANONYMOUS
    assert (await _me(stub, account.tokens.access_token)).kind == identity_pb2.IDENTITY_KIND_USER
    refreshed = await stub.RefreshTokens(
        identity_pb2.RefreshTokensRequest(refresh_token=anonymous.tokens.refresh_token)
    )
    assert refreshed.identity.id == anonymous.identity.id


async def _refresh(stub: Stub, token: str) -> identity_pb2.RefreshTokensResponse:
    response: identity_pb2.RefreshTokensResponse = await stub.RefreshTokens(
        identity_pb2.RefreshTokensRequest(refresh_token=token)
    )
    return response


async def test_refresh_rotates_and_reuse_revokes_the_family(stub: Stub) -> None:
    email = _email()
    registered = await _register(stub, email)
    first = registered.tokens.refresh_token

    second = await _refresh(stub, first)
    assert second.identity == registered.identity
    assert second.tokens.refresh_token not in {first, ""}
    assert (await _me(stub, second.tokens.access_token)).id == registered.identity.id
    third = await _refresh(stub, second.tokens.refresh_token)

    # A replay of a rotated token means it leaked: the whole family goes, the live token included.
    await _fails(_refresh(stub, first), grpc.StatusCode.UNAUTHENTICATED, "refresh_token_reused")
    await _fails(
        _refresh(stub, third.tokens.refresh_token), grpc.StatusCode.UNAUTHENTICATED, "invalid_refresh_token"
    )
    await _fails(_refresh(stub, first), grpc.StatusCode.UNAUTHENTICATED, "refresh_token_reused")

    # Other sign-ins of the same account are other families and keep working.
    login = await stub.Login(identity_pb2.LoginRequest(email=email, password=PASSWORD))
    assert (await _refresh(stub, login.tokens.refresh_token)).identity.id == registered.identity.id


async def test_concurrent_use_of_one_refresh_token_rotates_once(stub: Stub) -> None:
    session = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    token = session.tokens.refresh_token
    results = await asyncio.gather(*(_refresh(stub, token) for _ in range(4)), return_exceptions=True)
    succeeded = [r for r in results if isinstance(r, identity_pb2.RefreshTokensResponse)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(succeeded) == 1
    assert [error_details(e)[0] for e in failed] == ["refresh_token_reused"] * 3
    # The reuse revoked the family, so the one rotation that won is dead too.
    await _fails(
        _refresh(stub, succeeded[0].tokens.refresh_token),
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid_refresh_token",
    )


async def test_unknown_or_missing_refresh_token_is_invalid(stub: Stub) -> None:
    await _fails(_refresh(stub, "made-up"), grpc.StatusCode.UNAUTHENTICATED, "invalid_refresh_token")
    await _fails(_refresh(stub, ""), grpc.StatusCode.UNAUTHENTICATED, "invalid_refresh_token")


async def test_expired_refresh_token_is_invalid(stub: Stub, db: asyncpg.Connection) -> None:
    session = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    await db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE identity_id = $1",
        uuid.UUID(session.identity.id),
    )
    await _fails(
        _refresh(stub, session.tokens.refresh_token), grpc.StatusCode.UNAUTHENTICATED, "invalid_refresh_token"
    )


async def test_refresh_tokens_are_stored_only_as_hashes(stub: Stub, db: asyncpg.Connection) -> None:
    session = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    rows = await db.fetch(
        "SELECT token_hash FROM refresh_tokens WHERE identity_id = $1", uuid.UUID(session.identity.id)
    )
    stored = [bytes(row["token_hash"]) for row in rows]
    assert stored == [hashlib.sha256(session.tokens.refresh_token.encode()).digest()]


async def _token_rows(db: asyncpg.Connection, identity_id: str) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM refresh_tokens WHERE identity_id = $1", uuid.UUID(identity_id)
    )
    return count


async def _expire(db: asyncpg.Connection, where: str, value: Any) -> None:
    await db.execute(
        f"UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE {where}", value
    )


async def test_wholly_expired_families_are_purged_and_live_ones_kept_whole(
    database_url: str, redis_url: str, key_file: Path, db: asyncpg.Connection
) -> None:
    purged_before = REGISTRY.get_sample_value("chatpop_identity_refresh_tokens_purged_total") or 0.0
    async with running_identity(database_url, redis_url, key_file, refresh_token_purge_interval=0.1) as fast:
        gone = await fast.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
        kept = await _register(fast)
        first = kept.tokens.refresh_token
        await _refresh(fast, first)
        await _expire(db, "identity_id = $1", uuid.UUID(gone.identity.id))
        # The live family's rotated token expires too; its newest token keeps the family alive.
        await _expire(db, "token_hash = $1", hashlib.sha256(first.encode()).digest())

        deadline = time.monotonic() + 10
        while await _token_rows(db, gone.identity.id) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await _token_rows(db, gone.identity.id) == 0
        assert await _token_rows(db, kept.identity.id) == 2
        # Kept rows are what reuse detection needs: replaying the rotated token still revokes.
        await _fails(_refresh(fast, first), grpc.StatusCode.UNAUTHENTICATED, "refresh_token_reused")
    purged_after = REGISTRY.get_sample_value("chatpop_identity_refresh_tokens_purged_total") or 0.0
    assert purged_after - purged_before >= 1


async def test_the_purge_works_through_every_batch(
    stub: Stub, database_url: str, db: asyncpg.Connection
) -> None:
    sessions = [
        await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest()) for _ in range(3)
    ]
    for session in sessions:
        await _expire(db, "identity_id = $1", uuid.UUID(session.identity.id))
    pool = await create_pg_pool(database_url, schema="identity", min_size=1, max_size=1)
    try:
        deleted = await IdentityStore(pool).purge_expired_families(datetime.now(UTC), batch=1)
    finally:
        await pool.close()
    assert deleted >= 3
    assert [await _token_rows(db, session.identity.id) for session in sessions] == [0, 0, 0]


async def test_logout_revokes_the_family_and_is_idempotent(stub: Stub) -> None:
    registered = await _register(stub)
    rotated = await _refresh(stub, registered.tokens.refresh_token)
    await stub.Logout(identity_pb2.LogoutRequest(refresh_token=registered.tokens.refresh_token))
    await stub.Logout(identity_pb2.LogoutRequest(refresh_token=registered.tokens.refresh_token))
    await stub.Logout(identity_pb2.LogoutRequest(refresh_token="never-issued"))
    await _fails(
        _refresh(stub, rotated.tokens.refresh_token), grpc.StatusCode.UNAUTHENTICATED, "invalid_refresh_token"
    )
    await _fails(
        stub.Logout(identity_pb2.LogoutRequest()), grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"
    )


async def test_get_identity_requires_a_valid_access_token(stub: Stub, key_file: Path) -> None:
    session = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    subject = session.identity.id
    kid = jwt.get_unverified_header(session.tokens.access_token)["kid"]
    now = int(time.time())
    claims = {"iss": "chatpop", "aud": "chatpop", "sub": subject, "typ": "access", "knd": "anonymous"}

    await _fails(
        stub.GetIdentity(identity_pb2.GetIdentityRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated",
    )
    forged = jwt.encode(
        {**claims, "iat": now, "nbf": now, "exp": now + 60},
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": kid},
    )
    await _fails(_me(stub, forged), grpc.StatusCode.UNAUTHENTICATED, "invalid_token")
    expired = jwt.encode(
        {**claims, "iat": now - 3600, "nbf": now - 3600, "exp": now - 60},
        load_private_key(key_file),
        algorithm="EdDSA",
        headers={"kid": kid},
    )
    await _fails(_me(stub, expired), grpc.StatusCode.UNAUTHENTICATED, "token_expired")
    other = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    header, _, signature = session.tokens.access_token.split(".")
    other_payload = other.tokens.access_token.split(".")[1]
    await _fails(
        _me(stub, f"{header}.{other_payload}.{signature}"), grpc.StatusCode.UNAUTHENTICATED, "invalid_token"
    )
    await _fails(_me(stub, "garbage"), grpc.StatusCode.UNAUTHENTICATED, "invalid_token")

    room = await stub.IssueRoomToken(
        identity_pb2.IssueRoomTokenRequest(
            room_id=str(uuid.uuid4()), participant_id=str(uuid.uuid4()), subject=subject, username="Guest_1"
        )
    )
    await _fails(_me(stub, room.room_token), grpc.StatusCode.UNAUTHENTICATED, "invalid_token")
    assert (await _me(stub, session.tokens.access_token)).id == subject


async def test_public_keys_verify_issued_tokens(stub: Stub, key_file: Path) -> None:
    response = await stub.GetPublicKeys(identity_pb2.GetPublicKeysRequest())
    [key] = response.keys
    assert (key.kty, key.crv, key.alg, key.use) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert key.kid == thumbprint(load_private_key(key_file).public_key())
    keys = jwks_to_keys(response.keys)

    async def fetch() -> Any:
        return keys

    session = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    principal = await TokenVerifier(KeyCache(fetch)).verify_access(session.tokens.access_token)
    assert principal.subject == session.identity.id
    assert jwt.get_unverified_header(session.tokens.access_token)["kid"] == key.kid


async def test_room_token_is_bound_to_its_room(stub: Stub) -> None:
    account = await _register(stub)
    room_id, participant_id = str(uuid.uuid4()), str(uuid.uuid4())
    request = identity_pb2.IssueRoomTokenRequest(
        room_id=room_id,
        participant_id=participant_id,
        subject=account.identity.id,
        version=2,
        is_host=True,
        username="RoomHost_1",
    )
    response = await stub.IssueRoomToken(request)
    assert response.expires_in == 3600

    verifier = _verifier(stub)
    principal = await verifier.verify_room(response.room_token, room_id)
    assert principal.subject == account.identity.id
    assert (principal.room_id, principal.participant_id) == (room_id, participant_id)
    assert (principal.version, principal.is_host, principal.kind) == (2, True, "user")
    assert jwt.decode(response.room_token, options={"verify_signature": False})["usr"] == "RoomHost_1"
    with pytest.raises(PermissionDenied) as info:
        await verifier.verify_room(response.room_token, str(uuid.uuid4()))
    assert info.value.code == "wrong_room"

    # The joiner's own token may travel along; it must then name the same identity.
    forwarded = await stub.IssueRoomToken(request, metadata=bearer(account.tokens.access_token))
    assert (await verifier.verify_room(forwarded.room_token, room_id)).subject == account.identity.id
    other = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    await _fails(
        stub.IssueRoomToken(request, metadata=bearer(other.tokens.access_token)),
        grpc.StatusCode.PERMISSION_DENIED,
        "subject_mismatch",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("room_id", ""),
        ("room_id", "room-1"),
        ("participant_id", ""),
        ("participant_id", "not-a-uuid"),
        ("subject", ""),
        ("username", ""),
        ("username", "x" * 16),
        ("version", -1),
    ],
)
async def test_room_token_inputs_are_validated(stub: Stub, field: str, value: object) -> None:
    session = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    fields: dict[str, object] = {
        "room_id": str(uuid.uuid4()),
        "participant_id": str(uuid.uuid4()),
        "subject": session.identity.id,
        "username": "Guest_1",
        field: value,
    }
    await _fails(
        stub.IssueRoomToken(identity_pb2.IssueRoomTokenRequest(**fields)),  # type: ignore[arg-type]
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_argument",
    )


async def test_room_token_needs_a_known_identity(stub: Stub) -> None:
    request = identity_pb2.IssueRoomTokenRequest(
        room_id=str(uuid.uuid4()),
        participant_id=str(uuid.uuid4()),
        subject=str(uuid.uuid4()),
        username="Guest_1",
    )
    await _fails(stub.IssueRoomToken(request), grpc.StatusCode.NOT_FOUND, "identity_not_found")


async def test_key_rotation_keeps_old_tokens_valid(
    database_url: str, redis_url: str, stub: Stub, key_file: Path, tmp_path: Path
) -> None:
    session = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    old_public = tmp_path / "old-public.pem"
    old_public.write_text(public_pem(load_private_key(key_file).public_key()))
    new_key = tmp_path / "new-signing.pem"
    write_new_key(new_key)
    async with running_identity(
        database_url, redis_url, new_key, identity_extra_public_key_files=str(old_public)
    ) as rotated:
        keys = (await rotated.GetPublicKeys(identity_pb2.GetPublicKeysRequest())).keys
        old_kid = thumbprint(load_private_key(key_file).public_key())
        new_kid = thumbprint(load_private_key(new_key).public_key())
        assert [k.kid for k in keys] == [new_kid, old_kid]
        assert (await _me(rotated, session.tokens.access_token)).id == session.identity.id
        fresh = await _refresh(rotated, session.tokens.refresh_token)
        assert jwt.get_unverified_header(fresh.tokens.access_token)["kid"] == new_kid
    async with running_identity(database_url, redis_url, new_key) as retired:
        await _fails(
            _me(retired, session.tokens.access_token), grpc.StatusCode.UNAUTHENTICATED, "invalid_token"
        )


async def test_login_upgrades_a_hash_made_with_weaker_parameters(
    database_url: str, redis_url: str, stub: Stub, key_file: Path, db: asyncpg.Connection
) -> None:
    email = _email()
    account = await _register(stub, email)

    async def stored_hash() -> str:
        value: str = await db.fetchval(
            "SELECT password_hash FROM identities WHERE id = $1", uuid.UUID(account.identity.id)
        )
        return value

    before = await stored_hash()
    assert before.startswith("$argon2id$") and ",t=1," in before
    async with running_identity(database_url, redis_url, key_file, argon2_time_cost=2) as stronger:
        login = await stronger.Login(identity_pb2.LoginRequest(email=email, password=PASSWORD))
        assert login.identity.id == account.identity.id
    after = await stored_hash()
    assert after.startswith("$argon2id$") and ",t=2," in after
    again = await stub.Login(identity_pb2.LoginRequest(email=email, password=PASSWORD))
    assert again.identity.id == account.identity.id

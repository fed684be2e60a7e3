"""The security matrix, end to end through the edge: each case is an attack a stranger could try from
the internet, and each test fails if the protection it names is taken away.

Tokens are forged with nothing an attacker would not have (the public JWKS, their own tokens), except
the expired and not-yet-valid cases, which need the platform's own signing key to prove that a
correctly signed token is still refused outside its lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatpop_identity.keys import load_private_key
from tests.e2e.chat import ChatSocket, anonymous, bearer, history, join, new_id, open_room

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

ISSUER = "chatpop"


# --- token helpers --------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def _tampered(token: str, **changes: Any) -> str:
    """The token with some claims changed and its original signature kept."""
    header, _payload, signature = token.split(".")
    claims = {**_claims(token), **changes}
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def _signed(key: Ed25519PrivateKey, claims: dict[str, Any], kid: str) -> str:
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid, "typ": "JWT"})


@pytest.fixture(scope="module")
def platform_key(stack: Stack) -> Ed25519PrivateKey:
    return load_private_key(Path(stack.specs["identity"].env["IDENTITY_SIGNING_KEY_FILE"]))


async def _jwks(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    return dict(response.json()["keys"][0])


def _forgeries(real: str, jwk: dict[str, Any]) -> dict[str, str]:
    """A real token's claims re-signed every way an attacker could try without the private key."""
    claims = _claims(real)
    kid = jwk["kid"]
    raw_public = _unb64(jwk["x"])
    public_pem = serialization.load_der_public_key(
        bytes.fromhex("302a300506032b6570032100") + raw_public  # SubjectPublicKeyInfo for Ed25519
    ).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def hs256(secret: bytes) -> str:
        signing_input = _segments({"alg": "HS256", "typ": "JWT", "kid": kid}, claims)
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"

    return {
        "forged signature (another Ed25519 key, the real kid)": _signed(
            Ed25519PrivateKey.generate(), claims, kid
        ),
        "alg none": _segments({"alg": "none", "typ": "JWT", "kid": kid}, claims) + ".",
        "alg none, upper case": _segments({"alg": "NONE", "typ": "JWT", "kid": kid}, claims) + ".",
        "HS256 keyed with the public key (PEM)": hs256(public_pem),
        "HS256 keyed with the public key (raw)": hs256(raw_public),
        "HS256 keyed with the public key (JWK x)": hs256(jwk["x"].encode()),
        "zeroed signature": ".".join(real.split(".")[:2]) + "." + _b64(b"\x00" * 64),
        "signature stripped": ".".join(real.split(".")[:2]) + ".",
    }


# --- access tokens --------------------------------------------------------------------------------


async def _me_status(client: httpx.AsyncClient, token: str) -> tuple[int, str]:
    response = await client.get("/api/v1/auth/me", headers=bearer(token))
    body = response.json()
    return response.status_code, body.get("error", {}).get("code", "") if response.status_code != 200 else ""


async def test_forged_access_tokens_are_refused_everywhere(client: httpx.AsyncClient) -> None:
    real = await anonymous(client)
    assert await _me_status(client, real) == (200, "")
    jwk = await _jwks(client)
    for case, forged in _forgeries(real, jwk).items():
        me = await client.get("/api/v1/auth/me", headers=bearer(forged))
        assert me.status_code == 401, (case, me.text)
        assert me.json()["error"]["code"] == "invalid_token", case
        assert me.headers["WWW-Authenticate"] == "Bearer"
        created = await client.post("/api/v1/rooms", json={"name": "forged"}, headers=bearer(forged))
        assert created.status_code == 401, (case, created.text)


async def test_wrong_or_missing_kid_is_refused(
    client: httpx.AsyncClient, platform_key: Ed25519PrivateKey
) -> None:
    real = await anonymous(client)
    claims = _claims(real)
    unknown_kid = _signed(platform_key, claims, "not-a-key-we-know")
    no_kid = jwt.encode(claims, platform_key, algorithm="EdDSA")
    for token in (unknown_kid, no_kid):
        assert await _me_status(client, token) == (401, "invalid_token")
    # The very same claims under the right kid are accepted: only the kid made the difference.
    right_kid = _signed(platform_key, claims, (await _jwks(client))["kid"])
    assert (await _me_status(client, right_kid))[0] == 200


async def test_expired_and_not_yet_valid_tokens_are_refused(
    client: httpx.AsyncClient, platform_key: Ed25519PrivateKey
) -> None:
    real = await anonymous(client)
    kid = (await _jwks(client))["kid"]
    now = int(time.time())
    base = {**_claims(real), "jti": uuid.uuid4().hex}
    expired = _signed(platform_key, {**base, "iat": now - 3600, "nbf": now - 3600, "exp": now - 60}, kid)
    early = _signed(platform_key, {**base, "iat": now, "nbf": now + 600, "exp": now + 1200}, kid)
    current = _signed(platform_key, {**base, "iat": now, "nbf": now, "exp": now + 600}, kid)
    assert await _me_status(client, expired) == (401, "token_expired")
    assert await _me_status(client, early) == (401, "invalid_token")
    assert (await _me_status(client, current))[0] == 200


async def test_tampered_access_token_claims_are_refused(client: httpx.AsyncClient) -> None:
    real = await anonymous(client)
    other = await anonymous(client)
    cases = {
        "another subject": _tampered(real, sub=_claims(other)["sub"]),
        "promoted to an account": _tampered(real, knd="user"),
        "longer lifetime": _tampered(real, exp=int(time.time()) + 10 * 365 * 86400),
        "another audience": _tampered(real, aud="chatpop:room:" + str(uuid.uuid4())),
    }
    for case, token in cases.items():
        assert await _me_status(client, token) == (401, "invalid_token"), case


async def test_refresh_token_reuse_after_rotation_revokes_the_whole_family(client: httpx.AsyncClient) -> None:
    session = (await client.post("/api/v1/auth/anonymous")).json()
    first = session["refresh_token"]
    rotated = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["refresh_token"]
    assert second != first

    replay = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "refresh_token_reused"
    # The thief may hold the newest token of the family: it is dead too.
    after = await client.post("/api/v1/auth/refresh", json={"refresh_token": second})
    assert after.status_code == 401, after.text
    assert after.json()["error"]["code"] in ("invalid_refresh_token", "refresh_token_reused")


# --- room tokens ---------------------------------------------------------------------------------


async def _ws_close_code(stack: Stack, code: str, token: str) -> int | None:
    ws = await connect(f"{stack.ws_url}/ws/v1/rooms/{code}?token={token}", open_timeout=10)
    try:
        frame = json.loads(await ws.recv())
        raise AssertionError(f"the socket accepted the token and sent {frame}")
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    finally:
        await ws.close()


@pytest.fixture
async def two_rooms(client: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    room_a, room_b = await open_room(client), await open_room(client)
    alice = await join(client, room_a.code, "Alice_Sec")
    bob = await join(client, room_a.code, "Bobby_Sec")
    carol = await join(client, room_b.code, "Carol_Sec")
    yield {"a": room_a, "b": room_b, "alice": alice, "bob": bob, "carol": carol}


async def test_a_room_token_is_useless_in_another_room(
    stack: Stack, client: httpx.AsyncClient, two_rooms: dict[str, Any]
) -> None:
    room_b, alice = two_rooms["b"], two_rooms["alice"]
    token = alice["room_token"]
    listed = await client.get(f"/api/v1/rooms/{room_b.code}/messages", headers=bearer(token))
    assert (listed.status_code, listed.json()["error"]["code"]) == (403, "wrong_room")
    posted = await client.post(
        f"/api/v1/rooms/{room_b.code}/messages",
        json={"client_msg_id": new_id(), "text": "hi"},
        headers=bearer(token),
    )
    assert (posted.status_code, posted.json()["error"]["code"]) == (403, "wrong_room")
    people = await client.get(f"/api/v1/rooms/{room_b.code}/participants", headers=bearer(token))
    assert (people.status_code, people.json()["error"]["code"]) == (403, "wrong_room")
    assert await _ws_close_code(stack, room_b.code, token) == 4403
    # Re-pointing the token at room B breaks its signature.
    moved = _tampered(token, rid=room_b.id, aud=f"chatpop:room:{room_b.id}")
    listed_moved = await client.get(f"/api/v1/rooms/{room_b.code}/messages", headers=bearer(moved))
    assert (listed_moved.status_code, listed_moved.json()["error"]["code"]) == (401, "invalid_token")
    assert await _ws_close_code(stack, room_b.code, moved) == 4401
    assert await history(client, room_b.code, two_rooms["carol"]["room_token"]) == []


async def test_a_room_token_cannot_act_as_another_participant(
    stack: Stack, client: httpx.AsyncClient, two_rooms: dict[str, Any]
) -> None:
    room_a, alice, bob = two_rooms["a"], two_rooms["alice"], two_rooms["bob"]
    token = alice["room_token"]
    bob_id = bob["participant"]["id"]
    for case, forged in {
        "another participant id": _tampered(token, pid=bob_id),
        "promoted to host": _tampered(token, host=True),
        "another subject": _tampered(token, sub=str(uuid.uuid4())),
    }.items():
        sent = await client.post(
            f"/api/v1/rooms/{room_a.code}/messages",
            json={"client_msg_id": new_id(), "text": "as Bob"},
            headers=bearer(forged),
        )
        assert (sent.status_code, sent.json()["error"]["code"]) == (401, "invalid_token"), case
        assert await _ws_close_code(stack, room_a.code, forged) == 4401, case
    # Naming someone else in the body is not a thing: unknown fields are refused outright.
    spoof = await client.post(
        f"/api/v1/rooms/{room_a.code}/messages",
        json={"client_msg_id": new_id(), "text": "as Bob", "sender": {"participant_id": bob_id}},
        headers=bearer(token),
    )
    assert (spoof.status_code, spoof.json()["error"]["code"]) == (422, "invalid_request")
    own = await client.post(
        f"/api/v1/rooms/{room_a.code}/messages",
        json={"client_msg_id": new_id(), "text": "me"},
        headers=bearer(token),
    )
    assert own.status_code == 201, own.text
    assert own.json()["message"]["sender"]["participant_id"] == alice["participant"]["id"]
    assert [m["sender"]["participant_id"] for m in await history(client, room_a.code, token)] == [
        alice["participant"]["id"]
    ]


async def test_room_and_access_tokens_only_work_where_they_belong(
    client: httpx.AsyncClient, two_rooms: dict[str, Any]
) -> None:
    room_a, room_b, alice = two_rooms["a"], two_rooms["b"], two_rooms["alice"]
    room_token = alice["room_token"]
    joined = await client.post(
        f"/api/v1/rooms/{room_b.code}/join", json={"username": "Sneaky_1"}, headers=bearer(room_token)
    )
    assert (joined.status_code, joined.json()["error"]["code"]) == (403, "access_token_required")
    created = await client.post("/api/v1/rooms", json={"name": "x"}, headers=bearer(room_token))
    assert (created.status_code, created.json()["error"]["code"]) == (403, "access_token_required")
    access = await anonymous(client)
    listed = await client.get(f"/api/v1/rooms/{room_a.code}/messages", headers=bearer(access))
    assert (listed.status_code, listed.json()["error"]["code"]) == (401, "invalid_token")


async def test_forged_room_tokens_are_refused(
    stack: Stack, client: httpx.AsyncClient, two_rooms: dict[str, Any]
) -> None:
    room_a, alice = two_rooms["a"], two_rooms["alice"]
    jwk = await _jwks(client)
    for case, forged in _forgeries(alice["room_token"], jwk).items():
        listed = await client.get(f"/api/v1/rooms/{room_a.code}/messages", headers=bearer(forged))
        assert (listed.status_code, listed.json()["error"]["code"]) == (401, "invalid_token"), case
        assert await _ws_close_code(stack, room_a.code, forged) == 4401, case


async def test_expired_room_tokens_are_refused(
    stack: Stack, client: httpx.AsyncClient, two_rooms: dict[str, Any], platform_key: Ed25519PrivateKey
) -> None:
    room_a, alice = two_rooms["a"], two_rooms["alice"]
    kid = (await _jwks(client))["kid"]
    now = int(time.time())
    expired = _signed(
        platform_key,
        {**_claims(alice["room_token"]), "iat": now - 7200, "nbf": now - 7200, "exp": now - 60},
        kid,
    )
    listed = await client.get(f"/api/v1/rooms/{room_a.code}/messages", headers=bearer(expired))
    assert (listed.status_code, listed.json()["error"]["code"]) == (401, "token_expired")
    assert await _ws_close_code(stack, room_a.code, expired) == 4401


# --- private rooms --------------------------------------------------------------------------------


async def test_access_code_brute_force_is_locked_out_with_retry_after(client: httpx.AsyncClient) -> None:
    room = await open_room(client, visibility="private", access_code="correct-horse-42")
    url = f"/api/v1/rooms/{room.code}/join"
    attacker = {**bearer(await anonymous(client)), "X-Forwarded-For": "203.0.113.66"}
    wrong = 0
    while True:
        guess = await client.post(
            url, json={"username": "Guesser_1", "access_code": f"guess-{wrong}"}, headers=attacker
        )
        if guess.status_code == 429:
            break
        assert (guess.status_code, guess.json()["error"]["code"]) == (403, "invalid_access_code")
        wrong += 1
        assert wrong <= 5, "no lockout after five wrong codes"
    assert wrong == 5
    body = guess.json()["error"]
    assert body["code"] == "too_many_attempts"
    assert 0 < int(guess.headers["Retry-After"]) <= 900
    assert body["retry_after"] == int(guess.headers["Retry-After"])
    # Locked out means locked out: even the right code is refused, also from a fresh session.
    again = {**bearer(await anonymous(client)), "X-Forwarded-For": "203.0.113.66"}
    right = await client.post(
        url, json={"username": "Guesser_2", "access_code": "correct-horse-42"}, headers=again
    )
    assert right.status_code == 429
    # Someone else with the code still gets in.
    friend = {**bearer(await anonymous(client)), "X-Forwarded-For": "198.51.100.23"}
    welcome = await client.post(
        url, json={"username": "Friend_Sec", "access_code": "correct-horse-42"}, headers=friend
    )
    assert welcome.status_code == 200, welcome.text


# --- input handling -------------------------------------------------------------------------------

HOSTILE_USERNAMES = {
    "SQL": "Robert'); DROP TABLE participants;--",
    "SQL, short": "x' OR '1'='1",
    "HTML/JS": "<script>alert(1)</script>",
    "HTML attribute": '<img src=x onerror="alert(1)">',
    "Cyrillic look-alike": "\u0410dmin_user",  # Cyrillic capital A
    "Greek look-alike": "P\u03bflar_Bear",  # Greek small omicron
    "full-width letters": "\uff33\uff57\uff49\uff46\uff54\uff37\uff4f\uff4c\uff46",
    "right-to-left override": "user\u202etxt.exe",
    "zero-width joiner": "Swift\u200dWolf",
    "emoji": "Party\U0001f389Time",
}


@pytest.mark.parametrize("case", list(HOSTILE_USERNAMES))
async def test_hostile_usernames_are_rejected_with_a_clear_error(
    client: httpx.AsyncClient, case: str
) -> None:
    name = HOSTILE_USERNAMES[case]
    room = await open_room(client)
    guest = await anonymous(client)
    joined = await client.post(
        f"/api/v1/rooms/{room.code}/join", json={"username": name}, headers=bearer(guest)
    )
    assert joined.status_code == 422, joined.text
    error = joined.json()["error"]
    assert error["code"] == "username_invalid"
    assert "letters A-Z, digits and underscores" in error["message"]

    registered = await client.post(
        "/api/v1/auth/register",
        json={
            "email": f"{uuid.uuid4().hex}@example.com",
            "password": "correct horse",
            "reserved_username": name,
        },
    )
    assert (registered.status_code, registered.json()["error"]["code"]) == (422, "username_invalid")

    checked = await client.get(f"/api/v1/auth/usernames/{quote(name, safe='')}")
    assert checked.status_code == 200, checked.text
    assert (checked.json()["available"], checked.json()["reason"]) == (False, "username_invalid")

    # Nothing was stored: the guest is still not in the room and can join properly.
    me = await client.get(f"/api/v1/rooms/{room.code}/me", headers=bearer(guest))
    assert (me.status_code, me.json()["error"]["code"]) == (404, "not_joined")
    fine = await join(client, room.code, "Proper_Name", token=guest)
    people = await client.get(f"/api/v1/rooms/{room.code}/participants", headers=bearer(fine["room_token"]))
    assert [p["username"] for p in people.json()["participants"]] == ["Proper_Name"]


async def test_message_markup_is_stored_and_returned_verbatim_as_text(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await open_room(client)
    writer = await join(client, room.code, "Writer_Sec")
    reader = await join(client, room.code, "Reader_Sec")
    socket = await ChatSocket.open(stack.ws_url, room.code, reader["room_token"])
    payloads = [
        "<script>alert('pwned')</script>",
        '<img src=x onerror="alert(document.cookie)">',
        "&lt;b&gt;already escaped&lt;/b&gt; & <b>bold</b> \"quoted\" 'single'",
        'javascript:alert(1) <a href="javascript:alert(1)">click</a>',
        "'; DROP TABLE messages; --",
    ]
    try:
        for text in ["plain warm-up", *payloads]:
            sent = await client.post(
                f"/api/v1/rooms/{room.code}/messages",
                json={"client_msg_id": new_id(), "text": text},
                headers=bearer(writer["room_token"]),
            )
            assert sent.status_code == 201, sent.text
            assert sent.headers["content-type"].startswith("application/json")
            assert sent.headers["x-content-type-options"] == "nosniff"
            assert sent.json()["message"]["text"] == text
            frame = await socket.wait_for(
                lambda f, t=text: f["type"] == "message" and f["text"] == t, timeout=30
            )
            assert frame["text"] == text
        stored = await history(client, room.code, reader["room_token"])
        assert [m["text"] for m in stored] == ["plain warm-up", *payloads]
    finally:
        await socket.close()


async def test_oversized_bodies_are_refused_with_413_before_parsing(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    limit = int(stack.specs["edge"].env.get("MAX_BODY_BYTES", 65536))
    room = await open_room(client)
    token = await anonymous(client)
    url = f"/api/v1/rooms/{room.code}/join"
    # Not even JSON: a parser would have answered 400; the size check answers first.
    garbage = b"{" * (limit + 1)
    too_big = await client.post(
        url, content=garbage, headers={**bearer(token), "Content-Type": "application/json"}
    )
    assert too_big.status_code == 413, too_big.text
    assert too_big.json()["error"]["code"] == "payload_too_large"

    # A chunked body without Content-Length is cut off as it grows.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 4096 + 2):
            yield b" " * 4096

    streamed = await client.post(
        url, content=chunks(), headers={**bearer(token), "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413, streamed.text
    # Every route is covered, the unauthenticated ones too.
    session = await client.post("/api/v1/auth/anonymous", content=garbage)
    assert session.status_code == 413
    # Just under the limit the body is parsed as usual (and refused for what it says).
    under = await client.post(url, json={"username": "x" * (limit - 100)}, headers=bearer(token))
    assert (under.status_code, under.json()["error"]["code"]) == (422, "invalid_request")


# --- headers --------------------------------------------------------------------------------------


def _check_security_headers(response: httpx.Response, *, tls: bool) -> None:
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    policy = response.headers.get("content-security-policy", "")
    assert policy, where
    assert "'unsafe-eval'" not in policy, where
    assert "frame-ancestors 'none'" in policy, where
    assert "object-src 'none'" in policy, where
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("referrer-policy") == "no-referrer", where
    assert response.headers.get("x-frame-options") == "DENY", where
    hsts = response.headers.get("strict-transport-security")
    if tls:
        assert hsts is not None and "max-age=31536000" in hsts, where
    else:
        assert hsts is None, where


async def test_security_headers_on_every_edge_response(client: httpx.AsyncClient) -> None:
    room = await open_room(client)
    token = await anonymous(client)
    big = b"x" * (1024 * 1024)
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/", {}),
        ("GET", "/api/v1/openapi.json", {}),
        ("GET", "/api/v1/docs", {}),
        ("GET", "/.well-known/jwks.json", {}),
        ("GET", f"/api/v1/rooms/{room.code}", {}),
        ("GET", "/api/v1/rooms/NOSUCH99", {}),
        ("GET", "/api/v1/auth/me", {}),
        ("GET", "/api/v1/auth/me", {"headers": bearer("not.a.token")}),
        ("GET", "/api/v1/auth/usernames/Some_Name", {}),
        ("POST", "/api/v1/auth/anonymous", {}),
        ("POST", "/api/v1/auth/login", {"json": {"email": "x@example.com", "password": "nope nope"}}),
        ("POST", f"/api/v1/rooms/{room.code}/usernames/suggest", {"headers": bearer(token)}),
        ("POST", f"/api/v1/rooms/{room.code}/join", {"headers": bearer(token), "json": {"username": "<b>"}}),
        (
            "POST",
            f"/api/v1/rooms/{room.code}/join",
            {"headers": {**bearer(token), "Content-Type": "application/json"}, "content": b"{"},
        ),
        ("POST", f"/api/v1/rooms/{room.code}/join", {"headers": bearer(token), "content": big}),
        ("DELETE", "/healthz", {}),
        ("GET", "/no/such/route", {}),
    ]
    statuses = set()
    for tls in (False, True):
        for method, path, options in requests:
            headers = {**options.get("headers", {}), **({"X-Forwarded-Proto": "https"} if tls else {})}
            body = {key: value for key, value in options.items() if key != "headers"}
            response = await client.request(method, path, headers=headers, **body)
            statuses.add(response.status_code)
            _check_security_headers(response, tls=tls)
    assert {200, 201, 400, 401, 404, 405, 413, 422} <= statuses

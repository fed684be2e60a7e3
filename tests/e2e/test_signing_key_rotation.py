"""Rotating identity's signing key without downtime, as helm/RUNBOOK.md says, on the running platform.

1. publish: identity keeps signing with the old key and publishes the new one too
   (IDENTITY_EXTRA_PUBLIC_KEY_FILES), so every replica and every verifier can know it first;
2. switch: identity signs with the new key and keeps publishing the old one: tokens signed before
   still verify everywhere (edge, rooms, messaging, identity), new ones carry the new kid;
3. retire (after the longest token TTL): the old key is gone and identity refuses its tokens.

identity is restarted with each configuration in turn; at the end it signs with its own key again
and keeps publishing the new one, which signed the service tokens the other services now hold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import jwt
import pytest

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop_common.clients import bearer as grpc_bearer
from chatpop_common.localrun import STARTUP_TIMEOUT
from chatpop_identity.keys import load_private_key, public_pem, thumbprint, write_new_key
from tests.e2e.chat import bearer, create_room, join

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

# The least seconds between two fetches of identity's keys by a service (KeyCache's min_refresh).
KEY_REFRESH_MIN = 10.0


def _restart_identity(stack: Stack, **env: str) -> None:
    """identity again with its environment changed by `env` (an empty value removes the variable)."""
    original = stack.specs["identity"]
    changed = {**original.env, **env}
    stack.stop("identity")
    stack.supervisor.start(
        dataclasses.replace(original, env={name: value for name, value in changed.items() if value})
    )
    stack.supervisor.wait_ready("identity", STARTUP_TIMEOUT)


@dataclasses.dataclass(frozen=True)
class Keys:
    old_key: Path
    new_key: Path
    old_public: Path
    new_public: Path


@pytest.fixture
def keys(stack: Stack, tmp_path: Path) -> Iterator[Keys]:
    """identity's key and a new one. Afterwards identity signs with its own key again and keeps
    publishing the new one: the other services hold service tokens it signed meanwhile."""
    original = stack.specs["identity"]
    old_key = Path(original.env["IDENTITY_SIGNING_KEY_FILE"])
    new_key = tmp_path / "new-signing-key.pem"
    write_new_key(new_key)
    old_public, new_public = tmp_path / "old-public.pem", tmp_path / "new-public.pem"
    old_public.write_text(public_pem(load_private_key(old_key).public_key()))
    new_public.write_text(public_pem(load_private_key(new_key).public_key()))
    try:
        yield Keys(old_key, new_key, old_public, new_public)
    finally:
        _restart_identity(stack, IDENTITY_EXTRA_PUBLIC_KEY_FILES=str(new_public))


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def _published(stack: Stack) -> list[str]:
    async with grpc.aio.insecure_channel(stack.address("identity")) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        keys = await stub.GetPublicKeys(identity_pb2.GetPublicKeysRequest())  # type: ignore[misc]
    return [key.kid for key in keys.keys]


async def _session(client: httpx.AsyncClient) -> dict[str, Any]:
    for _ in range(100):
        response = await client.post("/api/v1/auth/anonymous")
        if response.status_code != 503:
            break
        await asyncio.sleep(0.1)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _join_with_new_kid(client: httpx.AsyncClient, code: str, access_token: str) -> dict[str, Any]:
    """Join with a token of the new key. A service that fetched identity's keys less than
    KEY_REFRESH_MIN seconds ago looks again only after that (chatpop_common.auth.KeyCache): in the
    test, the services started moments ago."""
    deadline = time.monotonic() + KEY_REFRESH_MIN + 5
    while True:
        response = await client.post(
            f"/api/v1/rooms/{code}/join", json={"username": "NewKeyHolder"}, headers=bearer(access_token)
        )
        if response.status_code != 401 or time.monotonic() > deadline:
            break
        assert response.json()["error"]["code"] == "invalid_token", response.text
        await asyncio.sleep(0.5)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _works(client: httpx.AsyncClient, access_token: str, code: str, room_token: str) -> None:
    """The access token reads the identity, the room token sends into the room."""
    me = await client.get("/api/v1/auth/me", headers=bearer(access_token))
    assert me.status_code == 200, me.text
    sent = await client.post(
        f"/api/v1/rooms/{code}/messages",
        json={"client_msg_id": uuid.uuid4().hex, "text": "still here"},
        headers=bearer(room_token),
    )
    assert sent.status_code in (200, 201), sent.text


async def test_the_signing_key_rotates_without_refusing_a_live_token(
    stack: Stack, client: httpx.AsyncClient, keys: Keys
) -> None:
    old_kid = thumbprint(load_private_key(keys.old_key).public_key())
    new_kid = thumbprint(load_private_key(keys.new_key).public_key())
    new_key, old_public, new_public = keys.new_key, keys.old_public, keys.new_public

    before = await _session(client)
    assert _kid(before["access_token"]) == old_kid
    room = await create_room(client, before["access_token"])
    old_member = await join(client, room["code"], "OldKeyHolder", before["access_token"])
    assert _kid(old_member["room_token"]) == old_kid

    # 1. Publish the new key; the old one still signs.
    _restart_identity(stack, IDENTITY_EXTRA_PUBLIC_KEY_FILES=str(new_public))
    assert await _published(stack) == [old_kid, new_kid]
    assert _kid((await _session(client))["access_token"]) == old_kid

    # 2. Sign with the new key; the old one is still published.
    _restart_identity(
        stack, IDENTITY_SIGNING_KEY_FILE=str(new_key), IDENTITY_EXTRA_PUBLIC_KEY_FILES=str(old_public)
    )
    assert await _published(stack) == [new_kid, old_kid]
    await _works(client, before["access_token"], room["code"], old_member["room_token"])
    after = await _session(client)
    assert _kid(after["access_token"]) == new_kid
    new_member = await _join_with_new_kid(client, room["code"], after["access_token"])
    assert _kid(new_member["room_token"]) == new_kid
    await _works(client, after["access_token"], room["code"], new_member["room_token"])
    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": before["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    assert _kid(refreshed.json()["access_token"]) == new_kid

    # 3. Retire the old key (once the longest token TTL has passed): identity refuses what it signed.
    _restart_identity(stack, IDENTITY_SIGNING_KEY_FILE=str(new_key), IDENTITY_EXTRA_PUBLIC_KEY_FILES="")
    assert await _published(stack) == [new_kid]
    async with grpc.aio.insecure_channel(stack.address("identity")) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetIdentity(
                identity_pb2.GetIdentityRequest(), metadata=grpc_bearer(before["access_token"])
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        me = await stub.GetIdentity(
            identity_pb2.GetIdentityRequest(), metadata=grpc_bearer(after["access_token"])
        )
        assert me.identity.id == after["identity"]["id"]

"""The admin CLI (`python -m chatpop_common.admin`) against the running platform, as an operator runs it.

It holds the `cli` service credential (SERVICE_TOKEN_SECRET); the RPCs it calls refuse everybody
else: users' access tokens, room tokens, admins and the other services' credentials.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import httpx
import pytest
import redis.asyncio as aioredis

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop_common.clients import bearer as grpc_bearer
from chatpop_common.errors import error_details
from chatpop_common.service_auth import ServiceCredentials
from tests.admin_cli import ADMIN_PASSWORD, CliResult, admin_cli, new_admin
from tests.e2e.chat import anonymous, bearer, join, open_room

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

# The room's messages reach the hot cache right after they are stored: within this.
SETTLED = 15.0


def _email(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


async def _eventually(read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


async def _send(client: httpx.AsyncClient, code: str, room_token: str, texts: list[str]) -> list[int]:
    seqs = []
    for text in texts:
        response = await client.post(
            f"/api/v1/rooms/{code}/messages",
            json={"client_msg_id": uuid.uuid4().hex, "text": text},
            headers=bearer(room_token),
        )
        assert response.status_code in (200, 201), response.text
        seqs.append(int(response.json()["message"]["seq"]))
    return seqs


async def _inspect(stack: Stack, room: str) -> dict[str, Any]:
    found: dict[str, Any] = (await admin_cli(stack, "room", "inspect", room)).json()
    return found


def _refused(result: CliResult, status: str, code: str) -> None:
    assert result.status == 1, (result.out, result.err)
    error = result.error()
    assert (error["status"], error["code"]) == (status, code), error


# --- the hot cache --------------------------------------------------------------------------------


async def test_inspect_finds_a_broken_hot_cache_and_rebuild_mends_it(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await open_room(client)
    member = await join(client, room.code, "Inspector")
    seqs = await _send(client, room.code, member["room_token"], [f"line {n}" for n in range(1, 9)])
    assert seqs == list(range(1, 9))
    settled = await _eventually(
        lambda: _inspect(stack, room.code),
        lambda r: r["hot_cache"] and r["hot_cache"]["max_seq"] == 8,
        SETTLED,
    )
    assert settled["room_id"] == room.id
    assert settled["postgres"] == {"count": 8, "min_seq": 1, "max_seq": 8}
    assert settled["hot_cache"] == {"count": 8, "min_seq": 1, "max_seq": 8}
    assert settled["consistent"] is True and settled["hot_cache_available"] is True

    # Break the stream behind messaging's back: seq 3 gone, seq 5 holding seq 6's entry, seq 7
    # unreadable, and an entry Postgres never had.
    stream = f"msg:{{{room.id}}}:stream"
    cache = aioredis.Redis.from_url(stack.redis_url)
    try:
        entries = dict(await cache.xrange(stream))
        payloads = {int(entry_id.split(b"-")[0]): fields[b"m"] for entry_id, fields in entries.items()}
        payloads.pop(3)
        payloads[5] = payloads[6]
        payloads[7] = b"\xff not a message"
        payloads[40] = payloads[8]
        pipe = cache.pipeline(transaction=True)
        pipe.delete(stream)
        for seq in sorted(payloads):
            pipe.xadd(stream, {"m": payloads[seq]}, id=f"{seq}-0")
        await pipe.execute()
    finally:
        await cache.aclose()

    broken = await _inspect(stack, room.code)
    assert broken["postgres"] == {"count": 8, "min_seq": 1, "max_seq": 8}
    assert broken["hot_cache"] == {"count": 8, "min_seq": 1, "max_seq": 40}
    assert broken["missing_in_cache"] == [3]
    assert broken["differing"] == [5, 7]
    assert broken["extra_in_cache"] == [40]
    assert broken["consistent"] is False

    rebuilt = (await admin_cli(stack, "room", "rebuild-cache", room.id)).json()
    assert rebuilt["entries"] == 8
    assert rebuilt["hot_cache"] == {"count": 8, "min_seq": 1, "max_seq": 8}
    mended = await _inspect(stack, room.id)
    assert mended["consistent"] is True
    assert (mended["missing_in_cache"], mended["differing"], mended["extra_in_cache"]) == ([], [], [])
    # The mended cache serves the history as Postgres has it.
    page = await client.get(f"/api/v1/rooms/{room.code}/messages", headers=bearer(member["room_token"]))
    assert [m["text"] for m in sorted(page.json()["messages"], key=lambda m: m["seq"])] == [
        f"line {n}" for n in range(1, 9)
    ]
    # And the next message continues it.
    assert await _send(client, room.code, member["room_token"], ["line 9"]) == [9]
    after = await _eventually(
        lambda: _inspect(stack, room.code), lambda r: r["hot_cache"]["max_seq"] == 9, SETTLED
    )
    assert after["consistent"] is True


async def test_rooms_are_named_by_id_or_code_and_unknown_ones_fail_clearly(stack: Stack) -> None:
    unknown = await admin_cli(stack, "room", "inspect", "NOSUCHROOM1")
    _refused(unknown, "NOT_FOUND", "room_not_found")
    assert unknown.error()["call"] == "GetRoom"
    cold = (await admin_cli(stack, "room", "inspect", str(uuid.uuid4()))).json()
    assert cold["postgres"]["count"] == 0 and cold["consistent"] is True


# --- admins and the audit log ---------------------------------------------------------------------


async def test_admins_are_granted_listed_and_revoked_and_the_audit_log_says_so(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    email = _email()
    registered = await client.post("/api/v1/auth/register", json={"email": email, "password": ADMIN_PASSWORD})
    assert registered.status_code == 201, registered.text
    account = registered.json()["identity"]["id"]

    granted = (await admin_cli(stack, "admins", "grant", f" {email.upper()} ")).json()
    assert (granted["user_id"], granted["changed"]) == (account, True)
    again = (await admin_cli(stack, "admins", "grant", email)).json()
    assert again["changed"] is False
    listed = (await admin_cli(stack, "admins", "list")).lines()
    mine = [admin for admin in listed if admin["user_id"] == account]
    assert len(mine) == 1 and mine[0]["email"] == email and mine[0]["granted_at"]

    login = await client.post("/api/v1/auth/login", json={"email": email, "password": ADMIN_PASSWORD})
    assert login.status_code == 200
    me = await client.get("/api/v1/auth/me", headers=bearer(login.json()["access_token"]))
    assert me.json()["is_admin"] is True, me.text

    revoked = (await admin_cli(stack, "admins", "revoke", email)).json()
    assert (revoked["user_id"], revoked["changed"]) == (account, True)
    assert account not in [admin["user_id"] for admin in (await admin_cli(stack, "admins", "list")).lines()]

    events = (await admin_cli(stack, "audit", "--target", account, "--limit", "10")).lines()
    assert [event["kind"] for event in events] == [
        "identity.admin_revoked",
        "identity.login_succeeded",
        "identity.admin_granted",
    ]
    assert [event["actor"] for event in events] == ["cli", account, "cli"]
    assert isinstance(events[1]["details"], dict) and events[0]["id"] > events[1]["id"] > events[2]["id"]
    only_grants = (
        await admin_cli(stack, "audit", "--kind", "identity.admin_granted", "--target", account)
    ).lines()
    assert [event["id"] for event in only_grants] == [events[2]["id"]]
    newest = (await admin_cli(stack, "audit", "--target", account, "--limit", "2")).lines()
    assert [event["id"] for event in newest] == [event["id"] for event in events[:2]]
    older = (await admin_cli(stack, "audit", "--target", account, "--before", str(events[1]["id"]))).lines()
    assert [event["id"] for event in older] == [events[2]["id"]]

    _refused(await admin_cli(stack, "admins", "grant", _email()), "NOT_FOUND", "account_not_found")
    _refused(await admin_cli(stack, "admins", "revoke", "not an email"), "INVALID_ARGUMENT", "invalid_email")
    for usage in (("admins",), ("audit", "--limit", "0"), ("nonsense",), ("room", "erase", "ABCDEFGH")):
        result = await admin_cli(stack, *usage)
        assert result.status == 2, (usage, result.out, result.err)


async def test_an_admin_made_by_new_admin_can_use_the_admin_api(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    token = await new_admin(client, stack, "cli-helper")
    assert (await client.get("/api/v1/auth/me", headers=bearer(token))).json()["is_admin"] is True


# --- who may call -----------------------------------------------------------------------------------


async def test_without_the_service_secret_the_cli_gets_nothing(stack: Stack) -> None:
    missing = await admin_cli(stack, "admins", "list", without=("SERVICE_TOKEN_SECRET",))
    assert missing.status == 2
    assert "SERVICE_TOKEN_SECRET" in missing.error()["message"]
    wrong = await admin_cli(
        {**_cli_settings(stack), "SERVICE_TOKEN_SECRET": "not-the-secret-" + "x" * 40}, "admins", "list"
    )
    _refused(wrong, "UNAUTHENTICATED", "invalid_service_proof")
    assert wrong.error()["call"] == "IssueServiceToken"


def _cli_settings(stack: Stack) -> dict[str, str]:
    env = stack.specs["identity"].env
    return {
        name: env[name] for name in ("IDENTITY_ADDR", "ROOMS_ADDR", "MESSAGING_ADDR", "SERVICE_TOKEN_SECRET")
    }


async def _grpc_fails(call: Awaitable[Any], status: grpc.StatusCode, code: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == status, info.value.details()
    assert error_details(info.value)[0] == code, info.value.details()


async def test_user_tokens_and_other_services_cannot_call_the_cli_rpcs(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await open_room(client)
    member = await join(client, room.code, "NotAnOperator")
    user = await anonymous(client)
    admin = await new_admin(client, stack, "cli-refused")
    async with (
        grpc.aio.insecure_channel(stack.address("messaging")) as messaging_channel,
        grpc.aio.insecure_channel(stack.address("identity")) as identity_channel,
    ):
        messaging = messaging_pb2_grpc.MessagingServiceStub(messaging_channel)
        identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
        secret = stack.specs["identity"].env["SERVICE_TOKEN_SECRET"]
        edge = await ServiceCredentials(identity, "edge", secret).metadata()  # type: ignore[arg-type]
        callers = [grpc_bearer(user), grpc_bearer(admin), grpc_bearer(member["room_token"]), edge]
        for metadata in callers:
            for call in (
                messaging.InspectRoom(messaging_pb2.InspectRoomRequest(room_id=room.id), metadata=metadata),
                messaging.RebuildHotCache(
                    messaging_pb2.RebuildHotCacheRequest(room_id=room.id), metadata=metadata
                ),
                identity.GrantAdmin(identity_pb2.GrantAdminRequest(email=_email()), metadata=metadata),
                identity.ListAdmins(identity_pb2.ListAdminsRequest(), metadata=metadata),
            ):
                await _grpc_fails(call, grpc.StatusCode.PERMISSION_DENIED, "forbidden")
        await _grpc_fails(
            messaging.InspectRoom(messaging_pb2.InspectRoomRequest(room_id=room.id)),
            grpc.StatusCode.UNAUTHENTICATED,
            "unauthenticated",
        )
        # The CLI's credential does.
        cli = await ServiceCredentials(identity, "cli", secret).metadata()  # type: ignore[arg-type]
        inspected = await messaging.InspectRoom(
            messaging_pb2.InspectRoomRequest(room_id=room.id), metadata=cli
        )
        assert inspected.consistent


# --- retention --------------------------------------------------------------------------------------


async def test_retention_runs_dry_first_then_deletes_only_what_is_too_old(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await open_room(client, retention_days=1)
    member = await join(client, room.code, "Keeper")
    await _send(client, room.code, member["room_token"], [f"message {n}" for n in range(1, 7)])
    connection = await asyncpg.connect(stack.database_url)
    try:
        # The three oldest were sent three days ago, as far as Postgres knows.
        await connection.execute(
            "UPDATE messaging.messages SET created_at = created_at - $2::interval"
            " WHERE room_id = $1 AND seq <= 3",
            room.id,
            timedelta(days=3),
        )

        async def stored() -> list[int]:
            rows = await connection.fetch(
                "SELECT seq FROM messaging.messages WHERE room_id = $1 ORDER BY seq", room.id
            )
            return [row["seq"] for row in rows]

        dry = (await admin_cli(stack, "retention", "run", "--room", room.code)).json()
        assert dry["dry_run"] is True
        assert [(r["room_id"], r["entries"]) for r in dry["rooms"]] == [(room.id, 3)]
        assert await stored() == [1, 2, 3, 4, 5, 6]

        applied = (await admin_cli(stack, "retention", "run", "--room", room.code, "--apply")).json()
        assert applied["dry_run"] is False
        assert [(r["room_id"], r["entries"], r["floor_seq"]) for r in applied["rooms"]] == [(room.id, 3, 4)]
        assert await stored() == [4, 5, 6]
    finally:
        await connection.close()
    inspected = await _inspect(stack, room.code)
    assert inspected["postgres"] == {"count": 3, "min_seq": 4, "max_seq": 6}
    assert inspected["floor_seq"] == 4
    assert inspected["consistent"] is True, inspected


# --- encryption keys --------------------------------------------------------------------------------


async def test_key_versions_are_shown_and_rotated(stack: Stack, client: httpx.AsyncClient) -> None:
    room = await open_room(client)
    member = await join(client, room.code, "KeyHolder")
    await _send(client, room.code, member["room_token"], ["before the rotation"])

    before = (await admin_cli(stack, "keys", "versions", "--room", room.code)).json()
    assert before["current_data_key_version"] == 1
    assert [(use["version"], use["count"]) for use in before["data_key_versions"]] == [(1, 1)]
    assert before["current_master_version"] in before["available_master_versions"]

    rotated = (await admin_cli(stack, "keys", "rotate-rooms", "--room", room.code)).json()
    assert rotated["rotated"] == 1
    await _send(client, room.code, member["room_token"], ["after the rotation"])
    during = (await admin_cli(stack, "keys", "versions", "--room", room.id)).json()
    assert during["current_data_key_version"] == 2
    assert sorted((use["version"], use["count"]) for use in during["data_key_versions"]) == [(1, 1), (2, 1)]

    moved = (await admin_cli(stack, "keys", "reencrypt", "--room", room.code, "--until-done")).json()
    assert moved["more"] is False and moved["reencrypted"] >= 1
    after = (await admin_cli(stack, "keys", "versions", "--room", room.code)).json()
    assert [use["count"] for use in after["data_key_versions"] if use["version"] == 1] in ([], [0])

    master = (await admin_cli(stack, "keys", "rotate-master")).json()
    assert master["master_version"] == before["current_master_version"]
    summary = (await admin_cli(stack, "keys", "versions")).json()
    assert summary["room_id"] is None
    assert [use["version"] for use in summary["master_versions"]] == [master["master_version"]]

    # Every message still reads as it was sent.
    page = await client.get(f"/api/v1/rooms/{room.code}/messages", headers=bearer(member["room_token"]))
    assert sorted(m["text"] for m in page.json()["messages"]) == ["after the rotation", "before the rotation"]
    inspected = await _inspect(stack, room.code)
    assert inspected["consistent"] is True
    assert inspected["key_versions"][0] == 2


# --- erasing a room ---------------------------------------------------------------------------------


async def test_an_erased_room_can_be_erased_again_and_nothing_of_it_is_left(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await open_room(client)
    member = await join(client, room.code, "Shredded")
    await _send(client, room.code, member["room_token"], ["soon gone"])
    refused = await admin_cli(stack, "room", "erase", room.code, "--yes")
    _refused(refused, "FAILED_PRECONDITION", "room_open")

    closed = await client.post(
        f"/api/v1/rooms/{room.code}/close", json={"erase": True}, headers=bearer(room.host_token)
    )
    assert closed.status_code == 200, closed.text
    erased = await _eventually(
        lambda: admin_cli(stack, "room", "erase", room.code, "--yes"),
        lambda r: r.status == 0 and r.json()["erased"],
        SETTLED,
    )
    assert erased.json()["room_id"] == room.id and erased.json()["erased"] is True
    inspected = await _inspect(stack, room.id)
    assert inspected["postgres"]["count"] == 0 and inspected["key_versions"] == []
    assert inspected["hot_cache"]["count"] == 0
    versions = (await admin_cli(stack, "keys", "versions", "--room", room.id)).json()
    assert versions["data_key_versions"] == []

"""Admins and the audit log, over identity's gRPC API and the admin command line.

identity runs in-process on a free port against the session's Postgres and Redis, with login failures
counted over one-second windows so their events appear quickly. The admin role is granted and revoked
with GrantAdmin / RevokeAdmin and the `cli` service credential, as the admin CLI does (the CLI itself
runs against the whole platform in tests/e2e/test_admin_cli.py). Every test makes its own accounts,
networks (IP hashes) and rooms, and looks only at events that name them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import grpc
import jwt
import pytest

from chatpop.identity.v1 import identity_pb2
from chatpop_common.clients import bearer
from chatpop_common.errors import error_details
from chatpop_common.service_auth import ServiceCredentials
from tests.integration.identity_server import PASSWORD, SERVICE_TOKEN_SECRET, running_identity
from tests.mailbox import Mailbox

if TYPE_CHECKING:
    from chatpop.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub as Stub

FAILURE_WINDOW = 1


def _email() -> str:
    return f"audit-{uuid.uuid4().hex[:12]}@example.com"


def _ip() -> str:
    return hashlib.sha256(os.urandom(8)).hexdigest()


@pytest.fixture(scope="module")
async def stub(database_url: str, redis_url: str, key_file: Path, mailbox: Mailbox) -> AsyncIterator[Stub]:
    async with running_identity(
        database_url,
        redis_url,
        key_file,
        smtp_url=mailbox.url,
        audit_login_failure_window=FAILURE_WINDOW,
    ) as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "identity"})
    yield conn
    await conn.close()


async def _fails(call: Any, status: grpc.StatusCode, code: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == status, info.value.details()
    assert error_details(info.value)[0] == code, info.value.details()
    return info.value


async def _register(stub: Stub, email: str | None = None) -> identity_pb2.RegisterResponse:
    response: identity_pb2.RegisterResponse = await stub.Register(
        identity_pb2.RegisterRequest(email=email or _email(), password=PASSWORD)
    )
    return response


async def _login(
    stub: Stub, email: str, password: str = PASSWORD, ip: str = ""
) -> identity_pb2.LoginResponse:
    response: identity_pb2.LoginResponse = await stub.Login(
        identity_pb2.LoginRequest(email=email, password=password, client_ip_hash=ip)
    )
    return response


def _claims(access_token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return claims


async def _cli(stub: Stub) -> Any:
    """Call metadata with the admin CLI's service credential."""
    return await ServiceCredentials(stub, "cli", SERVICE_TOKEN_SECRET).metadata()


async def _grant(stub: Stub, email: str) -> identity_pb2.GrantAdminResponse:
    granted: identity_pb2.GrantAdminResponse = await stub.GrantAdmin(
        identity_pb2.GrantAdminRequest(email=email), metadata=await _cli(stub)
    )
    return granted


@pytest.fixture
async def admin_token(stub: Stub) -> str:
    """The access token of a new account made an admin as the admin CLI does."""
    email = _email()
    await _register(stub, email)
    assert (await _grant(stub, email)).changed
    return (await _login(stub, email)).tokens.access_token


async def _events(stub: Stub, token: str, **filters: Any) -> identity_pb2.ListAuditEventsResponse:
    response: identity_pb2.ListAuditEventsResponse = await stub.ListAuditEvents(
        identity_pb2.ListAuditEventsRequest(**filters), metadata=bearer(token)
    )
    return response


def _details(event: identity_pb2.AuditEvent) -> dict[str, Any]:
    details: dict[str, Any] = json.loads(event.details_json)
    return details


async def _eventually(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


# --- append-only ----------------------------------------------------------------------------------


async def test_the_database_refuses_to_change_or_remove_audit_events(db: asyncpg.Connection) -> None:
    marker = f"raw-sql-{uuid.uuid4().hex}"
    event_id = await db.fetchval(
        "INSERT INTO audit_events (kind, actor, details) VALUES ('tests.raw_insert', $1, '{\"n\": 1}')"
        " RETURNING id",
        marker,
    )

    for statement in (
        "UPDATE audit_events SET actor = 'someone else' WHERE id = $1",
        "UPDATE audit_events SET details = '{}' WHERE id = $1",
        "DELETE FROM audit_events WHERE id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement, event_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute("TRUNCATE audit_events")
    # Not even inside a transaction that is then committed.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.transaction():
            await db.execute("DELETE FROM audit_events WHERE actor = $1", marker)

    row = await db.fetchrow("SELECT actor, details FROM audit_events WHERE id = $1", event_id)
    assert row["actor"] == marker
    assert json.loads(row["details"]) == {"n": 1}


# --- identity's own events ------------------------------------------------------------------------


async def test_a_login_is_recorded_with_the_account_and_network(stub: Stub, admin_token: str) -> None:
    email = _email()
    account = (await _register(stub, email)).identity.id
    ip = _ip()
    before = await _events(stub, admin_token, kind="identity.login_succeeded", target=account)
    assert list(before.events) == []  # registering is not logging in

    await _login(stub, email, ip=ip)

    listed = await _events(stub, admin_token, kind="identity.login_succeeded", target=account)
    assert len(listed.events) == 1
    event = listed.events[0]
    assert (event.actor, event.target, event.ip_hash, event.room_id) == (account, account, ip, "")
    assert abs(event.at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)


async def test_failed_logins_are_counted_per_email_and_network_not_listed_one_by_one(
    stub: Stub, admin_token: str
) -> None:
    email = _email()
    account = (await _register(stub, email)).identity.id
    hammer, other = _ip(), _ip()
    for _ in range(6):
        with pytest.raises(grpc.aio.AioRpcError):
            await _login(stub, email, "wrong password!", ip=hammer)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await _login(stub, email.upper(), "another wrong one", ip=other)

    def failures(page: identity_pb2.ListAuditEventsResponse, ip: str) -> int:
        return sum(_details(event)["failures"] for event in page.events if event.ip_hash == ip)

    async def read() -> identity_pb2.ListAuditEventsResponse:
        return await _events(stub, admin_token, kind="identity.login_failed", target=account)

    page = await _eventually(read, lambda page: failures(page, hammer) == 6 and failures(page, other) == 2)
    assert failures(page, hammer) == 6
    assert failures(page, other) == 2
    # One event per window and network: eight attempts within a second or two are a few events.
    assert len(page.events) <= 4
    for event in page.events:
        details = _details(event)
        assert event.actor == ""
        assert details["account_exists"] is True
        assert details["window_seconds"] == FAILURE_WINDOW
        assert details["first_at"] <= details["last_at"]
        # The email is there only as a keyed hash: the same for both networks, and not the address.
        assert email not in event.details_json
    assert len({_details(event)["email_hash"] for event in page.events}) == 1


async def test_failed_logins_for_unknown_addresses_are_counted_too(stub: Stub, admin_token: str) -> None:
    ip = _ip()
    nobody = _email()
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await _login(stub, nobody, "whatever it is", ip=ip)

    async def read() -> list[identity_pb2.AuditEvent]:
        page = await _events(stub, admin_token, kind="identity.login_failed", page_size=200)
        return [event for event in page.events if event.ip_hash == ip]

    events = await _eventually(read, lambda events: sum(_details(e)["failures"] for e in events) == 3)
    assert sum(_details(event)["failures"] for event in events) == 3
    assert all(event.target == "" and _details(event)["account_exists"] is False for event in events)
    assert all(nobody not in event.details_json for event in events)


@pytest.mark.parametrize("ip", ["a" * 129, "nul\x00led"])
async def test_sign_ins_refuse_an_ip_hash_that_is_not_one(stub: Stub, ip: str) -> None:
    email = _email()
    registered = await _register(stub, email)
    await _fails(_login(stub, email, ip=ip), grpc.StatusCode.INVALID_ARGUMENT, "invalid_client_ip_hash")
    await _fails(
        stub.RefreshTokens(
            identity_pb2.RefreshTokensRequest(
                refresh_token=registered.tokens.refresh_token, client_ip_hash=ip
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_client_ip_hash",
    )


async def test_refresh_token_reuse_is_recorded_once_when_it_revokes_the_family(
    stub: Stub, admin_token: str
) -> None:
    registered = await _register(stub)
    account = registered.identity.id
    old = registered.tokens.refresh_token
    await stub.RefreshTokens(identity_pb2.RefreshTokensRequest(refresh_token=old))
    thief, again = _ip(), _ip()

    for ip in (thief, again):
        await _fails(
            stub.RefreshTokens(identity_pb2.RefreshTokensRequest(refresh_token=old, client_ip_hash=ip)),
            grpc.StatusCode.UNAUTHENTICATED,
            "refresh_token_reused",
        )

    listed = await _events(stub, admin_token, kind="identity.refresh_token_reused", target=account)
    assert len(listed.events) == 1  # the replay after the revocation revoked nothing more
    event = listed.events[0]
    assert (event.actor, event.target, event.ip_hash) == ("", account, thief)
    # The replayed token and the one it was rotated into.
    assert _details(event)["revoked_tokens"] == 2
    uuid.UUID(_details(event)["family_id"])


async def test_password_resets_and_changes_are_recorded(
    stub: Stub, admin_token: str, mailbox: Mailbox
) -> None:
    email = _email()
    account = (await _register(stub, email)).identity.id
    ip = _ip()
    await stub.RequestPasswordReset(identity_pb2.RequestPasswordResetRequest(email=email, client_ip_hash=ip))
    mail = await mailbox.wait_for(email)
    token = parse_qs(urlsplit(mail.reset_link()).query)["token"][0]
    reset = await stub.ResetPassword(
        identity_pb2.ResetPasswordRequest(token=token, new_password="new pass 1")
    )
    await stub.ChangePassword(
        identity_pb2.ChangePasswordRequest(current_password="new pass 1", new_password="new pass 2"),
        metadata=bearer(reset.tokens.access_token),
    )

    listed = await _events(stub, admin_token, target=account)
    assert [event.kind for event in listed.events] == [
        "identity.password_changed",
        "identity.password_reset_completed",
        "identity.password_reset_requested",
    ]
    changed, completed, requested = listed.events
    assert (requested.actor, requested.ip_hash) == ("", ip)
    assert completed.actor == changed.actor == account
    # The reset signed out the registration's session; the change, the reset's.
    assert _details(completed)["refresh_tokens_revoked"] == 1
    assert _details(changed)["refresh_tokens_revoked"] == 1


# --- admins ---------------------------------------------------------------------------------------


async def test_the_admin_role_comes_from_the_cli_and_reaches_tokens_at_the_next_sign_in(stub: Stub) -> None:
    email = _email()
    registered = await _register(stub, email)
    account = registered.identity.id
    assert "adm" not in _claims(registered.tokens.access_token)
    await _fails(
        _events(stub, registered.tokens.access_token),
        grpc.StatusCode.PERMISSION_DENIED,
        "forbidden",
    )

    granted = await _grant(stub, f"  {email.upper()} ")
    assert (granted.user_id, granted.changed) == (account, True)

    # A token issued before the grant does not carry it ...
    await _fails(
        _events(stub, registered.tokens.access_token), grpc.StatusCode.PERMISSION_DENIED, "forbidden"
    )
    # ... the next refresh does.
    refreshed = await stub.RefreshTokens(
        identity_pb2.RefreshTokensRequest(refresh_token=registered.tokens.refresh_token)
    )
    token = refreshed.tokens.access_token
    assert _claims(token)["adm"] is True
    events = await _events(stub, token, kind="identity.admin_granted", target=account)
    assert [(event.actor, event.target) for event in events.events] == [("cli", account)]

    again = await _grant(stub, email)
    assert (again.user_id, again.changed) == (account, False)
    listed = await stub.ListAdmins(identity_pb2.ListAdminsRequest(), metadata=await _cli(stub))
    mine = [admin for admin in listed.admins if admin.user_id == account]
    assert [(admin.email, admin.granted_at.ToDatetime(tzinfo=UTC)) for admin in mine] == [
        (email, events.events[0].at.ToDatetime(tzinfo=UTC))
    ]

    revoked = await stub.RevokeAdmin(identity_pb2.RevokeAdminRequest(email=email), metadata=await _cli(stub))
    assert (revoked.user_id, revoked.changed) == (account, True)
    # The token still carries the claim until it expires, but identity checks its own table.
    assert _claims(token)["adm"] is True
    await _fails(_events(stub, token), grpc.StatusCode.PERMISSION_DENIED, "forbidden")
    signed_in = await _login(stub, email)
    assert "adm" not in _claims(signed_in.tokens.access_token)
    listed = await stub.ListAdmins(identity_pb2.ListAdminsRequest(), metadata=await _cli(stub))
    assert account not in [admin.user_id for admin in listed.admins]

    # The CLI reads the audit log with its service credential.
    read = await stub.ListAuditEvents(
        identity_pb2.ListAuditEventsRequest(target=account, page_size=10), metadata=await _cli(stub)
    )
    assert [event.kind for event in read.events] == [
        "identity.login_succeeded",
        "identity.admin_revoked",
        "identity.admin_granted",
    ]
    assert (read.events[1].actor, read.events[1].target) == ("cli", account)


async def test_the_admin_role_changes_only_with_the_cli_credential(stub: Stub) -> None:
    await _fails(
        stub.GrantAdmin(identity_pb2.GrantAdminRequest(email=_email()), metadata=await _cli(stub)),
        grpc.StatusCode.NOT_FOUND,
        "account_not_found",
    )
    await _fails(
        stub.RevokeAdmin(identity_pb2.RevokeAdminRequest(email="not an email"), metadata=await _cli(stub)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_email",
    )
    email = _email()
    account = await _register(stub, email)
    rooms = await ServiceCredentials(stub, "rooms", SERVICE_TOKEN_SECRET).metadata()
    for metadata in (bearer(account.tokens.access_token), rooms):
        await _fails(
            stub.GrantAdmin(identity_pb2.GrantAdminRequest(email=email), metadata=metadata),
            grpc.StatusCode.PERMISSION_DENIED,
            "forbidden",
        )
        await _fails(
            stub.ListAdmins(identity_pb2.ListAdminsRequest(), metadata=metadata),
            grpc.StatusCode.PERMISSION_DENIED,
            "forbidden",
        )
    await _fails(
        stub.RevokeAdmin(identity_pb2.RevokeAdminRequest(email=email)),
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated",
    )
    # Other services' credentials do not read the audit log either.
    await _fails(
        stub.ListAuditEvents(identity_pb2.ListAuditEventsRequest(), metadata=rooms),
        grpc.StatusCode.PERMISSION_DENIED,
        "forbidden",
    )
    assert "adm" not in _claims((await _login(stub, email)).tokens.access_token)


async def test_anonymous_sessions_cannot_be_admins(db: asyncpg.Connection, stub: Stub) -> None:
    session = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "UPDATE identities SET is_admin = true WHERE id = $1", uuid.UUID(session.identity.id)
        )


async def test_only_admins_may_list_or_record(stub: Stub) -> None:
    anonymous = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    account = await _register(stub)
    room_token = await stub.IssueRoomToken(
        identity_pb2.IssueRoomTokenRequest(
            room_id=str(uuid.uuid4()),
            participant_id=str(uuid.uuid4()),
            subject=account.identity.id,
            username="Someone",
        )
    )
    event = identity_pb2.NewAuditEvent(kind="rooms.participant_banned")
    for token in (anonymous.tokens.access_token, account.tokens.access_token, room_token.room_token):
        await _fails(_events(stub, token), grpc.StatusCode.PERMISSION_DENIED, "forbidden")
        await _fails(
            stub.RecordAuditEvents(
                identity_pb2.RecordAuditEventsRequest(events=[event]), metadata=bearer(token)
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "forbidden",
        )
    await _fails(
        stub.ListAuditEvents(identity_pb2.ListAuditEventsRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated",
    )


# --- querying and appending -----------------------------------------------------------------------


async def test_recorded_events_are_listed_newest_first_by_filter_and_page(
    stub: Stub, admin_token: str
) -> None:
    room = str(uuid.uuid4())
    host, troll = f"participant-{uuid.uuid4().hex}", f"participant-{uuid.uuid4().hex}"
    batch = [
        identity_pb2.NewAuditEvent(
            kind="rooms.participant_banned" if n % 2 else "rooms.message_deleted",
            actor=host,
            target=troll if n % 2 else f"message-{n}",
            room_id=room,
            ip_hash=_ip(),
            details_json=json.dumps({"n": n}),
            idempotency_key=f"{room}:{n}",
        )
        for n in range(7)
    ]
    started = datetime.now(UTC) - timedelta(seconds=1)
    recorded = await stub.RecordAuditEvents(
        identity_pb2.RecordAuditEventsRequest(events=batch), metadata=bearer(admin_token)
    )
    assert recorded.recorded == 7
    # A retried batch records nothing twice.
    again = await stub.RecordAuditEvents(
        identity_pb2.RecordAuditEventsRequest(events=batch), metadata=bearer(admin_token)
    )
    assert again.recorded == 0

    seen: list[identity_pb2.AuditEvent] = []
    before = 0
    pages = 0
    while True:
        page = await _events(stub, admin_token, room_id=room, page_size=3, before_id=before)
        pages += 1
        seen += page.events
        if not page.next_before_id:
            break
        assert page.next_before_id == page.events[-1].id
        before = page.next_before_id
    assert pages == 3
    assert [_details(event)["n"] for event in seen] == [6, 5, 4, 3, 2, 1, 0]
    assert [event.id for event in seen] == sorted((event.id for event in seen), reverse=True)
    assert seen[0].ip_hash == batch[6].ip_hash and seen[0].room_id == room

    banned = await _events(stub, admin_token, room_id=room, kind="rooms.participant_banned")
    assert [_details(event)["n"] for event in banned.events] == [5, 3, 1]
    assert [_details(e)["n"] for e in (await _events(stub, admin_token, target=troll)).events] == [5, 3, 1]
    assert len((await _events(stub, admin_token, actor=host)).events) == 7
    assert len((await _events(stub, admin_token, actor=host, target="message-4")).events) == 1

    since = identity_pb2.ListAuditEventsRequest(room_id=room)
    since.since.FromDatetime(started)
    assert len((await stub.ListAuditEvents(since, metadata=bearer(admin_token))).events) == 7
    until = identity_pb2.ListAuditEventsRequest(room_id=room)
    until.until.FromDatetime(started)
    assert list((await stub.ListAuditEvents(until, metadata=bearer(admin_token))).events) == []


async def test_a_page_is_bounded(stub: Stub, admin_token: str) -> None:
    full = await _events(stub, admin_token, page_size=200)
    assert len(full.events) <= 200
    default = await _events(stub, admin_token)
    assert len(default.events) <= 50
    for size in (201, -1):
        await _fails(
            _events(stub, admin_token, page_size=size), grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"
        )


@pytest.mark.parametrize(
    "filters",
    [
        {"kind": "Not A Kind"},
        {"kind": "nodot"},
        {"kind": "a." + "b" * 70},
        {"room_id": "not-a-uuid"},
        {"actor": "x" * 129},
        {"target": "nul\x00led"},
        {"before_id": -5},
    ],
)
async def test_list_refuses_bad_filters(stub: Stub, admin_token: str, filters: dict[str, Any]) -> None:
    await _fails(_events(stub, admin_token, **filters), grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument")


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": ""},
        {"kind": "identity.login_succeeded"},
        {"kind": "rooms.Banned"},
        {"room_id": "room one"},
        {"details_json": "[1, 2]"},
        {"details_json": "{not json"},
        {"details_json": json.dumps({"x": "y" * 5000})},
        {"details_json": '{"a": "\\u0000"}'},
        {"details_json": "[" * 3000 + "]" * 3000},
        {"actor": "a" * 129},
        {"idempotency_key": "k" * 129},
        {"ip_hash": "\x00"},
    ],
)
async def test_record_refuses_bad_events_and_records_none_of_the_batch(
    stub: Stub, admin_token: str, fields: dict[str, Any]
) -> None:
    room = str(uuid.uuid4())
    good = identity_pb2.NewAuditEvent(kind="rooms.room_taken_down", room_id=room)
    bad = identity_pb2.NewAuditEvent(**{"kind": "rooms.participant_banned", "room_id": room, **fields})
    await _fails(
        stub.RecordAuditEvents(
            identity_pb2.RecordAuditEventsRequest(events=[good, bad]), metadata=bearer(admin_token)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_argument",
    )
    assert list((await _events(stub, admin_token, room_id=room)).events) == []


async def test_record_takes_one_to_a_hundred_events(stub: Stub, admin_token: str) -> None:
    event = identity_pb2.NewAuditEvent(kind="rooms.room_taken_down")
    for count in (0, 101):
        await _fails(
            stub.RecordAuditEvents(
                identity_pb2.RecordAuditEventsRequest(events=[event] * count), metadata=bearer(admin_token)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_argument",
        )
    room = str(uuid.uuid4())
    full = [identity_pb2.NewAuditEvent(kind="rooms.room_taken_down", room_id=room)] * 100
    recorded = await stub.RecordAuditEvents(
        identity_pb2.RecordAuditEventsRequest(events=full), metadata=bearer(admin_token)
    )
    assert recorded.recorded == 100

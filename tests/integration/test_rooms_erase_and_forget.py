"""Closing a room with "delete everything", and deleting an account, over gRPC: real identity and rooms
servers against the session's Postgres and Redis, and a fake messaging that records what rooms' outbox
asks of it (EraseRoom, ForgetParticipants) with which credential.

identity's outbox calls rooms' ForgetSubject with identity's own service credential; rooms' outbox
calls messaging with rooms'.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
import pytest_asyncio
from test_rooms_service import Caller, _create, _error, _join, identity_server, rooms_serving, signing_key

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.devstack import free_port
from chatpop_common.service_auth import ServiceCredentials
from tests.integration.identity_server import SERVICE_TOKEN_SECRET

__all__ = ["signing_key"]

PASSWORD = "correct horse battery staple"
DEADLINE = 20.0


@dataclass
class FakeMessaging(messaging_pb2_grpc.MessagingServiceServicer):
    """Answers EraseRoom `erased` from the second call on for each room (the first one "still purges
    media"), and records every call with the service that made it."""

    erase_calls: list[tuple[str, str]] = field(default_factory=list)
    forget_calls: list[tuple[str, messaging_pb2.ForgetParticipantsRequest]] = field(default_factory=list)

    @staticmethod
    def _caller(context: grpc.aio.ServicerContext) -> str:
        token = dict(context.invocation_metadata() or ()).get("authorization", "").removeprefix("Bearer ")
        claims = jwt.decode(token, options={"verify_signature": False})
        return f"{claims['typ']}:{claims['sub']}"

    async def EraseRoom(
        self, request: messaging_pb2.EraseRoomRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.EraseRoomResponse:
        self.erase_calls.append((request.room_id, self._caller(context)))
        calls = sum(1 for room_id, _ in self.erase_calls if room_id == request.room_id)
        return messaging_pb2.EraseRoomResponse(erased=calls >= 2)

    async def ForgetParticipants(
        self, request: messaging_pb2.ForgetParticipantsRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.ForgetParticipantsResponse:
        self.forget_calls.append((self._caller(context), request))
        return messaging_pb2.ForgetParticipantsResponse(entries=len(request.participants))


@dataclass
class Platform:
    identity: identity_pb2_grpc.IdentityServiceStub
    rooms: rooms_pb2_grpc.RoomsServiceStub
    messaging: FakeMessaging
    database_url: str

    async def account(self, username: str = "") -> tuple[Caller, str]:
        response = await self.identity.Register(
            identity_pb2.RegisterRequest(
                email=f"{uuid.uuid4().hex}@example.com", password=PASSWORD, reserved_username=username
            ),
            timeout=10,
        )
        return Caller(response.identity.id, response.tokens.access_token), response.tokens.refresh_token

    async def anonymous(self) -> Caller:
        response = await self.identity.CreateAnonymousSession(
            identity_pb2.CreateAnonymousSessionRequest(), timeout=5
        )
        return Caller(response.identity.id, response.tokens.access_token)


@pytest_asyncio.fixture(scope="module")
async def platform(database_url: str, redis_url: str, signing_key: Path) -> AsyncIterator[Platform]:
    fake = FakeMessaging()
    messaging = grpc.aio.server()
    messaging_pb2_grpc.add_MessagingServiceServicer_to_server(fake, messaging)
    messaging_port = messaging.add_insecure_port("127.0.0.1:0")
    await messaging.start()
    rooms_port = free_port()
    try:
        async with (
            identity_server(
                database_url, redis_url, signing_key, rooms_addr=f"127.0.0.1:{rooms_port}"
            ) as identity_addr,
            grpc.aio.insecure_channel(identity_addr) as identity_channel,
            rooms_serving(
                database_url,
                redis_url,
                identity_addr,
                grpc_port=rooms_port,
                messaging_addr=f"127.0.0.1:{messaging_port}",
            ) as rooms_addr,
            grpc.aio.insecure_channel(rooms_addr) as rooms_channel,
        ):
            yield Platform(
                identity_pb2_grpc.IdentityServiceStub(identity_channel),
                rooms_pb2_grpc.RoomsServiceStub(rooms_channel),
                fake,
                database_url,
            )
    finally:
        await messaging.stop(0)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + DEADLINE
    while not await check():
        if loop.time() > until:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.1)


async def _fetch(platform: Platform, sql: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(platform.database_url)
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


# --- closing with "delete everything" -------------------------------------------------------------


async def test_closing_with_erase_marks_the_room_and_asks_messaging_until_it_is_erased(
    platform: Platform,
) -> None:
    host = await platform.anonymous()
    guest = await platform.anonymous()
    room = await _create(platform, host)  # type: ignore[arg-type]
    await _join(platform, guest, room.code)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as not_host:
        await platform.rooms.CloseRoom(
            rooms_pb2.CloseRoomRequest(room_id=room.id, erase=True), metadata=guest.md, timeout=5
        )
    assert _error(not_host)[0] == grpc.StatusCode.PERMISSION_DENIED

    closed = await platform.rooms.CloseRoom(
        rooms_pb2.CloseRoomRequest(room_id=room.id, erase=True), metadata=host.md, timeout=5
    )
    assert (closed.room.closed, closed.room.erased) == (True, True)
    fetched = await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(code=room.code), timeout=5)
    assert (fetched.room.closed, fetched.room.erased) == (True, True)

    async def erased() -> bool:
        rows = await _fetch(
            platform,
            "SELECT delivered_at FROM rooms.outbox WHERE topic = 'room.erase' AND key = $1",
            room.id,
        )
        return len(rows) == 1 and rows[0]["delivered_at"] is not None

    await eventually(erased, "rooms' outbox delivered the erasure")
    calls = [call for call in platform.messaging.erase_calls if call[0] == room.id]
    # Asked again after "not yet", always with rooms' own service credential.
    assert calls == [(room.id, "service:rooms")] * 2

    # Closing again with erase changes nothing more (one outbox row per room).
    again = await platform.rooms.CloseRoom(
        rooms_pb2.CloseRoomRequest(room_id=room.id, erase=True), metadata=host.md, timeout=5
    )
    assert again.room.erased
    rows = await _fetch(platform, "SELECT count(*) AS n FROM rooms.outbox WHERE key = $1", room.id)
    assert rows[0]["n"] == 1


async def test_closing_without_erase_keeps_the_history(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _create(platform, host)  # type: ignore[arg-type]
    closed = await platform.rooms.CloseRoom(
        rooms_pb2.CloseRoomRequest(room_id=room.id), metadata=host.md, timeout=5
    )
    assert (closed.room.closed, closed.room.erased) == (True, False)
    rows = await _fetch(platform, "SELECT count(*) AS n FROM rooms.outbox WHERE key = $1", room.id)
    assert rows[0]["n"] == 0


# --- deleting an account --------------------------------------------------------------------------


async def test_deleting_an_account_forgets_it_everywhere(platform: Platform) -> None:
    username = "del" + uuid.uuid4().hex[:8]
    account, refresh = await platform.account(username)
    other = await platform.anonymous()
    # The account joined someone else's room under its reserved (verified) name, and hosts a room.
    elsewhere = await _create(platform, other)  # type: ignore[arg-type]
    joined = await _join(platform, account, elsewhere.code, username)  # type: ignore[arg-type]
    assert joined.participant.verified
    hosted = await _create(platform, account)  # type: ignore[arg-type]
    own = await _join(platform, account, hosted.code, username)  # type: ignore[arg-type]

    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await platform.identity.DeleteAccount(
            identity_pb2.DeleteAccountRequest(password="not the password"), metadata=account.md, timeout=10
        )
    assert _error(wrong)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "wrong_password")
    anonymous = await platform.anonymous()
    with pytest.raises(grpc.aio.AioRpcError) as not_an_account:
        await platform.identity.DeleteAccount(
            identity_pb2.DeleteAccountRequest(password=PASSWORD), metadata=anonymous.md, timeout=10
        )
    assert _error(not_an_account)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "account_required")

    deleted = await platform.identity.DeleteAccount(
        identity_pb2.DeleteAccountRequest(password=PASSWORD, erase_messages=True),
        metadata=account.md,
        timeout=10,
    )
    assert deleted.subject == account.subject

    # At once: its tokens no longer work at identity, and nothing personal is left in its row.
    with pytest.raises(grpc.aio.AioRpcError) as me:
        await platform.identity.GetIdentity(identity_pb2.GetIdentityRequest(), metadata=account.md, timeout=5)
    assert _error(me)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "account_deleted")
    with pytest.raises(grpc.aio.AioRpcError) as refreshed:
        await platform.identity.RefreshTokens(
            identity_pb2.RefreshTokensRequest(refresh_token=refresh), timeout=5
        )
    assert refreshed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    row = (
        await _fetch(
            platform,
            "SELECT kind, email, password_hash, reserved_username, deleted_at FROM identity.identities"
            " WHERE id = $1",
            uuid.UUID(account.subject),
        )
    )[0]
    assert (row["kind"], row["email"], row["password_hash"], row["reserved_username"]) == (
        "deleted",
        None,
        None,
        None,
    )
    assert row["deleted_at"] is not None
    tokens = await _fetch(
        platform,
        "SELECT count(*) AS n FROM identity.refresh_tokens WHERE identity_id = $1",
        uuid.UUID(account.subject),
    )
    assert tokens[0]["n"] == 0
    events = await _fetch(
        platform,
        "SELECT details FROM identity.audit_events WHERE kind = 'identity.account_deleted' AND target = $1",
        account.subject,
    )
    assert len(events) == 1
    # Its reserved username is free for anyone at once.
    free = await platform.identity.CheckUsername(
        identity_pb2.CheckUsernameRequest(username=username), timeout=5
    )
    assert free.available

    # Then rooms forgets it: neutral names, detached, tokens revoked, badge off; its room closed; and
    # messaging is told with rooms' credential, erase_messages passed on.
    async def told() -> bool:
        return any(
            {p.participant_id for p in request.participants} == {joined.participant.id, own.participant.id}
            for _, request in platform.messaging.forget_calls
        )

    await eventually(told, "messaging was told to forget the participants")
    caller, request = next(
        call
        for call in platform.messaging.forget_calls
        if call[1].participants[0].participant_id in {joined.participant.id, own.participant.id}
    )
    assert caller == "service:rooms" and request.erase_messages
    names = {p.participant_id: p.username for p in request.participants}
    for participant in (joined.participant, own.participant):
        now = (
            await platform.rooms.GetParticipant(
                rooms_pb2.GetParticipantRequest(room_id=participant.room_id, participant_id=participant.id),
                timeout=5,
            )
        ).participant
        assert now.username == names[participant.id]
        assert now.username.startswith("deleted_") and 5 <= len(now.username) <= 15
        assert now.subject != account.subject and not now.verified
        assert now.version == participant.version + 1
    room = (await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(room_id=hosted.id), timeout=5)).room
    assert room.closed and not room.erased
    assert not (
        await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(room_id=elsewhere.id), timeout=5)
    ).room.closed

    # The account's access token (still within its lifetime) can neither create nor join a room.
    with pytest.raises(grpc.aio.AioRpcError) as create:
        await _create(platform, account)  # type: ignore[arg-type]
    assert _error(create)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "account_deleted")
    with pytest.raises(grpc.aio.AioRpcError) as join:
        await _join(platform, account, elsewhere.code)  # type: ignore[arg-type]
    assert _error(join)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "account_deleted")


async def test_only_identity_may_ask_rooms_to_forget(platform: Platform) -> None:
    identity = ServiceCredentials(platform.identity, "identity", SERVICE_TOKEN_SECRET)
    rooms = ServiceCredentials(platform.identity, "rooms", SERVICE_TOKEN_SECRET)
    subject = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await platform.rooms.ForgetSubject(
            rooms_pb2.ForgetSubjectRequest(subject=subject), metadata=await rooms.metadata(), timeout=5
        )
    assert _error(refused)[0] == grpc.StatusCode.PERMISSION_DENIED
    done = await platform.rooms.ForgetSubject(
        rooms_pb2.ForgetSubjectRequest(subject=subject), metadata=await identity.metadata(), timeout=5
    )
    assert (done.participants, done.rooms_closed) == (0, 0)

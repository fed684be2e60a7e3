"""rooms over gRPC: the real rooms server and the real identity server in-process, on free ports,
against the session's Postgres and Redis. Every test makes its own callers and rooms."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.auth import TokenVerifier, room_audience
from chatpop_common.clients import bearer, identity_key_cache, jwks_to_keys
from chatpop_common.devstack import free_port
from chatpop_common.errors import PermissionDenied, error_details
from chatpop_common.server import GrpcApp, serve
from chatpop_identity.app import build as build_identity
from chatpop_identity.keys import write_new_key
from chatpop_identity.settings import Settings as IdentitySettings
from chatpop_rooms.app import build as build_rooms
from chatpop_rooms.codes import ALPHABET, new_room_code
from chatpop_rooms.settings import Settings as RoomsSettings
from tests.integration.identity_server import SERVICE_TOKEN_SECRET
from tests.integration.inprocess import wait_serving
from tests.integration.redis_targets import RedisTarget, key_slots, keys_matching

# Cheap hashes keep the suite fast; production uses argon2-cffi's defaults.
LIGHT_ARGON2: dict[str, int] = {
    "access_code_hash_time_cost": 1,
    "access_code_hash_memory_kib": 64,
    "access_code_hash_parallelism": 1,
}
SECRET = "open-sesame"
# Tests make many callers and rooms from one address; the limits themselves are tested with their
# defaults or small values in test_rooms_usernames.py.
ACCESS_CODE_KEY = "rooms-integration-tests-access-code-key"
GENEROUS_LIMITS: dict[str, int] = {"anonymous_usernames_per_ip": 1000, "anonymous_room_limit": 1000}


@asynccontextmanager
async def _serving(name: str, settings: Any, build: Callable[[], Any]) -> AsyncIterator[str]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(name, settings, build, drain_delay=0, stop_event=stop))
    address = f"127.0.0.1:{settings.grpc_port}"
    try:
        await wait_serving(address, task)
        yield address
    finally:
        stop.set()
        await task


@asynccontextmanager
async def rooms_server(
    database_url: str,
    redis_url: str,
    identity_addr: str,
    *,
    room_codes: Callable[[], str] = new_room_code,
    **overrides: Any,
) -> AsyncIterator[rooms_pb2_grpc.RoomsServiceAsyncStub]:
    async with (
        rooms_serving(database_url, redis_url, identity_addr, room_codes=room_codes, **overrides) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield rooms_pb2_grpc.RoomsServiceStub(channel)  # type: ignore[misc]


@asynccontextmanager
async def rooms_serving(
    database_url: str,
    redis_url: str,
    identity_addr: str,
    *,
    room_codes: Callable[[], str] = new_room_code,
    **overrides: Any,
) -> AsyncIterator[str]:
    """A rooms server on a free port; yields its address."""
    settings = RoomsSettings.model_validate(
        {
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "database_url": database_url,
            "redis_url": redis_url,
            "identity_addr": identity_addr,
            "shutdown_grace": 1,
            "access_code_key": ACCESS_CODE_KEY,
            "service_token_secret": SERVICE_TOKEN_SECRET,
            **LIGHT_ARGON2,
            **GENEROUS_LIMITS,
            **overrides,
        }
    )

    def build() -> Any:
        return build_rooms(settings, room_codes=room_codes)

    async with _serving("rooms", settings, build) as address:
        yield address


@dataclass
class Platform:
    database_url: str
    redis_url: str
    identity_addr: str
    identity: identity_pb2_grpc.IdentityServiceAsyncStub
    rooms: rooms_pb2_grpc.RoomsServiceAsyncStub
    verifier: TokenVerifier
    # REDIS_CLUSTER of `rooms` (redis_platform); rooms servers a test starts itself take it too.
    redis_cluster: bool = False

    async def anonymous(self) -> Caller:
        response = await self.identity.CreateAnonymousSession(
            identity_pb2.CreateAnonymousSessionRequest(), timeout=5
        )
        return Caller(response.identity.id, response.tokens.access_token)


@dataclass(frozen=True)
class Caller:
    subject: str
    token: str

    @property
    def md(self) -> Any:
        return bearer(self.token)


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("rooms-identity") / "signing.pem"
    write_new_key(path)
    yield path


@asynccontextmanager
async def identity_server(
    database_url: str, redis_url: str, signing_key: Path, **overrides: Any
) -> AsyncIterator[str]:
    """An identity server on a free port; yields its address."""
    settings = IdentitySettings.model_validate(
        {
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "database_url": database_url,
            "redis_url": redis_url,
            "identity_signing_key_file": signing_key,
            "argon2_time_cost": 1,
            "argon2_memory_cost": 64,
            "argon2_parallelism": 1,
            "shutdown_grace": 1,
            "service_token_secret": SERVICE_TOKEN_SECRET,
            **overrides,
        }
    )

    async def build_identity_app() -> GrpcApp:
        return await build_identity(settings)

    async with _serving("identity", settings, build_identity_app) as address:
        yield address


@pytest_asyncio.fixture(scope="module")
async def platform(database_url: str, redis_url: str, signing_key: Path) -> AsyncIterator[Platform]:
    async with (
        identity_server(database_url, redis_url, signing_key) as identity_addr,
        grpc.aio.insecure_channel(identity_addr) as identity_channel,
        rooms_server(database_url, redis_url, identity_addr) as rooms,
    ):
        yield Platform(
            database_url=database_url,
            redis_url=redis_url,
            identity_addr=identity_addr,
            identity=identity_pb2_grpc.IdentityServiceStub(identity_channel),  # type: ignore[arg-type]
            rooms=rooms,
            verifier=TokenVerifier(identity_key_cache(identity_channel)),
        )


@pytest_asyncio.fixture
async def redis_platform(platform: Platform, redis_target: RedisTarget) -> AsyncIterator[Platform]:
    """The module's platform with a rooms server of its own on the session's single Redis, then on
    the session's Redis Cluster: a test of rooms' Redis users taking this runs against both."""
    async with rooms_server(
        platform.database_url, redis_target.url, platform.identity_addr, redis_cluster=redis_target.cluster
    ) as rooms:
        yield replace(platform, rooms=rooms, redis_url=redis_target.url, redis_cluster=redis_target.cluster)


async def _public_key(platform: Platform, kid: str) -> Ed25519PublicKey:
    response = await platform.identity.GetPublicKeys(identity_pb2.GetPublicKeysRequest(), timeout=5)
    return jwks_to_keys(response.keys)[kid]


def _error(raised: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> tuple[grpc.StatusCode, str, int | None]:
    code, retry_after = error_details(raised.value)
    return raised.value.code(), code, retry_after


async def _create(
    platform: Platform, host: Caller, rooms: rooms_pb2_grpc.RoomsServiceAsyncStub | None = None, **fields: Any
) -> rooms_pb2.Room:
    fields.setdefault("name", "Test room")
    stub = rooms or platform.rooms
    response: rooms_pb2.CreateRoomResponse = await stub.CreateRoom(
        rooms_pb2.CreateRoomRequest(**fields), metadata=host.md, timeout=10
    )
    return response.room


async def _private_room(platform: Platform, host: Caller, **fields: Any) -> rooms_pb2.Room:
    return await _create(
        platform, host, visibility=rooms_pb2.VISIBILITY_PRIVATE, access_code=SECRET, **fields
    )


# Consonants only: random names can then never spell a word the profanity filter refuses.
_NAME_LETTERS = "bdghjmnpqrvwxz"


def _letters(count: int) -> str:
    return "".join(_NAME_LETTERS[byte % len(_NAME_LETTERS)] for byte in os.urandom(count))


def _name() -> str:
    """A valid username unique to the test run."""
    return f"u_{_letters(10)}"


def _ip() -> str:
    return uuid.uuid4().hex


async def _join(
    platform: Platform,
    caller: Caller,
    code: str,
    username: str = "",
    *,
    access_code: str = "",
    client_ip_hash: str = "",
    rooms: rooms_pb2_grpc.RoomsServiceAsyncStub | None = None,
) -> rooms_pb2.JoinRoomResponse:
    stub = rooms or platform.rooms
    request = rooms_pb2.JoinRoomRequest(
        code=code, username=username or _name(), access_code=access_code, client_ip_hash=client_ip_hash
    )
    response: rooms_pb2.JoinRoomResponse = await stub.JoinRoom(request, metadata=caller.md, timeout=10)
    return response


# --- creating and reading rooms ---------------------------------------------------------------


async def test_create_room_with_defaults_and_read_it_back(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _create(platform, host, name="  Friday quiz  ")

    assert room.name == "Friday quiz"
    assert room.host_id == host.subject
    assert room.visibility == rooms_pb2.VISIBILITY_PUBLIC
    assert room.theme == rooms_pb2.THEME_PURPLE_DREAM
    assert room.retention_days == 30
    assert not room.closed
    assert len(room.code) == 8 and set(room.code) <= set(ALPHABET)
    assert str(uuid.UUID(room.id)) == room.id

    by_code = await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(code=room.code.lower()), timeout=5)
    by_id = await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(room_id=room.id), timeout=5)
    assert by_code.room == room
    assert by_id.room == room


async def test_create_room_with_every_setting(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _create(
        platform,
        host,
        name="Night owls",
        description="Talk until dawn.\nBe kind.",
        media=rooms_pb2.MediaSettings(photo=True, voice=False, video=True),
        theme=rooms_pb2.THEME_DARK_MODE,
        retention_days=0,
    )
    fetched = (await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(code=room.code), timeout=5)).room
    assert fetched.description == "Talk until dawn.\nBe kind."
    assert (fetched.media.photo, fetched.media.voice, fetched.media.video) == (True, False, True)
    assert fetched.theme == rooms_pb2.THEME_DARK_MODE
    assert fetched.retention_days == 0


async def test_private_room_never_reveals_its_access_code(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _private_room(platform, host)
    fetched = await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(code=room.code), timeout=5)

    assert fetched.room.visibility == rooms_pb2.VISIBILITY_PRIVATE
    assert "access_code" not in rooms_pb2.Room.DESCRIPTOR.fields_by_name
    for payload in (room.SerializeToString(), fetched.SerializeToString()):
        assert SECRET.encode() not in payload
        assert b"argon2" not in payload


async def test_create_room_needs_an_access_token(platform: Platform) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await platform.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(name="No token"), timeout=5)
    assert _error(anonymous)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")

    with pytest.raises(grpc.aio.AioRpcError) as forged:
        await platform.rooms.CreateRoom(
            rooms_pb2.CreateRoomRequest(name="Bad token"), metadata=bearer("not.a.token"), timeout=5
        )
    assert _error(forged)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "invalid_token")

    host = await platform.anonymous()
    room = await _create(platform, host)
    joined = await _join(platform, host, room.code)
    with pytest.raises(grpc.aio.AioRpcError) as room_token:
        await platform.rooms.CreateRoom(
            rooms_pb2.CreateRoomRequest(name="Room token"), metadata=bearer(joined.room_token), timeout=5
        )
    assert _error(room_token)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "access_token_required")


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"name": ""}, "invalid_name"),
        ({"name": "   "}, "invalid_name"),
        ({"name": "n" * 81}, "invalid_name"),
        ({"name": "bad\x00name"}, "invalid_name"),
        ({"name": "ok", "description": "d" * 501}, "invalid_description"),
        ({"name": "ok", "visibility": rooms_pb2.VISIBILITY_PRIVATE}, "access_code_required"),
        (
            {"name": "ok", "visibility": rooms_pb2.VISIBILITY_PRIVATE, "access_code": "abc"},
            "invalid_access_code",
        ),
        (
            {"name": "ok", "visibility": rooms_pb2.VISIBILITY_PRIVATE, "access_code": "a" * 65},
            "invalid_access_code",
        ),
        ({"name": "ok", "access_code": "public-code"}, "access_code_not_allowed"),
        ({"name": "ok", "retention_days": -1}, "invalid_retention"),
        ({"name": "ok", "retention_days": 3651}, "invalid_retention"),
        ({"name": "ok", "visibility": 7}, "invalid_visibility"),
        ({"name": "ok", "theme": 9}, "invalid_theme"),
    ],
)
async def test_create_room_refuses_bad_input(platform: Platform, fields: dict[str, Any], code: str) -> None:
    host = await platform.anonymous()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await platform.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(**fields), metadata=host.md, timeout=5)
    assert _error(raised)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code)


async def test_unknown_rooms_are_not_found(platform: Platform) -> None:
    requests = [
        rooms_pb2.GetRoomRequest(code=new_room_code()),
        rooms_pb2.GetRoomRequest(code="not a code"),
        rooms_pb2.GetRoomRequest(room_id=str(uuid.uuid4())),
        rooms_pb2.GetRoomRequest(room_id="not-a-uuid"),
    ]
    for request in requests:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await platform.rooms.GetRoom(request, timeout=5)
        assert _error(raised)[:2] == (grpc.StatusCode.NOT_FOUND, "room_not_found")

    with pytest.raises(grpc.aio.AioRpcError) as neither:
        await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(), timeout=5)
    assert _error(neither)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "room_key_required")


async def test_a_taken_code_is_never_handed_out_twice(platform: Platform) -> None:
    taken = new_room_code()
    draws = iter([taken, taken, taken])

    def codes() -> str:
        return next(draws, None) or new_room_code()

    host = await platform.anonymous()
    async with rooms_server(
        platform.database_url, platform.redis_url, platform.identity_addr, room_codes=codes
    ) as rooms:
        first = await _create(platform, host, rooms=rooms, name="First")
        second = await _create(platform, host, rooms=rooms, name="Second")

    assert first.code == taken
    assert second.code != taken
    fetched = await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(code=taken), timeout=5)
    assert fetched.room.id == first.id


# --- host settings ------------------------------------------------------------------------------


async def test_host_updates_settings(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _create(platform, host, name="Before", description="old")
    updated = await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(
            room_id=room.id,
            name="After",
            theme=rooms_pb2.THEME_OCEAN_BLUE,
            retention_days=0,
            media=rooms_pb2.MediaSettings(voice=True),
        ),
        metadata=host.md,
        timeout=5,
    )
    assert updated.room.name == "After"
    assert updated.room.description == "old"  # unset fields stay as they were
    assert updated.room.theme == rooms_pb2.THEME_OCEAN_BLUE
    assert updated.room.retention_days == 0
    assert updated.room.media.voice and not updated.room.media.photo
    assert updated.room.updated_at.ToDatetime() >= room.updated_at.ToDatetime()
    fetched = await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(room_id=room.id), timeout=5)
    assert fetched.room == updated.room


async def test_only_the_host_updates_or_closes(platform: Platform) -> None:
    host, stranger = await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host, name="Mine")
    with pytest.raises(grpc.aio.AioRpcError) as update:
        await platform.rooms.UpdateRoom(
            rooms_pb2.UpdateRoomRequest(room_id=room.id, name="Hijacked"), metadata=stranger.md, timeout=5
        )
    assert _error(update)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "not_host")
    with pytest.raises(grpc.aio.AioRpcError) as close:
        await platform.rooms.CloseRoom(
            rooms_pb2.CloseRoomRequest(room_id=room.id), metadata=stranger.md, timeout=5
        )
    assert _error(close)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "not_host")
    with pytest.raises(grpc.aio.AioRpcError) as no_token:
        await platform.rooms.UpdateRoom(rooms_pb2.UpdateRoomRequest(room_id=room.id, name="Anon"), timeout=5)
    assert _error(no_token)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")

    fetched = await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(room_id=room.id), timeout=5)
    assert fetched.room.name == "Mine"
    assert not fetched.room.closed


async def test_update_refuses_bad_input_and_changes_nothing(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _create(platform, host, name="Steady")
    bad = [
        (rooms_pb2.UpdateRoomRequest(room_id=room.id, name="x" * 81), "invalid_name"),
        (rooms_pb2.UpdateRoomRequest(room_id=room.id, name="Fine", retention_days=4000), "invalid_retention"),
        (
            rooms_pb2.UpdateRoomRequest(room_id=room.id, visibility=rooms_pb2.VISIBILITY_PRIVATE),
            "access_code_required",
        ),
        (
            rooms_pb2.UpdateRoomRequest(room_id=room.id, access_code="only-for-private"),
            "access_code_not_allowed",
        ),
    ]
    for request, code in bad:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await platform.rooms.UpdateRoom(request, metadata=host.md, timeout=5)
        assert _error(raised)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code)
    fetched = await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(room_id=room.id), timeout=5)
    assert fetched.room == room

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await platform.rooms.UpdateRoom(
            rooms_pb2.UpdateRoomRequest(room_id=str(uuid.uuid4()), name="Ghost"), metadata=host.md, timeout=5
        )
    assert _error(missing)[:2] == (grpc.StatusCode.NOT_FOUND, "room_not_found")


async def test_switching_visibility_sets_and_clears_the_access_code(platform: Platform) -> None:
    host, guest, late = await platform.anonymous(), await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host)
    private = await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(
            room_id=room.id, visibility=rooms_pb2.VISIBILITY_PRIVATE, access_code="new-secret"
        ),
        metadata=host.md,
        timeout=5,
    )
    assert private.room.visibility == rooms_pb2.VISIBILITY_PRIVATE
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _join(platform, guest, room.code, client_ip_hash=_ip())
    assert _error(refused)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "access_code_required")
    joined = await _join(platform, guest, room.code, access_code="new-secret", client_ip_hash=_ip())
    assert joined.participant.subject == guest.subject

    public = await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(room_id=room.id, visibility=rooms_pb2.VISIBILITY_PUBLIC),
        metadata=host.md,
        timeout=5,
    )
    assert public.room.visibility == rooms_pb2.VISIBILITY_PUBLIC
    assert (await _join(platform, late, room.code)).participant.subject == late.subject


async def test_closed_room_refuses_joins_and_edits(platform: Platform) -> None:
    host, member, newcomer = (
        await platform.anonymous(),
        await platform.anonymous(),
        await platform.anonymous(),
    )
    room = await _create(platform, host)
    await _join(platform, member, room.code)

    closed = await platform.rooms.CloseRoom(
        rooms_pb2.CloseRoomRequest(room_id=room.id), metadata=host.md, timeout=5
    )
    assert closed.room.closed
    again = await platform.rooms.CloseRoom(
        rooms_pb2.CloseRoomRequest(room_id=room.id), metadata=host.md, timeout=5
    )
    assert again.room == closed.room

    for caller in (newcomer, member, host):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _join(platform, caller, room.code)
        assert _error(raised)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "room_closed")
    with pytest.raises(grpc.aio.AioRpcError) as edit:
        await platform.rooms.UpdateRoom(
            rooms_pb2.UpdateRoomRequest(room_id=room.id, name="Reopen?"), metadata=host.md, timeout=5
        )
    assert _error(edit)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "room_closed")


async def test_host_changes_the_access_code_of_a_private_room(platform: Platform) -> None:
    host, early, late = await platform.anonymous(), await platform.anonymous(), await platform.anonymous()
    room = await _private_room(platform, host)
    await _join(platform, early, room.code, access_code=SECRET, client_ip_hash=_ip())
    changed = await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(room_id=room.id, access_code="brand-new-code"),
        metadata=host.md,
        timeout=5,
    )
    assert changed.room.visibility == rooms_pb2.VISIBILITY_PRIVATE
    ip = _ip()
    with pytest.raises(grpc.aio.AioRpcError) as old_code:
        await _join(platform, late, room.code, access_code=SECRET, client_ip_hash=ip)
    assert _error(old_code)[1] == "invalid_access_code"
    assert (
        await _join(platform, late, room.code, access_code="brand-new-code", client_ip_hash=ip)
    ).participant
    # Renaming a private room keeps its code.
    await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(room_id=room.id, name="Renamed"), metadata=host.md, timeout=5
    )
    newcomer = await platform.anonymous()
    joined = await _join(platform, newcomer, room.code, access_code="brand-new-code", client_ip_hash=_ip())
    assert joined.room.name == "Renamed"


# --- joining ------------------------------------------------------------------------------------


async def test_join_public_room(platform: Platform) -> None:
    host, guest = await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host)
    joined = await _join(platform, guest, room.code.lower(), "  Night_Owl7 ")

    assert joined.room == room
    assert joined.participant.username == "Night_Owl7"
    assert joined.participant.subject == guest.subject
    assert joined.participant.room_id == room.id
    assert not joined.participant.is_host
    assert joined.participant.version == 1
    assert joined.room_token and joined.room_token_expires_in > 0

    host_joined = await _join(platform, host, room.code)
    assert host_joined.participant.is_host


@pytest.mark.parametrize(
    ("username", "code"),
    [
        ("abcd", "username_invalid"),
        ("a" * 16, "username_invalid"),
        ("bad name", "username_invalid"),
        ("dash-name", "username_invalid"),
        ("émile_x", "username_invalid"),
        ("admin", "username_reserved"),
        ("SYSTEM", "username_reserved"),
        ("moderator", "username_reserved"),
    ],
)
async def test_join_enforces_username_rules(platform: Platform, username: str, code: str) -> None:
    host, guest = await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _join(platform, guest, room.code, username)
    assert _error(raised)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code)
    participants = await platform.rooms.ListParticipants(rooms_pb2.ListParticipantsRequest(room_id=room.id))
    assert list(participants.participants) == []


async def test_usernames_are_unique_per_room_ignoring_case(platform: Platform) -> None:
    host, alice, impostor = await platform.anonymous(), await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host)
    other_room = await _create(platform, host)
    first = await _join(platform, alice, room.code, "Alice_Cat")
    assert first.participant.username == "Alice_Cat"

    for attempt in ("alice_cat", "ALICE_CAT", " Alice_Cat "):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _join(platform, impostor, room.code, attempt)
        assert _error(raised)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "username_taken")
    # The same name is free in another room.
    elsewhere = await _join(platform, impostor, other_room.code, "alice_cat")
    assert elsewhere.participant.username == "alice_cat"


async def test_rejoin_returns_the_same_participant(platform: Platform) -> None:
    host, guest = await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host)
    first = await _join(platform, guest, room.code, "Returning1")
    again = await _join(platform, guest, room.code, "SomeoneElse")

    assert again.participant == first.participant
    assert again.participant.username == "Returning1"
    assert again.room_token and again.room_token != first.room_token
    listed = await platform.rooms.ListParticipants(rooms_pb2.ListParticipantsRequest(room_id=room.id))
    assert [p.id for p in listed.participants] == [first.participant.id]


async def test_concurrent_joins_of_one_caller_make_one_participant(platform: Platform) -> None:
    host, guest = await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host)
    results = await asyncio.gather(*(_join(platform, guest, room.code, _name()) for _ in range(6)))
    assert len({r.participant.id for r in results}) == 1
    listed = await platform.rooms.ListParticipants(rooms_pb2.ListParticipantsRequest(room_id=room.id))
    assert len(listed.participants) == 1


async def test_join_needs_an_access_token(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _create(platform, host)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await platform.rooms.JoinRoom(rooms_pb2.JoinRoomRequest(code=room.code, username=_name()), timeout=5)
    assert _error(raised)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _join(platform, host, new_room_code())
    assert _error(unknown)[:2] == (grpc.StatusCode.NOT_FOUND, "room_not_found")


async def test_account_joins_under_its_reserved_username_with_a_badge(platform: Platform) -> None:
    reserved = f"Vip_{_letters(8)}"
    registered = await platform.identity.Register(
        identity_pb2.RegisterRequest(
            email=f"{uuid.uuid4().hex}@example.com",
            password="correct horse battery",
            reserved_username=reserved,
        ),
        timeout=10,
    )
    user = Caller(registered.identity.id, registered.tokens.access_token)
    host = await platform.anonymous()
    room, other_room = await _create(platform, host), await _create(platform, host)

    by_default = await _join(platform, user, room.code, username=" ")
    assert by_default.participant.username == reserved
    assert by_default.participant.verified

    other_name = await platform.rooms.JoinRoom(
        rooms_pb2.JoinRoomRequest(code=other_room.code, username="JustVisiting"), metadata=user.md, timeout=10
    )
    assert other_name.participant.username == "JustVisiting"
    assert not other_name.participant.verified


# --- private rooms and attempt limits ----------------------------------------------------------


async def test_private_room_checks_the_access_code(platform: Platform) -> None:
    host, guest = await platform.anonymous(), await platform.anonymous()
    room = await _private_room(platform, host)
    ip = _ip()

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _join(platform, guest, room.code, client_ip_hash=ip)
    assert _error(missing)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "access_code_required")
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await _join(platform, guest, room.code, access_code="open-sesame!", client_ip_hash=ip)
    assert _error(wrong)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "invalid_access_code")
    with pytest.raises(grpc.aio.AioRpcError) as huge:
        await _join(platform, guest, room.code, access_code="x" * 10_000, client_ip_hash=ip)
    assert _error(huge)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "invalid_access_code")
    listed = await platform.rooms.ListParticipants(rooms_pb2.ListParticipantsRequest(room_id=room.id))
    assert list(listed.participants) == []

    joined = await _join(platform, guest, room.code, access_code=f"  {SECRET} ", client_ip_hash=ip)
    assert joined.participant.subject == guest.subject
    # Once in, the caller comes back without the code.
    again = await _join(platform, guest, room.code, client_ip_hash=ip)
    assert again.participant.id == joined.participant.id

    host_joined = await _join(platform, host, room.code)
    assert host_joined.participant.is_host


async def test_wrong_codes_lock_the_client_out_even_with_the_right_code(redis_platform: Platform) -> None:
    platform = redis_platform
    host, guest, neighbour = (
        await platform.anonymous(),
        await platform.anonymous(),
        await platform.anonymous(),
    )
    room = await _private_room(platform, host)
    ip = _ip()

    for attempt in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await _join(platform, guest, room.code, access_code=f"guess-{attempt}", client_ip_hash=ip)
        assert _error(wrong)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "invalid_access_code")

    for code in ("guess-5", SECRET, ""):
        with pytest.raises(grpc.aio.AioRpcError) as locked:
            await _join(platform, guest, room.code, access_code=code, client_ip_hash=ip)
        status, error_code, retry_after = _error(locked)
        assert (status, error_code) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_attempts")
        assert retry_after is not None and 0 < retry_after <= 900

    # Another session from the same address is the same client.
    with pytest.raises(grpc.aio.AioRpcError) as same_ip:
        await _join(platform, neighbour, room.code, access_code=SECRET, client_ip_hash=ip)
    assert _error(same_ip)[1] == "too_many_attempts"
    # A client elsewhere is not punished for someone else's guesses.
    elsewhere = await _join(platform, neighbour, room.code, access_code=SECRET, client_ip_hash=_ip())
    assert elsewhere.participant.subject == neighbour.subject
    # Without an address hash the limit falls back to the caller's identity.
    for attempt in range(5):
        with pytest.raises(grpc.aio.AioRpcError):
            await _join(platform, guest, room.code, access_code=f"again-{attempt}")
    with pytest.raises(grpc.aio.AioRpcError) as by_subject:
        await _join(platform, guest, room.code, access_code=SECRET)
    assert _error(by_subject)[1] == "too_many_attempts"


async def test_right_codes_do_not_use_up_attempts(redis_platform: Platform) -> None:
    platform = redis_platform
    host = await platform.anonymous()
    room = await _private_room(platform, host)
    ip = _ip()
    for _ in range(7):
        guest = await platform.anonymous()
        await _join(platform, guest, room.code, access_code=SECRET, client_ip_hash=ip)
    listed = await platform.rooms.ListParticipants(rooms_pb2.ListParticipantsRequest(room_id=room.id))
    assert len(listed.participants) == 7


async def test_concurrent_guesses_never_exceed_the_limit(redis_platform: Platform) -> None:
    platform = redis_platform
    host, guest = await platform.anonymous(), await platform.anonymous()
    room = await _private_room(platform, host)
    ip = _ip()

    async def guess(n: int) -> str:
        try:
            await _join(platform, guest, room.code, access_code=f"guess-{n}", client_ip_hash=ip)
        except grpc.aio.AioRpcError as exc:
            return error_details(exc)[0]
        return "joined"

    outcomes = await asyncio.gather(*(guess(n) for n in range(20)))
    assert outcomes.count("invalid_access_code") == 5
    assert outcomes.count("too_many_attempts") == 15
    # The client's and the room's counters both carry the room id as tag: one slot in a cluster.
    redis = RedisTarget(platform.redis_url, cluster=platform.redis_cluster).client()
    try:
        keys = await keys_matching(redis, f"rooms:join-attempts:{{{room.id}}}:*")
        assert keys == [
            f"rooms:join-attempts:{{{room.id}}}:client:ip:{ip}",
            f"rooms:join-attempts:{{{room.id}}}:room",
        ]
        if platform.redis_cluster:
            assert len(await key_slots(redis, keys)) == 1
    finally:
        await redis.aclose()


async def test_lockout_ends_when_the_window_passes(redis_platform: Platform) -> None:
    platform = redis_platform
    host, guest = await platform.anonymous(), await platform.anonymous()
    ip = _ip()
    async with rooms_server(
        platform.database_url,
        platform.redis_url,
        platform.identity_addr,
        redis_cluster=platform.redis_cluster,
        join_attempt_limit=2,
        join_attempt_window=2,
    ) as rooms:
        room = await _private_room(platform, host, rooms=rooms)
        for attempt in range(2):
            with pytest.raises(grpc.aio.AioRpcError):
                await _join(
                    platform, guest, room.code, access_code=f"nope-{attempt}", client_ip_hash=ip, rooms=rooms
                )
        with pytest.raises(grpc.aio.AioRpcError) as locked:
            await _join(platform, guest, room.code, access_code=SECRET, client_ip_hash=ip, rooms=rooms)
        _, code, retry_after = _error(locked)
        assert code == "too_many_attempts"
        assert retry_after is not None and 1 <= retry_after <= 2

        await asyncio.sleep(retry_after + 0.2)
        joined = await _join(platform, guest, room.code, access_code=SECRET, client_ip_hash=ip, rooms=rooms)
    assert joined.participant.subject == guest.subject


async def test_room_wide_limit_stops_guessing_from_many_addresses(redis_platform: Platform) -> None:
    platform = redis_platform
    host, guest = await platform.anonymous(), await platform.anonymous()
    async with rooms_server(
        platform.database_url,
        platform.redis_url,
        platform.identity_addr,
        redis_cluster=platform.redis_cluster,
        join_room_attempt_limit=4,
    ) as rooms:
        room = await _private_room(platform, host, rooms=rooms)
        for attempt in range(4):
            with pytest.raises(grpc.aio.AioRpcError) as wrong:
                await _join(
                    platform,
                    guest,
                    room.code,
                    access_code=f"spray-{attempt}",
                    client_ip_hash=_ip(),
                    rooms=rooms,
                )
            assert _error(wrong)[1] == "invalid_access_code"
        with pytest.raises(grpc.aio.AioRpcError) as locked:
            await _join(platform, guest, room.code, access_code=SECRET, client_ip_hash=_ip(), rooms=rooms)
        assert _error(locked)[1] == "too_many_attempts"
        # The host is never locked out of their own room.
        host_joined = await _join(platform, host, room.code, rooms=rooms)
    assert host_joined.participant.is_host


async def test_oversized_client_ip_hash_is_refused(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _private_room(platform, host)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _join(platform, host, room.code, client_ip_hash="h" * 129)
    assert _error(raised)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_client_ip_hash")


# --- room tokens and participants --------------------------------------------------------------


async def test_room_token_is_valid_only_for_its_room(platform: Platform) -> None:
    host, guest = await platform.anonymous(), await platform.anonymous()
    room, other = await _create(platform, host), await _create(platform, host)
    joined = await _join(platform, guest, room.code, "Token_Test")

    principal = await platform.verifier.verify_room(joined.room_token, room.id)
    assert principal.subject == guest.subject
    assert principal.room_id == room.id
    assert principal.participant_id == joined.participant.id
    assert principal.version == joined.participant.version
    assert not principal.is_host

    with pytest.raises(PermissionDenied) as wrong_room:
        await platform.verifier.verify_room(joined.room_token, other.id)
    assert wrong_room.value.code == "wrong_room"
    header = jwt.get_unverified_header(joined.room_token)
    key = await _public_key(platform, header["kid"])
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(joined.room_token, key, algorithms=["EdDSA"], audience=room_audience(other.id))
    claims = jwt.decode(joined.room_token, key, algorithms=["EdDSA"], audience=room_audience(room.id))
    assert claims["rid"] == room.id

    host_joined = await _join(platform, host, room.code)
    assert (await platform.verifier.verify_room(host_joined.room_token, room.id)).is_host


async def test_get_and_list_participants_without_a_token(platform: Platform) -> None:
    host, a, b = await platform.anonymous(), await platform.anonymous(), await platform.anonymous()
    room, other = await _create(platform, host), await _create(platform, host)
    first = await _join(platform, a, room.code, "First_One")
    second = await _join(platform, b, room.code, "Second_One")
    elsewhere = await _join(platform, a, other.code, "Elsewhere1")

    got = await platform.rooms.GetParticipant(
        rooms_pb2.GetParticipantRequest(room_id=room.id, participant_id=second.participant.id), timeout=5
    )
    assert got.participant == second.participant
    listed = await platform.rooms.ListParticipants(
        rooms_pb2.ListParticipantsRequest(room_id=room.id), timeout=5
    )
    assert [p.username for p in listed.participants] == ["First_One", "Second_One"]
    assert list(listed.participants) == [first.participant, second.participant]

    missing = [
        rooms_pb2.GetParticipantRequest(room_id=room.id, participant_id=str(uuid.uuid4())),
        rooms_pb2.GetParticipantRequest(room_id=room.id, participant_id=elsewhere.participant.id),
        rooms_pb2.GetParticipantRequest(room_id=room.id, participant_id="nope"),
        rooms_pb2.GetParticipantRequest(room_id="nope", participant_id=first.participant.id),
    ]
    for request in missing:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await platform.rooms.GetParticipant(request, timeout=5)
        assert _error(raised)[:2] == (grpc.StatusCode.NOT_FOUND, "participant_not_found")
    with pytest.raises(grpc.aio.AioRpcError) as no_room:
        await platform.rooms.ListParticipants(rooms_pb2.ListParticipantsRequest(room_id=str(uuid.uuid4())))
    assert _error(no_room)[:2] == (grpc.StatusCode.NOT_FOUND, "room_not_found")

    # Many at once, of several rooms: each answered as GetParticipant answers it, in request order.
    found = [
        rooms_pb2.GetParticipantRequest(room_id=room.id, participant_id=second.participant.id),
        rooms_pb2.GetParticipantRequest(room_id=other.id, participant_id=elsewhere.participant.id),
        rooms_pb2.GetParticipantRequest(room_id=room.id.upper(), participant_id=first.participant.id),
    ]
    many = await platform.rooms.GetParticipants(
        rooms_pb2.GetParticipantsRequest(lookups=[*found, *missing, found[0]]), timeout=5
    )
    assert [r.participant for r in many.results] == [
        second.participant,
        elsewhere.participant,
        first.participant,
        *[rooms_pb2.Participant()] * len(missing),
        second.participant,
    ]
    assert [r.error_code for r in many.results] == [""] * 3 + ["participant_not_found"] * len(missing) + [""]
    assert not (await platform.rooms.GetParticipants(rooms_pb2.GetParticipantsRequest(), timeout=5)).results

    # A room taken down: no participant of it is found any more, by either call.
    connection = await asyncpg.connect(platform.database_url)
    try:
        await connection.execute(
            "UPDATE rooms.rooms SET taken_down_at = now() WHERE id = $1", uuid.UUID(other.id)
        )
    finally:
        await connection.close()
    many = await platform.rooms.GetParticipants(rooms_pb2.GetParticipantsRequest(lookups=found), timeout=5)
    assert [(r.HasField("participant"), r.error_code) for r in many.results] == [
        (True, ""),
        (False, "room_taken_down"),
        (True, ""),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as taken_down:
        await platform.rooms.GetParticipant(found[1], timeout=5)
    assert _error(taken_down)[:2] == (grpc.StatusCode.NOT_FOUND, "room_taken_down")

    too_many = rooms_pb2.GetParticipantsRequest(lookups=[found[0]] * 1001)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await platform.rooms.GetParticipants(too_many, timeout=5)
    assert _error(refused)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "too_many_lookups")

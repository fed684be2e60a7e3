"""What hosts and people find again over gRPC: room settings (slow mode, the per-network name limit,
seeing the access code), "my rooms", and the anonymous name limit sized for groups on one network.

The real rooms and identity servers run in-process on free ports against the session's Postgres and
Redis (fixtures from test_rooms_service.py). Every test makes its own callers, rooms and addresses.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import pytest
from test_rooms_service import (
    ACCESS_CODE_KEY,
    SECRET,
    Caller,
    Platform,
    _create,
    _error,
    _join,
    _private_room,
    platform,
    rooms_server,
    signing_key,
)

from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_rooms.settings import Settings as RoomsSettings

__all__ = ["platform", "signing_key"]  # module-scoped fixtures shared with test_rooms_service.py

DEFAULT_NAMES_PER_NETWORK = RoomsSettings.model_fields["anonymous_usernames_per_ip"].default


def _ip() -> str:
    return uuid.uuid4().hex


async def _update(platform: Platform, host: Caller, **fields: object) -> rooms_pb2.Room:
    response = await platform.rooms.UpdateRoom(
        rooms_pb2.UpdateRoomRequest(**fields), metadata=host.md, timeout=5
    )
    return response.room


async def _my_rooms(
    caller: Caller, stub: rooms_pb2_grpc.RoomsServiceAsyncStub, limit: int = 0
) -> list[rooms_pb2.MyRoom]:
    response = await stub.ListMyRooms(
        rooms_pb2.ListMyRoomsRequest(limit=limit), metadata=caller.md, timeout=5
    )
    return list(response.rooms)


# --- settings ----------------------------------------------------------------------------------


async def test_slow_mode_and_the_name_limit_are_room_settings(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _create(platform, host, slow_mode_seconds=30, anonymous_names_per_network=12)
    assert (room.slow_mode_seconds, room.anonymous_names_per_network) == (30, 12)

    plain = await _create(platform, host)
    # Off by default, and the platform's default limit (this server runs with a generous one).
    assert plain.slow_mode_seconds == 0
    assert plain.anonymous_names_per_network == 1000

    changed = await _update(
        platform, host, room_id=room.id, slow_mode_seconds=0, anonymous_names_per_network=0
    )
    assert (changed.slow_mode_seconds, changed.anonymous_names_per_network) == (0, 1000)
    changed = await _update(platform, host, room_id=room.id, slow_mode_seconds=3600)
    assert changed.slow_mode_seconds == 3600
    assert changed.anonymous_names_per_network == 1000
    fetched = await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(room_id=room.id), timeout=5)
    assert fetched.room == changed


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"slow_mode_seconds": -1}, "invalid_slow_mode"),
        ({"slow_mode_seconds": 3601}, "invalid_slow_mode"),
        ({"anonymous_names_per_network": 1001}, "invalid_names_per_network"),
        ({"anonymous_names_per_network": -3}, "invalid_names_per_network"),
    ],
)
async def test_bad_settings_are_refused_and_change_nothing(
    platform: Platform, fields: dict[str, int], code: str
) -> None:
    host = await platform.anonymous()
    with pytest.raises(grpc.aio.AioRpcError) as created:
        await _create(platform, host, **fields)
    assert _error(created)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code)
    room = await _create(platform, host, slow_mode_seconds=5)
    with pytest.raises(grpc.aio.AioRpcError) as updated:
        await _update(platform, host, room_id=room.id, **fields)
    assert _error(updated)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code)
    fetched = await platform.rooms.GetRoom(rooms_pb2.GetRoomRequest(room_id=room.id), timeout=5)
    assert fetched.room == room


# --- the access code, for its host ---------------------------------------------------------------


async def test_the_host_sees_the_access_code_again_and_nobody_else_does(platform: Platform) -> None:
    host, guest = await platform.anonymous(), await platform.anonymous()
    room = await _private_room(platform, host)
    await _join(platform, guest, room.code, access_code=SECRET, client_ip_hash=_ip())

    shown = await platform.rooms.GetAccessCode(
        rooms_pb2.GetAccessCodeRequest(room_id=room.id), metadata=host.md, timeout=5
    )
    assert (shown.available, shown.access_code) == (True, SECRET)
    with pytest.raises(grpc.aio.AioRpcError) as guest_asks:
        await platform.rooms.GetAccessCode(
            rooms_pb2.GetAccessCodeRequest(room_id=room.id), metadata=guest.md, timeout=5
        )
    assert _error(guest_asks)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "not_host")
    with pytest.raises(grpc.aio.AioRpcError) as nobody:
        await platform.rooms.GetAccessCode(rooms_pb2.GetAccessCodeRequest(room_id=room.id), timeout=5)
    assert _error(nobody)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")

    # A new code is the one shown; the old one no longer opens the room.
    await _update(platform, host, room_id=room.id, access_code="  fresh-code-42 ")
    shown = await platform.rooms.GetAccessCode(
        rooms_pb2.GetAccessCodeRequest(room_id=room.id), metadata=host.md, timeout=5
    )
    assert shown.access_code == "fresh-code-42"

    # Going public drops the code altogether.
    await _update(platform, host, room_id=room.id, visibility=rooms_pb2.VISIBILITY_PUBLIC)
    with pytest.raises(grpc.aio.AioRpcError) as public:
        await platform.rooms.GetAccessCode(
            rooms_pb2.GetAccessCodeRequest(room_id=room.id), metadata=host.md, timeout=5
        )
    assert _error(public)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "room_public")


async def test_the_database_alone_reveals_no_access_code(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _private_room(platform, host)
    other = await _create(platform, host, visibility=rooms_pb2.VISIBILITY_PRIVATE, access_code="other-secret")
    db = await asyncpg.connect(platform.database_url)
    try:
        row = await db.fetchrow(
            "SELECT access_code_hash, access_code_sealed FROM rooms.rooms WHERE id = $1", uuid.UUID(room.id)
        )
        assert row is not None
        assert SECRET not in row["access_code_hash"] and SECRET not in row["access_code_sealed"]
        assert row["access_code_hash"].startswith("$argon2id$")
        # A sealed code is bound to its room: copied onto another room it does not open.
        await db.execute(
            "UPDATE rooms.rooms SET access_code_sealed = $1 WHERE id = $2",
            row["access_code_sealed"],
            uuid.UUID(other.id),
        )
    finally:
        await db.close()
    moved = await platform.rooms.GetAccessCode(
        rooms_pb2.GetAccessCodeRequest(room_id=other.id), metadata=host.md, timeout=5
    )
    assert (moved.available, moved.access_code) == (False, "")

    # Another service key cannot open the codes either (the key comes from a secret, not the database).
    async with rooms_server(
        platform.database_url, platform.redis_url, platform.identity_addr, access_code_key="x" * 40
    ) as rekeyed:
        shown = await rekeyed.GetAccessCode(
            rooms_pb2.GetAccessCodeRequest(room_id=room.id), metadata=host.md, timeout=5
        )
    assert (shown.available, shown.access_code) == (False, "")
    assert ACCESS_CODE_KEY != "x" * 40


# --- my rooms ----------------------------------------------------------------------------------


async def test_my_rooms_lists_rooms_hosted_and_joined_newest_first(platform: Platform) -> None:
    me, someone = await platform.anonymous(), await platform.anonymous()
    hosted_not_joined = await _create(platform, me, name="Mine, never opened")
    hosted_and_joined = await _create(platform, me, name="Mine, joined")
    mine = await _join(platform, me, hosted_and_joined.code)
    theirs = await _create(platform, someone, name="Theirs")
    joined = await _join(platform, me, theirs.code)
    await _create(platform, someone, name="Not mine")

    listed = await _my_rooms(me, platform.rooms)
    assert [entry.room.name for entry in listed] == ["Theirs", "Mine, joined", "Mine, never opened"]
    by_name = {entry.room.name: entry for entry in listed}
    assert by_name["Theirs"].participant == joined.participant and not by_name["Theirs"].is_host
    assert by_name["Mine, joined"].participant == mine.participant and by_name["Mine, joined"].is_host
    assert not by_name["Mine, never opened"].HasField("participant")
    assert by_name["Mine, never opened"].is_host
    assert by_name["Mine, never opened"].room == hosted_not_joined

    # Someone else sees their own rooms only; the list is capped as asked.
    assert {entry.room.name for entry in await _my_rooms(someone, platform.rooms)} == {"Theirs", "Not mine"}
    assert len(await _my_rooms(me, platform.rooms, limit=1)) == 1
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await _my_rooms(me, platform.rooms, limit=201)
    assert _error(too_many)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_limit")


async def test_my_rooms_needs_an_access_token(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _create(platform, host)
    joined = await _join(platform, host, room.code)
    with pytest.raises(grpc.aio.AioRpcError) as room_token:
        await _my_rooms(Caller(host.subject, joined.room_token), platform.rooms)
    assert _error(room_token)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "access_token_required")
    with pytest.raises(grpc.aio.AioRpcError) as none:
        await platform.rooms.ListMyRooms(rooms_pb2.ListMyRoomsRequest(), timeout=5)
    assert _error(none)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")


# --- new anonymous names per network -------------------------------------------------------------


async def test_a_group_of_thirty_on_one_network_joins_with_the_default_limit(platform: Platform) -> None:
    host = await platform.anonymous()
    async with rooms_server(
        platform.database_url,
        platform.redis_url,
        platform.identity_addr,
        anonymous_usernames_per_ip=DEFAULT_NAMES_PER_NETWORK,
    ) as rooms:
        room = await _create(platform, host, rooms=rooms)
        assert room.anonymous_names_per_network == DEFAULT_NAMES_PER_NETWORK == 40
        network = _ip()
        group = [await platform.anonymous() for _ in range(30)]
        joined = await asyncio.gather(
            *(_join(platform, person, room.code, client_ip_hash=network, rooms=rooms) for person in group)
        )
        assert len({j.participant.id for j in joined}) == 30

        # One device flooding new names from the same network is stopped at the limit.
        flood = [await platform.anonymous() for _ in range(DEFAULT_NAMES_PER_NETWORK - 30 + 5)]
        outcomes = []
        for person in flood:
            try:
                await _join(platform, person, room.code, client_ip_hash=network, rooms=rooms)
                outcomes.append("joined")
            except grpc.aio.AioRpcError as exc:
                outcomes.append(exc.details() or "")
        assert outcomes[:10] == ["joined"] * 10
        refusal = outcomes[-1]
        assert refusal.startswith("40 people on your network already joined this room without an account")
        assert "Sign in to join now" in refusal
        assert outcomes[10:] == [refusal] * 5


async def test_the_host_sets_the_limit_and_it_counts_a_window_not_forever(platform: Platform) -> None:
    host = await platform.anonymous()
    async with rooms_server(
        platform.database_url,
        platform.redis_url,
        platform.identity_addr,
        anonymous_usernames_per_ip=40,
        anonymous_usernames_window=2,
    ) as rooms:
        room = await _create(platform, host, rooms=rooms, anonymous_names_per_network=2)
        network = _ip()
        # The host on the same network is not one of the two.
        await _join(platform, host, room.code, client_ip_hash=network, rooms=rooms)
        first = [await platform.anonymous() for _ in range(3)]
        for person in first[:2]:
            await _join(platform, person, room.code, client_ip_hash=network, rooms=rooms)
        with pytest.raises(grpc.aio.AioRpcError) as third:
            await _join(platform, first[2], room.code, client_ip_hash=network, rooms=rooms)
        assert _error(third)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "too_many_anonymous_usernames")
        assert (third.value.details() or "").startswith(
            "2 people on your network already joined this room without an account in the last 2 seconds."
        )

        # The window passes: the network may add names again.
        await asyncio.sleep(2.2)
        assert (await _join(platform, first[2], room.code, client_ip_hash=network, rooms=rooms)).participant

        # The host raises the limit: more of the same network get in at once.
        await rooms.UpdateRoom(
            rooms_pb2.UpdateRoomRequest(room_id=room.id, anonymous_names_per_network=5),
            metadata=host.md,
            timeout=5,
        )
        more = [await platform.anonymous() for _ in range(4)]
        for person in more:
            await _join(platform, person, room.code, client_ip_hash=network, rooms=rooms)

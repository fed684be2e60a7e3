"""Joining with usernames over gRPC: dice rolls and holds, reserved names and the verified badge,
dual sessions, and the anonymous abuse limits.

The real rooms and identity servers run in-process on free ports against the session's Postgres
and Redis (fixtures from test_rooms_service.py). Limits are exercised on dedicated rooms servers
with small values; every test makes its own callers, rooms and client address hashes.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_rooms_service import (
    Caller,
    Platform,
    _create,
    _error,
    _join,
    identity_server,
    platform,
    redis_platform,
    rooms_server,
    signing_key,
)

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.clients import bearer
from chatpop_common.errors import error_details
from tests.integration.redis_targets import RedisTarget, key_slots, keys_matching

# Fixtures shared with test_rooms_service.py.
__all__ = ["platform", "redis_platform", "signing_key"]

GENERATED = re.compile(r"[A-Z][a-z]+[A-Z][a-z]+[1-9][0-9]*")
_NAME_LETTERS = "bdghjmnpqrvwxz"


def _letters(count: int) -> str:
    return "".join(_NAME_LETTERS[byte % len(_NAME_LETTERS)] for byte in os.urandom(count))


def _name(prefix: str = "Nm") -> str:
    return f"{prefix}_{_letters(9)}"


def _ip() -> str:
    return uuid.uuid4().hex


def _digits(name: str) -> int:
    return len(re.sub(r"\D", "", name))


async def _roll(
    stub: rooms_pb2_grpc.RoomsServiceAsyncStub, caller: Caller, code: str
) -> rooms_pb2.SuggestUsernameResponse:
    response: rooms_pb2.SuggestUsernameResponse = await stub.SuggestUsername(
        rooms_pb2.SuggestUsernameRequest(code=code, client_ip_hash=_ip()), metadata=caller.md, timeout=10
    )
    return response


async def _account(platform: Platform, reserved: str = "") -> Caller:
    registered = await platform.identity.Register(
        identity_pb2.RegisterRequest(
            email=f"{uuid.uuid4().hex}@example.com",
            password="correct horse battery",
            reserved_username=reserved,
        ),
        timeout=10,
    )
    return Caller(registered.identity.id, registered.tokens.access_token)


async def _participants(platform: Platform, room_id: str) -> list[rooms_pb2.Participant]:
    listed = await platform.rooms.ListParticipants(
        rooms_pb2.ListParticipantsRequest(room_id=room_id), timeout=5
    )
    return list(listed.participants)


@asynccontextmanager
async def _words_platform(
    platform: Platform, signing_key: Path, tmp_path: Path, adjective: str, noun: str, **rooms_overrides: Any
) -> AsyncIterator[tuple[identity_pb2_grpc.IdentityServiceAsyncStub, rooms_pb2_grpc.RoomsServiceAsyncStub]]:
    """identity drawing names from one adjective and one noun, and a rooms server using it."""
    words = tmp_path / "words"
    words.mkdir()
    (words / "adjectives.txt").write_text(f"{adjective}\n")
    (words / "nouns.txt").write_text(f"{noun}\n")
    async with (
        identity_server(
            platform.database_url, platform.redis_url, signing_key, username_words_dir=words
        ) as addr,
        grpc.aio.insecure_channel(addr) as channel,
        rooms_server(platform.database_url, platform.redis_url, addr, **rooms_overrides) as rooms,
    ):
        yield identity_pb2_grpc.IdentityServiceStub(channel), rooms  # type: ignore[misc]


# --- dice rolls and holds ---------------------------------------------------------------------


async def test_a_roll_is_a_generated_name_held_for_the_roller(redis_platform: Platform) -> None:
    platform = redis_platform
    host, roller, other = await platform.anonymous(), await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host)
    rolled = await _roll(platform.rooms, roller, room.code.lower())
    assert GENERATED.fullmatch(rolled.username) and len(rolled.username) <= 15, rolled.username
    assert (rolled.remaining, rolled.held_for_seconds) == (19, 300)

    with pytest.raises(grpc.aio.AioRpcError) as held:
        await _join(platform, other, room.code, rolled.username.lower())
    assert _error(held)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "username_held")

    joined = await _join(platform, roller, room.code, rolled.username)
    assert joined.participant.username == rolled.username
    assert not joined.participant.verified
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await _join(platform, other, room.code, rolled.username)
    assert _error(taken)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "username_taken")


async def test_joining_gives_the_other_rolled_names_back(redis_platform: Platform) -> None:
    platform = redis_platform
    host, roller, other = await platform.anonymous(), await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host)
    first = await _roll(platform.rooms, roller, room.code)
    second = await _roll(platform.rooms, roller, room.code)
    assert first.username != second.username
    assert second.remaining == first.remaining - 1
    # Both are held until the roller joins; a hold is per room.
    with pytest.raises(grpc.aio.AioRpcError) as held:
        await _join(platform, other, room.code, first.username)
    assert _error(held)[1] == "username_held"
    elsewhere = await _create(platform, host)
    assert (
        await _join(platform, other, elsewhere.code, first.username)
    ).participant.username == first.username

    await _join(platform, roller, room.code, second.username)
    joined = await _join(platform, other, room.code, first.username)
    assert joined.participant.username == first.username


async def test_a_hold_expires_by_itself(redis_platform: Platform) -> None:
    platform = redis_platform
    host, roller, other = await platform.anonymous(), await platform.anonymous(), await platform.anonymous()
    async with rooms_server(
        platform.database_url,
        platform.redis_url,
        platform.identity_addr,
        redis_cluster=platform.redis_cluster,
        username_hold_seconds=1,
    ) as rooms:
        room = await _create(platform, host, rooms=rooms)
        rolled = await _roll(rooms, roller, room.code)
        assert rolled.held_for_seconds == 1
        await asyncio.sleep(1.3)
        joined = await _join(platform, other, room.code, rolled.username, rooms=rooms)
    assert joined.participant.username == rolled.username


async def test_rolls_are_limited_per_device_and_room(redis_platform: Platform) -> None:
    platform = redis_platform
    host, roller, neighbour = (
        await platform.anonymous(),
        await platform.anonymous(),
        await platform.anonymous(),
    )
    async with rooms_server(
        platform.database_url,
        platform.redis_url,
        platform.identity_addr,
        redis_cluster=platform.redis_cluster,
        username_roll_limit=3,
    ) as rooms:
        room, other_room = (
            await _create(platform, host, rooms=rooms),
            await _create(platform, host, rooms=rooms),
        )
        remaining = [(await _roll(rooms, roller, room.code)).remaining for _ in range(3)]
        assert remaining == [2, 1, 0]
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await _roll(rooms, roller, room.code)
        status, code, retry_after = _error(limited)
        assert (status, code) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_rolls")
        assert retry_after is not None and 0 < retry_after <= 3600
        # Another room and another device each have their own rolls.
        assert (await _roll(rooms, roller, other_room.code)).remaining == 2
        assert (await _roll(rooms, neighbour, room.code)).remaining == 2

        # Concurrent rolls can neither exceed the limit nor be handed the same name.
        racer = await platform.anonymous()

        async def roll() -> str:
            try:
                return (await _roll(rooms, racer, room.code)).username
            except grpc.aio.AioRpcError as exc:
                return error_details(exc)[0]

        outcomes = await asyncio.gather(*(roll() for _ in range(10)))
    names = [o for o in outcomes if o != "too_many_rolls"]
    assert len(names) == 3 == len(set(names))
    assert outcomes.count("too_many_rolls") == 7
    # Every count, held set and hold of the room carries the room id as tag: one slot in a cluster.
    redis = RedisTarget(platform.redis_url, cluster=platform.redis_cluster).client()
    try:
        keys = await keys_matching(redis, f"rooms:rolls:{{{room.id}}}:*")
        assert f"rooms:rolls:{{{room.id}}}:count:{racer.subject}" in keys
        assert f"rooms:rolls:{{{room.id}}}:held:{racer.subject}" in keys
        # The roller's three, the neighbour's one and the racer's three.
        assert sum(":hold:" in key for key in keys) == 3 + 1 + 3
        if platform.redis_cluster:
            assert len(await key_slots(redis, keys)) == 1
    finally:
        await redis.aclose()


async def test_rolling_needs_an_access_token_and_an_open_room(platform: Platform) -> None:
    host = await platform.anonymous()
    room = await _create(platform, host)
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await platform.rooms.SuggestUsername(rooms_pb2.SuggestUsernameRequest(code=room.code), timeout=5)
    assert _error(anonymous)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")
    joined = await _join(platform, host, room.code)
    with pytest.raises(grpc.aio.AioRpcError) as room_token:
        await platform.rooms.SuggestUsername(
            rooms_pb2.SuggestUsernameRequest(code=room.code), metadata=bearer(joined.room_token), timeout=5
        )
    assert _error(room_token)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "access_token_required")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _roll(platform.rooms, host, "ZZZZZZZZ")
    assert _error(unknown)[:2] == (grpc.StatusCode.NOT_FOUND, "room_not_found")
    await platform.rooms.CloseRoom(rooms_pb2.CloseRoomRequest(room_id=room.id), metadata=host.md, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as closed:
        await _roll(platform.rooms, host, room.code)
    assert _error(closed)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "room_closed")


async def test_rolls_skip_names_in_use_and_grow_the_number_range_as_the_room_fills(
    platform: Platform, signing_key: Path, tmp_path: Path
) -> None:
    adjective, noun = "Tiny", f"{_letters(1).upper()}{_letters(4)}"
    async with _words_platform(
        platform, signing_key, tmp_path, adjective, noun, username_roll_limit=1000
    ) as (_identity, rooms):
        host, roller = await platform.anonymous(), await platform.anonymous()
        room = await _create(platform, host, rooms=rooms)
        # 90 two-digit names exist (10-99); 20 are in use, so 70 are left to roll.
        in_use = {f"{adjective}{noun}{n}" for n in range(10, 30)}
        for name in in_use:
            await _join(platform, await platform.anonymous(), room.code, name, rooms=rooms)
        rolled = [(await _roll(rooms, roller, room.code)).username for _ in range(75)]

    assert len(set(rolled)) == 75
    assert not set(rolled) & in_use
    two_digit = [name for name in rolled if _digits(name) == 2]
    assert set(two_digit) <= {f"{adjective}{noun}{n}" for n in range(30, 100)}
    assert sum(_digits(name) >= 3 for name in rolled) >= 5
    assert all(len(name) <= 15 for name in rolled)


async def test_rolls_never_offer_a_bad_pair_and_a_typed_one_is_rejected(
    platform: Platform, signing_key: Path, tmp_path: Path
) -> None:
    """A word list with a bad pair in it: the dice skip that pair, typing it is refused."""
    async with _words_platform(platform, signing_key, tmp_path, "Cool", "Ass\nOtter") as (_identity, rooms):
        host, roller, typist = (
            await platform.anonymous(),
            await platform.anonymous(),
            await platform.anonymous(),
        )
        room = await _create(platform, host, rooms=rooms)
        rolls = [(await _roll(rooms, roller, room.code)).username for _ in range(8)]
        assert all(name.startswith("CoolOtter") for name in rolls), rolls
        joined = await _join(platform, roller, room.code, rolls[-1], rooms=rooms)
        assert joined.participant.username == rolls[-1]
        with pytest.raises(grpc.aio.AioRpcError) as typed:
            await _join(platform, typist, room.code, "CoolAss7", rooms=rooms)
    assert _error(typed)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "username_profane")


# --- reserved names, badges and dual sessions ------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "code"),
    [
        ("Sh1t_Head", "username_profane"),
        ("s_h_i_t_99", "username_profane"),
        ("Robert'); DROP TABLE", "username_invalid"),
        ("<img src=x>", "username_invalid"),
        ("R\u043ebert_1", "username_invalid"),  # Cyrillic small o
        ("Party\U0001f389", "username_invalid"),
        ("", "username_invalid"),
    ],
)
async def test_join_refuses_bad_names_with_a_clear_code(platform: Platform, username: str, code: str) -> None:
    host, guest = await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await platform.rooms.JoinRoom(
            rooms_pb2.JoinRoomRequest(code=room.code, username=username), metadata=guest.md, timeout=5
        )
    assert _error(raised)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code)
    assert raised.value.details()
    assert await _participants(platform, room.id) == []


async def test_a_reserved_name_belongs_to_its_account_in_every_room(platform: Platform) -> None:
    reserved = _name("Vip")
    owner = await _account(platform, reserved)
    host, impostor = await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host)
    for attempt in (reserved, reserved.lower(), reserved.upper()):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _join(platform, impostor, room.code, attempt)
        assert _error(raised)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "username_taken")
    other_account = await _account(platform)
    with pytest.raises(grpc.aio.AioRpcError) as by_account:
        await _join(platform, other_account, room.code, reserved)
    assert _error(by_account)[1] == "username_taken"

    joined = await _join(platform, owner, room.code, reserved.lower())
    assert joined.participant.verified
    assert joined.participant.username == reserved.lower()
    listed = await _participants(platform, room.id)
    assert [(p.username, p.verified) for p in listed] == [(reserved.lower(), True)]


async def test_a_name_reserved_later_earns_the_badge_on_the_next_join(platform: Platform) -> None:
    name = _name("Late")
    account = await _account(platform)
    host = await platform.anonymous()
    before, after = await _create(platform, host), await _create(platform, host)
    first = await _join(platform, account, before.code, name)
    assert not first.participant.verified
    await platform.identity.ReserveUsername(
        identity_pb2.ReserveUsernameRequest(username=name), metadata=account.md, timeout=5
    )
    # An existing participant keeps what it joined with; the next room shows the badge.
    assert not (await _join(platform, account, before.code)).participant.verified
    assert (await _join(platform, account, after.code, name)).participant.verified


async def test_dual_sessions_are_separate_identities_and_the_account_gets_the_badge(
    platform: Platform,
) -> None:
    host, device, stranger = (
        await platform.anonymous(),
        await platform.anonymous(),
        await platform.anonymous(),
    )
    room = await _create(platform, host)
    name = _name("Dual")
    anon = await _join(platform, device, room.code, name)
    assert not anon.participant.verified

    # The same person registers the name (only room participants use it, so it is free to reserve)
    # and comes back signed in.
    account = await _account(platform, name.lower())
    signed_in = await _join(platform, account, room.code, name.upper())
    assert signed_in.participant.id != anon.participant.id
    assert signed_in.participant.verified and not signed_in.participant.is_host
    assert signed_in.participant.subject == account.subject

    listed = await _participants(platform, room.id)
    assert {(p.id, p.verified) for p in listed} == {
        (anon.participant.id, False),
        (signed_in.participant.id, True),
    }

    # Each identity finds its own participant; the account never falls back to the anonymous one.
    mine_anon = await platform.rooms.GetMyParticipant(
        rooms_pb2.GetMyParticipantRequest(code=room.code), metadata=device.md, timeout=5
    )
    mine_account = await platform.rooms.GetMyParticipant(
        rooms_pb2.GetMyParticipantRequest(code=room.code), metadata=account.md, timeout=5
    )
    assert mine_anon.participant == anon.participant
    assert mine_account.participant == signed_in.participant
    # Returning anonymously gives the anonymous name back, still without the badge.
    again = await _join(platform, device, room.code, "Whatever_1")
    assert again.participant == anon.participant
    # Nobody else can take the name now.
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await _join(platform, stranger, room.code, name)
    assert _error(taken)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "username_taken")


async def test_my_participant_before_joining_is_not_found(platform: Platform) -> None:
    host, guest = await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await platform.rooms.GetMyParticipant(
            rooms_pb2.GetMyParticipantRequest(code=room.code), metadata=guest.md, timeout=5
        )
    assert _error(raised)[:2] == (grpc.StatusCode.NOT_FOUND, "not_joined")
    with pytest.raises(grpc.aio.AioRpcError) as no_token:
        await platform.rooms.GetMyParticipant(rooms_pb2.GetMyParticipantRequest(code=room.code), timeout=5)
    assert _error(no_token)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")


# --- anonymous abuse limits --------------------------------------------------------------------


async def test_an_address_adds_at_most_three_anonymous_names_per_room(platform: Platform) -> None:
    host = await platform.anonymous()
    async with rooms_server(
        platform.database_url, platform.redis_url, platform.identity_addr, anonymous_usernames_per_ip=3
    ) as rooms:
        room, other_room = (
            await _create(platform, host, rooms=rooms),
            await _create(platform, host, rooms=rooms),
        )
        ip = _ip()
        guests = [await platform.anonymous() for _ in range(3)]
        joined = [await _join(platform, g, room.code, client_ip_hash=ip, rooms=rooms) for g in guests]
        fourth = await platform.anonymous()
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await _join(platform, fourth, room.code, client_ip_hash=ip, rooms=rooms)
        assert _error(limited)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "too_many_anonymous_usernames")
        assert "Sign in to join now" in limited.value.details()

        # Returning participants, accounts, other rooms and other addresses are not held back.
        again = await _join(platform, guests[0], room.code, client_ip_hash=ip, rooms=rooms)
        assert again.participant.id == joined[0].participant.id
        account = await _account(platform)
        assert (await _join(platform, account, room.code, client_ip_hash=ip, rooms=rooms)).participant
        assert (await _join(platform, fourth, other_room.code, client_ip_hash=ip, rooms=rooms)).participant
        assert (await _join(platform, fourth, room.code, client_ip_hash=_ip(), rooms=rooms)).participant

        # Concurrent first joins from one address cannot slip past the limit either.
        racing_ip = _ip()
        racers = [await platform.anonymous() for _ in range(8)]

        async def race(caller: Caller) -> str:
            try:
                await _join(platform, caller, other_room.code, client_ip_hash=racing_ip, rooms=rooms)
            except grpc.aio.AioRpcError as exc:
                return error_details(exc)[0]
            return "joined"

        outcomes = await asyncio.gather(*(race(r) for r in racers))
    assert sorted(outcomes) == ["joined"] * 3 + ["too_many_anonymous_usernames"] * 5


async def test_anonymous_sessions_open_at_most_three_rooms_per_hour(redis_platform: Platform) -> None:
    platform = redis_platform
    anonymous, account = await platform.anonymous(), await _account(platform)
    async with rooms_server(
        platform.database_url,
        platform.redis_url,
        platform.identity_addr,
        redis_cluster=platform.redis_cluster,
        anonymous_room_limit=3,
    ) as rooms:
        for _ in range(3):
            await _create(platform, anonymous, rooms=rooms)
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await _create(platform, anonymous, rooms=rooms)
        status, code, retry_after = _error(limited)
        assert (status, code) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_rooms")
        assert retry_after is not None and 0 < retry_after <= 3600
        # Another session, and any account, may still open rooms.
        assert (await _create(platform, await platform.anonymous(), rooms=rooms)).id
        for _ in range(5):
            assert (await _create(platform, account, rooms=rooms)).id
    # One window per session, tagged with its subject (its own slot in a cluster).
    redis = RedisTarget(platform.redis_url, cluster=platform.redis_cluster).client()
    try:
        keys = await keys_matching(redis, f"rooms:room-creations:*{anonymous.subject}*")
    finally:
        await redis.aclose()
    assert keys == [f"rooms:room-creations:{{{anonymous.subject}}}"]

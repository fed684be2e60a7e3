"""ClearVerifiedUsername over gRPC: an account that gave its reserved username up loses the verified
badge on its own participants under that name, and nobody else's.

The real rooms and identity servers run in-process on free ports against the session's Postgres and
Redis (fixtures from test_rooms_service.py); every test makes its own accounts and rooms.
"""

from __future__ import annotations

import grpc
import pytest
from test_rooms_service import Caller, Platform, _create, _error, _join, platform, signing_key
from test_rooms_usernames import _account, _name, _participants

from chatpop.identity.v1 import identity_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.clients import bearer

__all__ = ["platform", "signing_key"]  # module-scoped fixtures shared with test_rooms_service.py


async def _give_up(platform: Platform, account: Caller, new_name: str) -> str:
    """Change the account's reserved username; returns the name it gave up."""
    changed = await platform.identity.ChangeReservedUsername(
        identity_pb2.ChangeReservedUsernameRequest(username=new_name), metadata=account.md, timeout=5
    )
    return str(changed.previous_username)


async def _clear(platform: Platform, caller: Caller, username: str) -> list[rooms_pb2.Participant]:
    response = await platform.rooms.ClearVerifiedUsername(
        rooms_pb2.ClearVerifiedUsernameRequest(username=username), metadata=caller.md, timeout=10
    )
    return list(response.participants)


def _shown(participants: list[rooms_pb2.Participant]) -> dict[str, tuple[str, bool]]:
    return {p.subject: (p.username, p.verified) for p in participants}


async def test_a_given_up_name_loses_its_badge_in_every_room_of_that_account_only(platform: Platform) -> None:
    old = _name("Was")
    account = await _account(platform, old)
    other = await _account(platform, _name("Keep"))
    host = await platform.anonymous()
    first, second, untouched = (
        await _create(platform, host),
        await _create(platform, host),
        await _create(platform, host),
    )
    for room in (first, second):
        assert (await _join(platform, account, room.code, old)).participant.verified
    other_name = (
        await platform.identity.GetIdentity(identity_pb2.GetIdentityRequest(), metadata=other.md)
    ).identity
    assert (await _join(platform, other, first.code, other_name.reserved_username)).participant.verified
    await _join(platform, host, untouched.code)

    # While the account still holds the name, nothing can take its badge away.
    with pytest.raises(grpc.aio.AioRpcError) as still_mine:
        await _clear(platform, account, old)
    assert _error(still_mine)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "username_still_yours")
    # Someone else asking about that name only ever touches their own participants: none.
    assert await _clear(platform, other, old) == []
    assert _shown(await _participants(platform, first.id))[account.subject] == (old, True)

    assert await _give_up(platform, account, _name("Now")) == old
    cleared = await _clear(platform, account, old.lower())
    assert sorted((p.room_id, p.username, p.verified, p.subject) for p in cleared) == sorted(
        [(first.id, old, False, account.subject), (second.id, old, False, account.subject)]
    )
    assert _shown(await _participants(platform, first.id)) == {
        account.subject: (old, False),
        other.subject: (other_name.reserved_username, True),
    }
    assert _shown(await _participants(platform, second.id)) == {account.subject: (old, False)}
    # Clearing again finds nothing left to clear.
    assert await _clear(platform, account, old) == []
    # Rejoining the room keeps the participant as it now is.
    again = await _join(platform, account, first.code)
    assert (again.participant.username, again.participant.verified) == (old, False)
    # Meanwhile nobody else may appear under the given-up name, not even without an account.
    impostor = await platform.anonymous()
    with pytest.raises(grpc.aio.AioRpcError) as held_back:
        await _join(platform, impostor, untouched.code, old.upper())
    assert _error(held_back)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "username_taken")
    assert "given up recently" in (held_back.value.details() or "")


async def test_a_participant_losing_its_badge_beside_an_unverified_twin_takes_a_free_variant(
    platform: Platform,
) -> None:
    name = _name("Twn")
    host, earlier = await platform.anonymous(), await platform.anonymous()
    room = await _create(platform, host)
    # Someone used the name in this room before the account reserved it.
    await _join(platform, earlier, room.code, name)
    account = await _account(platform)
    await platform.identity.ReserveUsername(
        identity_pb2.ReserveUsernameRequest(username=name), metadata=account.md, timeout=5
    )
    taken = f"{name[:13]}_2"
    squatter = await platform.anonymous()
    await _join(platform, squatter, room.code, taken)
    assert (await _join(platform, account, room.code, name)).participant.verified
    assert _shown(await _participants(platform, room.id))[earlier.subject] == (name, False)

    await _give_up(platform, account, _name("New"))
    [cleared] = await _clear(platform, account, name)
    # Never the same name twice without the badge: the first free variant, within 15 characters.
    assert (cleared.username, cleared.verified) == (f"{name[:13]}_3", False)
    assert _shown(await _participants(platform, room.id)) == {
        earlier.subject: (name, False),
        squatter.subject: (taken, False),
        account.subject: (f"{name[:13]}_3", False),
    }


async def test_clearing_needs_an_account_token_and_a_name(platform: Platform) -> None:
    anonymous = await platform.anonymous()
    with pytest.raises(grpc.aio.AioRpcError) as not_an_account:
        await _clear(platform, anonymous, _name())
    assert _error(not_an_account)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "account_required")
    with pytest.raises(grpc.aio.AioRpcError) as nobody:
        await platform.rooms.ClearVerifiedUsername(rooms_pb2.ClearVerifiedUsernameRequest(username=_name()))
    assert _error(nobody)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")
    account = await _account(platform)
    for bad in ("", "   ", "x" * 40):
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await _clear(platform, account, bad)
        assert _error(invalid)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument")
    # A room token is not enough: the call acts for the whole account.
    host = await platform.anonymous()
    room = await _create(platform, host)
    joined = await _join(platform, account, room.code)
    with pytest.raises(grpc.aio.AioRpcError) as room_token:
        await platform.rooms.ClearVerifiedUsername(
            rooms_pb2.ClearVerifiedUsernameRequest(username=_name()), metadata=bearer(joined.room_token)
        )
    assert _error(room_token)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "access_token_required")

"""KickParticipants: after a site-wide ban revoked their room tokens, an admin's one call puts a Kick
signal on the signal channel of each participant's room, seen on the Subscribe streams of every
messaging process as an edge would see them; and no messaging process that heard the kick trusts
what it cached about those participants any more.

The servers, tokens and the fake RoomsService come from test_messaging_service and
test_messaging_signals.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc
import jwt
import pytest

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2
from tests.integration.test_messaging_service import (
    KID,
    SIGNING_KEY,
    FakeRooms,
    Member,
    Messaging,
    failure,
    fake_rooms,
    join,
    new_room,
    rooms,
)
from tests.integration.test_messaging_signals import (
    access_token,
    bearer,
    listening,
    server_a,
    server_b,
    signal,
    streams,
    typing,
)

__all__ = ["fake_rooms", "rooms", "server_a", "server_b", "streams"]  # fixtures shared with other modules


def admin_token() -> str:
    now = int(time.time())
    claims = {
        "typ": "access",
        "iss": "chatpop",
        "aud": "chatpop",
        "sub": "an-admin",
        "knd": "user",
        "adm": True,
        "iat": now,
        "nbf": now,
        "exp": now + 900,
    }
    return jwt.encode(claims, SIGNING_KEY, algorithm="EdDSA", headers={"kid": KID})


def kick_request(*members: Member, code: str = "site_banned") -> messaging_pb2.KickParticipantsRequest:
    return messaging_pb2.KickParticipantsRequest(
        targets=[
            messaging_pb2.KickTarget(room_id=member.room_id, participant_id=member.participant.id)
            for member in members
        ],
        code=code,
    )


def revoke(fake_rooms: FakeRooms, member: Member) -> None:
    """What rooms' RevokeSiteBanned does to a participant: its token version goes up."""
    key = (member.room_id, member.participant.id)
    bumped = rooms_pb2.Participant()
    bumped.CopyFrom(fake_rooms.participants[key])
    bumped.version += 1
    fake_rooms.participants[key] = bumped


async def test_one_call_kicks_participants_of_several_rooms_on_every_process(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms, streams: Any
) -> None:
    first, second = new_room(), new_room()
    troll_first = join(fake_rooms, first, "TrollFirst")
    troll_second = join(fake_rooms, second, "TrollSecond")
    bystander = join(fake_rooms, first, "Bystander")
    in_first = [streams(first, server_a), streams(first, server_b)]
    in_second = [streams(second, server_b)]
    await listening(in_first, lambda: typing(server_a, bystander))
    await listening(in_second, lambda: typing(server_b, troll_second))

    # A repeated target is kicked once.
    answer = await server_a.stub.KickParticipants(
        kick_request(troll_first, troll_second, troll_first), metadata=bearer(admin_token()), timeout=10
    )
    assert answer.published == 2

    for events in in_first:
        sig = await signal(events)
        assert sig.room_id == first
        assert (sig.kick.participant_id, sig.kick.code) == (troll_first.participant.id, "site_banned")
    sig = await signal(in_second[0])
    assert sig.room_id == second and sig.kick.participant_id == troll_second.participant.id
    # Nothing else came: the next signal in the first room is the bystander typing.
    await typing(server_a, bystander)
    for events in in_first:
        assert (await signal(events)).WhichOneof("kind") == "typing"


async def test_after_a_kick_no_process_trusts_the_revoked_token_it_had_cached(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms, streams: Any
) -> None:
    room = new_room()
    troll = join(fake_rooms, room, "TrollCached")
    watcher = join(fake_rooms, room, "Watcher")
    on_a, on_b = streams(room, server_a), streams(room, server_b)
    await listening([on_a, on_b], lambda: typing(server_a, watcher))
    # Both processes cache the participant as it is now.
    for server in (server_a, server_b):
        await server.send(troll, f"cached on {id(server)}")

    revoke(fake_rooms, troll)
    await server_a.stub.KickParticipants(kick_request(troll), metadata=bearer(admin_token()), timeout=10)
    for events in (on_a, on_b):
        # Message frames of the sends above may come first; the kick follows.
        while True:
            event = await events.next()
            if event.WhichOneof("event") == "signal" and event.signal.WhichOneof("kind") == "kick":
                break

    for server in (server_a, server_b):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await server.send(troll, "after the ban")
        assert failure(refused.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "token_revoked")
    await server_b.send(watcher, "everyone else carries on")


async def test_only_admins_may_kick_and_only_what_a_kick_may_say(
    server_a: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    member = join(fake_rooms, room, "Someone")
    for metadata in (member.metadata, bearer(access_token(member.participant.subject)), ()):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await server_a.stub.KickParticipants(kick_request(member), metadata=metadata, timeout=10)
        assert refused.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)

    admin = bearer(admin_token())
    for request, code in (
        (kick_request(member, code="because"), "invalid_code"),
        (kick_request(code="site_banned"), "invalid_targets"),
        (
            messaging_pb2.KickParticipantsRequest(
                targets=[messaging_pb2.KickTarget(room_id=room, participant_id="")], code="site_banned"
            ),
            "invalid_participant_id",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await server_a.stub.KickParticipants(request, metadata=admin, timeout=10)
        assert failure(refused.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, code)


async def test_a_host_disconnects_a_removed_seat_holder_from_their_own_rooms_only(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms, streams: Any
) -> None:
    opened = fake_rooms.open("", "Back Room")
    back_room = opened.id
    host = join(fake_rooms, back_room, "TheHost", is_host=True)
    host_subject = opened.host_id = host.participant.subject
    holder = join(fake_rooms, back_room, "HolderGone")
    events = [streams(back_room, server_b)]
    await listening(events, lambda: typing(server_a, host))

    # The host's own tokens (access, or a room token) may kick for a removed seat, and only that.
    for metadata in (bearer(access_token(host_subject)), host.metadata):
        answer = await server_a.stub.KickParticipants(
            kick_request(holder, code="seat_removed"), metadata=metadata, timeout=10
        )
        assert answer.published == 1
        sig = await signal(events[0])
        assert (sig.kick.participant_id, sig.kick.code) == (holder.participant.id, "seat_removed")
    with pytest.raises(grpc.aio.AioRpcError) as site_ban:
        await server_a.stub.KickParticipants(kick_request(holder), metadata=host.metadata, timeout=10)
    assert failure(site_ban.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "forbidden")

    # Nobody else may, and no host reaches into a room they do not host.
    other_room = fake_rooms.open(str(uuid.uuid4()), "Someone else's").id
    stranger = join(fake_rooms, other_room, "Stranger")
    for metadata, request in (
        (holder.metadata, kick_request(holder, code="seat_removed")),
        (bearer(access_token(holder.participant.subject)), kick_request(holder, code="seat_removed")),
        (bearer(access_token(host_subject)), kick_request(holder, stranger, code="seat_removed")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await server_a.stub.KickParticipants(request, metadata=metadata, timeout=10)
        assert failure(refused.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "not_host")
    # An admin still kicks for either reason.
    answer = await server_b.stub.KickParticipants(
        kick_request(stranger, code="seat_removed"), metadata=bearer(admin_token()), timeout=10
    )
    assert answer.published == 1


async def test_a_back_room_participant_without_a_seat_cannot_write(
    server_a: Messaging, fake_rooms: FakeRooms
) -> None:
    back_room = fake_rooms.open(str(uuid.uuid4()), "Back Room").id
    holder = join(fake_rooms, back_room, "SeatHolder")
    await server_a.send(holder, "while seated")
    key = (back_room, holder.participant.id)
    removed = rooms_pb2.Participant()
    removed.CopyFrom(fake_rooms.participants[key])
    removed.seat_removed = True
    fake_rooms.participants[key] = removed
    await server_a.stub.KickParticipants(
        kick_request(holder, code="seat_removed"), metadata=bearer(admin_token()), timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await server_a.send(holder, "after the seat went")
    assert failure(refused.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "seat_removed")

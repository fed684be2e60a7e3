"""A site-wide ban takes effect at once: the banned identity's (or network's) live sockets close in
every room, on every edge, with 4403 `site_banned`; its room tokens stop working; joining again, and
for a network signing in or registering, answer 403 `site_banned`; everyone else carries on.

The test client is a trusted proxy, so `X-Forwarded-For` stands for the network each person comes
from (a participant's network is the one it joined from).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from tests.admin_cli import new_admin
from tests.e2e.chat import ChatSocket, anonymous, bearer, documented, open_room

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

# A kick reaches a socket through Redis pub/sub and the room's stream: well within this.
PROMPTLY = 5.0
# rooms keeps each site-ban answer for a few seconds (CHECK_TTL), so a lifted ban reaches joins within it.
LIFT_REACHES_JOINS = 15.0


def _from(ip: str, token: str | None = None) -> dict[str, str]:
    return {**(bearer(token) if token else {}), "X-Forwarded-For": ip}


async def _session(client: httpx.AsyncClient, ip: str) -> dict[str, Any]:
    response = await client.post("/api/v1/auth/anonymous", headers=_from(ip))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _join(client: httpx.AsyncClient, code: str, username: str, token: str, ip: str) -> httpx.Response:
    path = f"/api/v1/rooms/{code}/join"
    return await client.post(path, json={"username": username}, headers=_from(ip, token))


async def _joined(client: httpx.AsyncClient, code: str, username: str, token: str, ip: str) -> dict[str, Any]:
    response = await _join(client, code, username, token, ip)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _closed(socket: ChatSocket, timeout: float = PROMPTLY) -> tuple[int | None, str | None]:
    async with socket.changed:
        await asyncio.wait_for(socket.changed.wait_for(lambda: socket.closed), timeout=timeout)
    return socket.ws.close_code, socket.ws.close_reason


async def _refused_socket(ws_url: str, code: str, room_token: str) -> tuple[int | None, str | None]:
    async with connect(f"{ws_url}/ws/v1/rooms/{code}?token={room_token}", open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), timeout=10)
        return ws.close_code, ws.close_reason


async def _still_chatting(socket: ChatSocket, text: str) -> None:
    client_msg_id = await socket.send(text)
    answer = await socket.ack_or_error(client_msg_id)
    assert answer["type"] == "ack", answer
    assert not socket.closed


async def _ban(client: httpx.AsyncClient, admin: str, **body: Any) -> httpx.Response:
    return await client.post("/api/v1/admin/site-bans", json=body, headers=bearer(admin))


async def _join_once_lifted(client: httpx.AsyncClient, code: str, username: str, token: str, ip: str) -> Any:
    deadline = time.monotonic() + LIFT_REACHES_JOINS
    while True:
        response = await _join(client, code, username, token, ip)
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response.json()
        assert response.json()["error"]["code"] == "site_banned", response.text
        await asyncio.sleep(0.5)


async def test_an_identity_ban_closes_its_sockets_in_every_room_at_once_and_only_its_own(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    admin = await new_admin(client, stack, "sitebans")
    other_edge = (await stack.asecond_edge()).replace("http://", "ws://")
    first, second = await open_room(client), await open_room(client)
    troll_ip, bystander_ip = "198.51.100.141", "198.51.100.142"
    troll = await _session(client, troll_ip)
    in_first = await _joined(client, first.code, "TrollFirst", troll["access_token"], troll_ip)
    in_second = await _joined(client, second.code, "TrollSecond", troll["access_token"], troll_ip)
    bystander = await _session(client, bystander_ip)
    watching = await _joined(client, first.code, "Bystander", bystander["access_token"], bystander_ip)

    # One of the troll's sockets on each edge process; the bystander in the same room as the first.
    troll_first = await ChatSocket.open(stack.ws_url, first.code, in_first["room_token"])
    troll_second = await ChatSocket.open(other_edge, second.code, in_second["room_token"])
    watcher = await ChatSocket.open(stack.ws_url, first.code, watching["room_token"])
    try:
        await _still_chatting(troll_first, "still here")

        response = await _ban(
            client, admin, room_code=first.code, participant_id=in_first["participant"]["id"], reason="abuse"
        )
        assert response.status_code == 200, response.text
        ban = documented(openapi, "POST", "/api/v1/admin/site-bans", response)
        assert ban["identity_id"] == troll["identity"]["id"] and ban["changed"] is True

        for socket in (troll_first, troll_second):
            assert await _closed(socket) == (4403, "site_banned")
            said = [frame for frame in socket.frames if frame["type"] == "error"]
            assert said and said[-1]["code"] == "site_banned", socket.frames[-3:]

        # Its room tokens from before the ban no longer work, over REST or a new socket.
        for code, joined in ((first.code, in_first), (second.code, in_second)):
            history = await client.get(f"/api/v1/rooms/{code}/messages", headers=bearer(joined["room_token"]))
            assert history.status_code == 401, history.text
            assert history.json()["error"]["code"] == "token_revoked"
        refused = await _refused_socket(stack.ws_url, first.code, in_first["room_token"])
        assert refused == (4401, "token_revoked")
        # Joining again, in either room and from any network, is refused.
        for code in (first.code, second.code):
            again = await _join(client, code, "TrollAgain", troll["access_token"], "198.51.100.143")
            assert again.status_code == 403, again.text
            assert again.json()["error"]["code"] == "site_banned"

        # Everyone else carries on in the room, and saw nothing but the troll leave.
        await _still_chatting(watcher, "carrying on")
        assert not any(frame["type"] == "error" for frame in watcher.frames)

        # Sending the ban again changes nothing and answers as the first time.
        repeated = await _ban(client, admin, identity_id=troll["identity"]["id"], reason="abuse again")
        assert repeated.status_code == 200, repeated.text
        assert repeated.json()["id"] == ban["id"] and repeated.json()["changed"] is False

        # Lifted: the identity joins again (the same participant, a new token) and chats.
        lifted = await client.delete(f"/api/v1/admin/site-bans/{ban['id']}", headers=bearer(admin))
        assert lifted.status_code == 200, lifted.text
        back = await _join_once_lifted(client, first.code, "TrollFirst", troll["access_token"], troll_ip)
        assert back["participant"]["id"] == in_first["participant"]["id"]
        returned = await ChatSocket.open(stack.ws_url, first.code, back["room_token"])
        await _still_chatting(returned, "back again")
        await returned.close()
    finally:
        await asyncio.gather(troll_first.close(), troll_second.close(), watcher.close())


async def test_a_network_ban_closes_the_sockets_of_whoever_joined_from_it_and_refuses_sign_in(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    admin = await new_admin(client, stack, "netbans")
    banned_ip, other_ip = "203.0.113.151", "203.0.113.152"
    room = await open_room(client)
    email, password = f"netban-{uuid.uuid4().hex[:10]}@example.com", "a passphrase for the network test"
    registered = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": password}, headers=_from(other_ip)
    )
    assert registered.status_code == 201, registered.text

    # Two people on the banned network (one anonymous, one signed in) and one elsewhere.
    anon = await _session(client, banned_ip)
    member = await _joined(client, room.code, "FromThere", anon["access_token"], banned_ip)
    account = await _joined(client, room.code, "AccountThere", registered.json()["access_token"], banned_ip)
    elsewhere = await _session(client, other_ip)
    neighbour = await _joined(client, room.code, "FromHere", elsewhere["access_token"], other_ip)
    sockets = [
        await ChatSocket.open(stack.ws_url, room.code, joined["room_token"])
        for joined in (member, account, neighbour)
    ]
    try:
        response = await _ban(client, admin, ip=banned_ip, reason="bot network")
        assert response.status_code == 200, response.text
        ban = documented(openapi, "POST", "/api/v1/admin/site-bans", response)
        assert ban["ip_hash"] and ban["identity_id"] is None

        for socket in sockets[:2]:
            assert await _closed(socket) == (4403, "site_banned")
        await _still_chatting(sockets[2], "still online")

        # From that network: no joining, no signing in, no new account; elsewhere all of it works.
        again = await _join(client, room.code, "FromThere", anon["access_token"], banned_ip)
        assert again.status_code == 403 and again.json()["error"]["code"] == "site_banned", again.text
        login = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": password}, headers=_from(banned_ip)
        )
        assert login.status_code == 403, login.text
        assert documented(openapi, "POST", "/api/v1/auth/login", login)["error"]["code"] == "site_banned"
        wrong = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": "not it"}, headers=_from(banned_ip)
        )
        assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "site_banned", wrong.text
        register = await client.post(
            "/api/v1/auth/register",
            json={"email": f"x{uuid.uuid4().hex[:10]}@example.com", "password": password},
            headers=_from(banned_ip),
        )
        assert register.status_code == 403, register.text
        refused_body = documented(openapi, "POST", "/api/v1/auth/register", register)
        assert refused_body["error"]["code"] == "site_banned"
        signed_in = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": password}, headers=_from(other_ip)
        )
        assert signed_in.status_code == 200, signed_in.text

        lifted = await client.delete(f"/api/v1/admin/site-bans/{ban['id']}", headers=bearer(admin))
        assert lifted.status_code == 200, lifted.text
        login = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": password}, headers=_from(banned_ip)
        )
        assert login.status_code == 200, login.text
        back = await _join_once_lifted(client, room.code, "FromThere", anon["access_token"], banned_ip)
        returned = await ChatSocket.open(stack.ws_url, room.code, back["room_token"])
        await _still_chatting(returned, "back from there")
        await returned.close()
    finally:
        await asyncio.gather(*(socket.close() for socket in sockets))


async def test_when_sockets_cannot_be_closed_the_ban_answers_503_and_sending_it_again_finishes(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    admin = await new_admin(client, stack, "retrybans")
    room = await open_room(client)
    ip = "192.0.2.161"
    person = await _session(client, ip)
    joined = await _joined(client, room.code, "LateKick", person["access_token"], ip)
    socket = await ChatSocket.open(stack.ws_url, room.code, joined["room_token"])
    try:
        await stack.astop("messaging")
        try:
            response = await _ban(client, admin, identity_id=person["identity"]["id"], reason="spam")
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "service_unavailable"
        finally:
            await stack.astart("messaging")
        # The ban itself is in force already.
        refused = await _join(client, room.code, "LateKick", person["access_token"], ip)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "site_banned"

        # The room's stream comes back on its own; sending the ban again closes the socket.
        deadline = time.monotonic() + 30
        while not socket.closed:
            assert time.monotonic() < deadline, "the repeated ban never closed the socket"
            again = await _ban(client, admin, identity_id=person["identity"]["id"], reason="spam")
            if again.status_code == 200:
                assert again.json()["changed"] is False
            else:
                assert again.status_code == 503, again.text
            try:
                await _closed(socket, timeout=1.0)
            except TimeoutError:
                continue
        assert (socket.ws.close_code, socket.ws.close_reason) == (4403, "site_banned")
    finally:
        await socket.close()


async def test_only_admins_may_revoke_or_kick_through_the_services(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await open_room(client)
    person = await anonymous(client)
    joined = await _joined(client, room.code, "NotAnAdmin", person, "192.0.2.171")
    host = await _joined(client, room.code, "TheHost", room.host_token, "192.0.2.172")
    target = joined["participant"]["id"]
    async with (
        grpc.aio.insecure_channel(stack.address("rooms")) as rooms_channel,
        grpc.aio.insecure_channel(stack.address("messaging")) as messaging_channel,
    ):
        rooms = rooms_pb2_grpc.RoomsServiceStub(rooms_channel)
        messaging = messaging_pb2_grpc.MessagingServiceStub(messaging_channel)
        for token in (person, room.host_token, host["room_token"]):
            metadata = (("authorization", f"Bearer {token}"),)
            with pytest.raises(grpc.aio.AioRpcError) as revoking:
                await rooms.RevokeSiteBanned(
                    rooms_pb2.RevokeSiteBannedRequest(identity_id=joined["participant"]["id"]),
                    metadata=metadata,
                    timeout=10,
                )
            assert revoking.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.aio.AioRpcError) as kicking:
                await messaging.KickParticipants(
                    messaging_pb2.KickParticipantsRequest(
                        targets=[messaging_pb2.KickTarget(room_id=room.id, participant_id=target)],
                        code="site_banned",
                    ),
                    metadata=metadata,
                    timeout=10,
                )
            assert kicking.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Nobody was revoked: the participant's token still works.
    history = await client.get(f"/api/v1/rooms/{room.code}/messages", headers=bearer(joined["room_token"]))
    assert history.status_code == 200, history.text

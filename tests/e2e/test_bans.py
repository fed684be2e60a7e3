"""Bans: the host removes a participant at once (live sockets, room tokens, joining again) and the
room's log says so, live and on resume.

The test client is a trusted proxy, so `X-Forwarded-For` stands for the network each person joins
from.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.e2e.chat import ChatSocket, anonymous, bearer, documented, open_room
from tests.e2e.conftest import Stack


def _from(ip: str, token: str) -> dict[str, str]:
    return {**bearer(token), "X-Forwarded-For": ip}


async def _join(client: httpx.AsyncClient, code: str, username: str, token: str, ip: str) -> httpx.Response:
    return await client.post(
        f"/api/v1/rooms/{code}/join", json={"username": username}, headers=_from(ip, token)
    )


async def _joined(client: httpx.AsyncClient, code: str, username: str, ip: str) -> tuple[str, dict[str, Any]]:
    token = await anonymous(client)
    response = await _join(client, code, username, token, ip)
    assert response.status_code == 200, response.text
    return token, dict(response.json())


async def _refused_socket(stack: Stack, code: str, room_token: str) -> tuple[int | None, str | None]:
    async with connect(f"{stack.ws_url}/ws/v1/rooms/{code}?token={room_token}", open_timeout=10) as ws:
        await asyncio.wait_for(ws.wait_closed(), timeout=5)
        return ws.close_code, ws.close_reason


async def _ban(
    client: httpx.AsyncClient, code: str, token: str, participant_id: str, tier: str, reason: str = ""
) -> httpx.Response:
    return await client.post(
        f"/api/v1/rooms/{code}/bans",
        json={"participant_id": participant_id, "tier": tier, "reason": reason},
        headers=bearer(token),
    )


async def test_a_ban_closes_the_banned_sockets_at_once_revokes_their_token_and_keeps_them_out(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    room = await open_room(client)
    host = (await _join(client, room.code, "HostHere", room.host_token, "192.0.2.1")).json()
    bob_token, bob = await _joined(client, room.code, "BobBanned", "203.0.113.5")
    _cara_token, cara = await _joined(client, room.code, "CaraWatch", "198.51.100.5")
    _dave_token, dave = await _joined(client, room.code, "DaveAway", "198.51.100.6")

    host_socket = await ChatSocket.open(stack.ws_url, room.code, host["room_token"])
    bob_socket = await ChatSocket.open(stack.ws_url, room.code, bob["room_token"])
    cara_socket = await ChatSocket.open(stack.ws_url, room.code, cara["room_token"])
    dave_socket = await ChatSocket.open(stack.ws_url, room.code, dave["room_token"])
    await bob_socket.send("hello before the ban")
    await cara_socket.wait_for(lambda f: f["type"] == "message" and f["text"] == "hello before the ban")
    await dave_socket.wait_for(lambda f: f["type"] == "message" and f["text"] == "hello before the ban")
    dave_top = max(f["seq"] for f in dave_socket.frames if "seq" in f)
    await dave_socket.close()

    # Someone who is not the host cannot ban; nobody can ban the host.
    refused = await _ban(client, room.code, cara["room_token"], bob["participant"]["id"], "session")
    assert refused.status_code == 403, refused.text
    host_ban = await _ban(client, room.code, room.host_token, host["participant"]["id"], "session")
    assert host_ban.status_code == 409, host_ban.text
    assert host_ban.json()["error"]["code"] == "cannot_ban_host"

    banned = await _ban(client, room.code, room.host_token, bob["participant"]["id"], "session", "spam")
    answered = time.monotonic()
    assert banned.status_code == 201, banned.text
    body = documented(openapi, "POST", "/api/v1/rooms/{code}/bans", banned)
    assert body["ban"]["tier"] == "session" and body["ban"]["username"] == "BobBanned"

    # The banned participant's socket closes within a second; everyone else sees the entry.
    async with bob_socket.changed:
        await asyncio.wait_for(bob_socket.changed.wait_for(lambda: bob_socket.closed), timeout=1.5)
    assert time.monotonic() - answered < 1.0
    assert bob_socket.ws.close_code == 4403 and bob_socket.ws.close_reason == "banned"
    expected = {
        "type": "banned",
        "seq": body["seq"],
        "participant_id": bob["participant"]["id"],
        "username": "BobBanned",
    }
    assert await cara_socket.wait_for(lambda f: f["type"] == "banned") == expected
    assert await host_socket.wait_for(lambda f: f["type"] == "banned") == expected

    # A retry is the same ban, not a second entry.
    again = await _ban(client, room.code, room.host_token, bob["participant"]["id"], "session", "spam")
    assert again.status_code == 200 and again.json()["seq"] == body["seq"]

    # The room token is refused at once, on REST and on a new socket.
    history = await client.get(f"/api/v1/rooms/{room.code}/messages", headers=bearer(bob["room_token"]))
    assert history.status_code == 403 and history.json()["error"]["code"] == "banned"
    sent = await client.post(
        f"/api/v1/rooms/{room.code}/messages",
        json={"client_msg_id": "after-ban", "text": "still here?"},
        headers=bearer(bob["room_token"]),
    )
    assert sent.status_code == 403
    assert await _refused_socket(stack, room.code, bob["room_token"]) == (4403, "banned")

    # The same session cannot come back under another name; a session tier ban reaches no further.
    rejoin = await _join(client, room.code, "BobReturns", bob_token, "198.51.100.77")
    assert rejoin.status_code == 403 and rejoin.json()["error"]["code"] == "banned"
    assert "banned" in rejoin.json()["error"]["message"]
    neighbour = await _join(client, room.code, "SameWifi", await anonymous(client), "203.0.113.5")
    assert neighbour.status_code == 200, neighbour.text

    # A client that was away resumes and replays the ban entry in order.
    resumed = await ChatSocket.open(stack.ws_url, room.code, dave["room_token"], after_seq=dave_top)
    assert await resumed.wait_for(lambda f: f["type"] == "banned") == expected

    # The host lists bans, and lifting one lets the participant back (with a new token).
    listed = await client.get(f"/api/v1/rooms/{room.code}/bans", headers=bearer(room.host_token))
    bans = documented(openapi, "GET", "/api/v1/rooms/{code}/bans", listed)["bans"]
    assert [(b["username"], b["tier"], b["reason"]) for b in bans] == [("BobBanned", "session", "spam")]
    assert bans[0]["banned_by"] and bans[0]["created_at"]
    assert (
        await client.get(f"/api/v1/rooms/{room.code}/bans", headers=bearer(cara["room_token"]))
    ).status_code == 403
    lifted = await client.delete(
        f"/api/v1/rooms/{room.code}/bans/{bans[0]['id']}", headers=bearer(room.host_token)
    )
    assert lifted.status_code == 200 and lifted.json()["changed"] is True
    back = await _join(client, room.code, "", bob_token, "203.0.113.5")
    assert back.status_code == 200, back.text
    assert back.json()["participant"]["id"] == bob["participant"]["id"]
    fresh = await client.get(f"/api/v1/rooms/{room.code}/messages", headers=bearer(back.json()["room_token"]))
    assert fresh.status_code == 200
    stale = await client.get(f"/api/v1/rooms/{room.code}/messages", headers=bearer(bob["room_token"]))
    assert stale.status_code == 401 and stale.json()["error"]["code"] == "token_revoked"
    for socket in (host_socket, cara_socket, resumed):
        await socket.close()


async def test_device_and_ip_bans_keep_new_sessions_from_that_network_out(client: httpx.AsyncClient) -> None:
    room = await open_room(client)
    _host = await _join(client, room.code, "HostTiers", room.host_token, "203.0.113.40")
    _dev_token, dev = await _joined(client, room.code, "DeviceBan", "203.0.113.41")
    _ip_token, ipb = await _joined(client, room.code, "NetworkBan", "203.0.113.42")

    assert (
        await _ban(client, room.code, room.host_token, dev["participant"]["id"], "device")
    ).status_code == 201
    # A new anonymous session from the same device and network is refused; another network gets in.
    fresh = await _join(client, room.code, "DeviceAgain", await anonymous(client), "203.0.113.41")
    assert fresh.status_code == 403 and fresh.json()["error"]["code"] == "banned"
    elsewhere = await _join(client, room.code, "OtherNet1", await anonymous(client), "198.51.100.41")
    assert elsewhere.status_code == 200, elsewhere.text

    assert (await _ban(client, room.code, room.host_token, ipb["participant"]["id"], "ip")).status_code == 201
    fresh = await _join(client, room.code, "NetAgain", await anonymous(client), "203.0.113.42")
    assert fresh.status_code == 403 and fresh.json()["error"]["code"] == "banned"
    elsewhere = await _join(client, room.code, "OtherNet2", await anonymous(client), "198.51.100.42")
    assert elsewhere.status_code == 200, elsewhere.text
    # The host is never kept out of their own room, even from a banned network.
    host_again = await _join(client, room.code, "", room.host_token, "203.0.113.42")
    assert host_again.status_code == 200, host_again.text

    listed = await client.get(f"/api/v1/rooms/{room.code}/bans", headers=bearer(room.host_token))
    assert [b["tier"] for b in listed.json()["bans"]] == ["ip", "device"]

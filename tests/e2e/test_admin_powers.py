"""Admins' powers through the edge: room takedowns, site-wide bans and stats, each refused to everyone
else and each recorded in the audit log.

An operator grants the admin role with the command line; the admin signs in again to get a token
with the claim. The test client is a trusted proxy, so `X-Forwarded-For` stands for the network each
person comes from.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.admin_cli import new_admin
from tests.e2e.chat import ChatSocket, anonymous, bearer, documented, open_room

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack


def _from(ip: str, token: str | None = None) -> dict[str, str]:
    return {**(bearer(token) if token else {}), "X-Forwarded-For": ip}


async def _admin(stack: Stack, client: httpx.AsyncClient) -> str:
    return await new_admin(client, stack, "powers")


async def _joined(client: httpx.AsyncClient, code: str, username: str, ip: str) -> tuple[str, dict[str, Any]]:
    token = await anonymous(client)
    response = await client.post(
        f"/api/v1/rooms/{code}/join", json={"username": username}, headers=_from(ip, token)
    )
    assert response.status_code == 200, response.text
    return token, dict(response.json())


async def _audit(client: httpx.AsyncClient, token: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/admin/audit", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


async def _closed(socket: ChatSocket) -> tuple[int | None, str | None]:
    await asyncio.wait_for(socket.changed.wait_for(lambda: socket.closed), timeout=5)
    return socket.ws.close_code, socket.ws.close_reason


async def test_a_takedown_disconnects_everyone_hides_the_room_and_is_audited(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    admin = await _admin(stack, client)
    room = await open_room(client)
    host = (
        await client.post(
            f"/api/v1/rooms/{room.code}/join", json={"username": "HostTaken"}, headers=bearer(room.host_token)
        )
    ).json()
    _ana_token, ana = await _joined(client, room.code, "AnaTaken", "203.0.113.61")
    host_socket = await ChatSocket.open(stack.ws_url, room.code, host["room_token"])
    ana_socket = await ChatSocket.open(stack.ws_url, room.code, ana["room_token"])
    client_msg_id = await ana_socket.send("soon gone")
    assert (await ana_socket.ack_or_error(client_msg_id))["type"] == "ack"

    path = "/api/v1/admin/rooms/{code}/takedown"
    # Nobody else may: not the host, not a participant, not a stranger.
    for token in (room.host_token, await anonymous(client)):
        refused = await client.post(
            f"/api/v1/admin/rooms/{room.code}/takedown", json={"reason": "spam"}, headers=bearer(token)
        )
        assert refused.status_code == 403, refused.text
        assert documented(openapi, "POST", path, refused)["error"]["code"] == "forbidden"

    response = await client.post(
        f"/api/v1/admin/rooms/{room.code}/takedown", json={"reason": "illegal content"}, headers=bearer(admin)
    )
    assert response.status_code == 200, response.text
    taken = documented(openapi, "POST", path, response)
    assert taken["room"]["taken_down"] is True and taken["room"]["closed"] is True
    assert taken["reason"] == "illegal content" and taken["changed"] is True

    # Every live socket gets the room as it is now, then closes with 4410.
    for socket in (host_socket, ana_socket):
        updated = await socket.wait_for(lambda f: f["type"] == "room_updated")
        assert updated["room"]["taken_down"] is True and updated["room"]["closed"] is True
        assert await _closed(socket) == (4410, "room_taken_down")

    # Joining, history, the room itself and new sockets are refused; nothing of its content shows.
    newcomer = await anonymous(client)
    join = await client.post(
        f"/api/v1/rooms/{room.code}/join", json={"username": "LateComer"}, headers=bearer(newcomer)
    )
    assert join.status_code == 404 and join.json()["error"]["code"] == "room_taken_down"
    again = await client.post(
        f"/api/v1/rooms/{room.code}/join", json={"username": "AnaTaken"}, headers=bearer(_ana_token)
    )
    assert again.status_code == 404 and again.json()["error"]["code"] == "room_taken_down"
    for room_token in (ana["room_token"], host["room_token"]):
        history = await client.get(f"/api/v1/rooms/{room.code}/messages", headers=bearer(room_token))
        assert history.status_code == 404, history.text
        assert history.json()["error"]["code"] == "room_taken_down"
        assert "soon gone" not in history.text
    info = await client.get(f"/api/v1/rooms/{room.code}", headers=bearer(room.host_token))
    assert info.status_code == 404 and info.json()["error"]["code"] == "room_taken_down"
    seen = await client.get(f"/api/v1/rooms/{room.code}", headers=bearer(admin))
    assert seen.json()["taken_down"] is True
    async with connect(f"{stack.ws_url}/ws/v1/rooms/{room.code}?token={ana['room_token']}") as ws:
        await asyncio.wait_for(ws.wait_closed(), timeout=5)
        assert (ws.close_code, ws.close_reason) == (4410, "room_taken_down")

    # Taking it down again changes nothing and is recorded once.
    repeat = await client.post(
        f"/api/v1/admin/rooms/{room.code}/takedown", json={"reason": "again"}, headers=bearer(admin)
    )
    assert repeat.status_code == 200 and repeat.json()["changed"] is False
    assert repeat.json()["reason"] == "illegal content"
    events = await _audit(client, admin, kind="admin.room_taken_down", room_id=room.id)
    assert len(events) == 1
    assert events[0]["target"] == room.id and events[0]["details"]["reason"] == "illegal content"

    listed = await client.get("/api/v1/admin/rooms/taken-down", headers=bearer(admin))
    assert listed.status_code == 200, listed.text
    documented(openapi, "GET", "/api/v1/admin/rooms/taken-down", listed)
    assert room.code in [entry["room"]["code"] for entry in listed.json()["rooms"]]

    # Restored: the room opens again, its history shows again, and that is recorded too.
    restored = await client.post(f"/api/v1/admin/rooms/{room.code}/restore", headers=bearer(admin))
    assert restored.status_code == 200, restored.text
    assert restored.json()["taken_down"] is False and restored.json()["closed"] is False
    rejoined = await client.post(
        f"/api/v1/rooms/{room.code}/join", json={"username": "AnaTaken"}, headers=bearer(_ana_token)
    )
    assert rejoined.status_code == 200, rejoined.text
    history = await client.get(
        f"/api/v1/rooms/{room.code}/messages", headers=bearer(rejoined.json()["room_token"])
    )
    assert history.status_code == 200, history.text
    assert "soon gone" in history.text
    assert len(await _audit(client, admin, kind="admin.room_restored", room_id=room.id)) == 1
    await asyncio.gather(host_socket.close(), ana_socket.close())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/admin/audit", None),
        ("POST", "/api/v1/admin/rooms/abcdef/takedown", {"reason": "x"}),
        ("POST", "/api/v1/admin/rooms/abcdef/restore", None),
        ("GET", "/api/v1/admin/rooms/taken-down", None),
        ("POST", "/api/v1/admin/site-bans", {"ip": "192.0.2.9", "reason": "x"}),
        ("DELETE", "/api/v1/admin/site-bans/00000000-0000-4000-8000-000000000000", None),
        ("GET", "/api/v1/admin/site-bans", None),
        ("GET", "/api/v1/admin/stats", None),
    ],
)
async def test_everyone_but_admins_is_refused(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    token = await anonymous(client)
    response = await client.request(method, path, json=body, headers=bearer(token))
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"


async def test_a_site_wide_network_ban_refuses_new_sessions_and_joins_from_that_network_only(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    admin = await _admin(stack, client)
    banned_ip, other_ip = "192.0.2.201", "192.0.2.202"
    room = await open_room(client)
    # Someone with a session started before the ban cannot join from that network either.
    earlier = await anonymous(client)

    response = await client.post(
        "/api/v1/admin/site-bans", json={"ip": banned_ip, "reason": "bot network"}, headers=bearer(admin)
    )
    assert response.status_code == 200, response.text
    ban = documented(openapi, "POST", "/api/v1/admin/site-bans", response)
    assert ban["ip_hash"] and ban["identity_id"] is None and banned_ip not in response.text

    refused = await client.post("/api/v1/auth/anonymous", headers=_from(banned_ip))
    assert refused.status_code == 403, refused.text
    assert documented(openapi, "POST", "/api/v1/auth/anonymous", refused)["error"]["code"] == "site_banned"
    assert (await client.post("/api/v1/auth/anonymous", headers=_from(other_ip))).status_code == 201
    join = await client.post(
        f"/api/v1/rooms/{room.code}/join", json={"username": "FromBanned"}, headers=_from(banned_ip, earlier)
    )
    assert join.status_code == 403 and join.json()["error"]["code"] == "site_banned"
    await _joined(client, room.code, "FromElsewhere", other_ip)

    events = await _audit(client, admin, kind="admin.site_ban_created")
    assert ban["id"] in [event["details"]["ban_id"] for event in events]
    listed = await client.get("/api/v1/admin/site-bans", headers=bearer(admin))
    assert ban["id"] in [entry["id"] for entry in listed.json()["bans"]]

    lifted = await client.delete(f"/api/v1/admin/site-bans/{ban['id']}", headers=bearer(admin))
    assert lifted.status_code == 200 and lifted.json()["lifted_at"] is not None
    assert (await client.post("/api/v1/auth/anonymous", headers=_from(banned_ip))).status_code == 201


async def test_a_site_wide_identity_ban_signs_it_out_and_keeps_it_out_of_every_room(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    admin = await _admin(stack, client)
    room = await open_room(client)
    other_room = await open_room(client)
    session = await client.post("/api/v1/auth/anonymous", headers=_from("198.51.100.71"))
    assert session.status_code == 201, session.text
    tokens = session.json()
    joined = await client.post(
        f"/api/v1/rooms/{room.code}/join",
        json={"username": "Troll"},
        headers=_from("198.51.100.71", tokens["access_token"]),
    )
    assert joined.status_code == 200, joined.text

    # Banned by the participant it is in that room: the edge learns the identity from rooms.
    response = await client.post(
        "/api/v1/admin/site-bans",
        json={
            "room_code": room.code,
            "participant_id": joined.json()["participant"]["id"],
            "reason": "abuse",
        },
        headers=bearer(admin),
    )
    assert response.status_code == 200, response.text
    identity_id = response.json()["identity_id"]
    assert identity_id

    refresh = await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 403 and refresh.json()["error"]["code"] == "site_banned"
    for code in (room.code, other_room.code):
        join = await client.post(
            f"/api/v1/rooms/{code}/join",
            json={"username": "TrollAgain"},
            headers=_from("198.51.100.72", tokens["access_token"]),
        )
        assert join.status_code == 403 and join.json()["error"]["code"] == "site_banned"
    # Others still get in.
    await _joined(client, other_room.code, "Bystander", "198.51.100.73")
    events = await _audit(client, admin, kind="admin.site_ban_created", target=identity_id)
    assert len(events) == 1


async def test_stats_answer_with_plausible_numbers(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    admin = await _admin(stack, client)
    room = await open_room(client)
    _token, ana = await _joined(client, room.code, "AnaCounts", "203.0.113.91")
    socket = await ChatSocket.open(stack.ws_url, room.code, ana["room_token"])
    client_msg_id = await socket.send("counted")
    assert (await socket.ack_or_error(client_msg_id))["type"] == "ack"

    response = await client.get("/api/v1/admin/stats", headers=bearer(admin))
    assert response.status_code == 200, response.text
    stats = documented(openapi, "GET", "/api/v1/admin/stats", response)
    assert stats["rooms"]["total"] >= stats["rooms"]["open"] >= 1
    assert stats["rooms"]["created_today"] >= 1
    assert stats["open_sockets"] >= 1
    days = stats["messages_per_day"]
    assert len(days) == 7 and days == sorted(days, key=lambda day: day["day"])
    assert days[-1]["messages"] >= 1
    assert stats["open_reports"] >= 0
    # At least the admin's own sign-in today.
    assert stats["audit_events_today"] >= 1
    await socket.close()

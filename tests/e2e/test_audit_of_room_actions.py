"""A host's bans and unbans, the resolution of reports and an access-code lockout each land in the
audit log (recorded by rooms and messaging with their service credentials), where an admin reads
them; chat messages never do."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx

from tests.admin_cli import new_admin
from tests.e2e.chat import ChatSocket, bearer, join, open_room

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack


async def _events(
    client: httpx.AsyncClient, token: str, room_id: str, kinds: set[str]
) -> list[dict[str, Any]]:
    """The room's audit events once every kind wanted is there (they are delivered after commit)."""
    events: list[dict[str, Any]] = []
    for _ in range(100):
        page = await client.get(
            "/api/v1/admin/audit", params={"room_id": room_id, "limit": 200}, headers=bearer(token)
        )
        assert page.status_code == 200, page.text
        events = page.json()["events"]
        if kinds <= {event["kind"] for event in events}:
            return events
        await asyncio.sleep(0.1)
    raise AssertionError(f"audit events missing: {kinds - {event['kind'] for event in events}}; got {events}")


async def test_bans_report_resolutions_and_lockouts_reach_the_audit_log(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    admin = await new_admin(client, stack, "auditor")
    room = await open_room(client)
    host = await join(client, room.code, "HostAudits", token=room.host_token)
    guest = await join(client, room.code, "GuestBanned")
    writer = await join(client, room.code, "WriterOfAds")
    reporters = [await join(client, room.code, f"Reporter_{n}") for n in range(3)]

    socket = await ChatSocket.open(stack.ws_url, room.code, writer["room_token"])
    try:
        msg_id = await socket.send("buy cheap watches")
        ack = await socket.ack_or_error(msg_id)
        assert ack["type"] == "ack", ack
    finally:
        await socket.close()
    for person in reporters:
        reported = await client.post(
            f"/api/v1/rooms/{room.code}/messages/{ack['seq']}/reports",
            json={"reason": "spam"},
            headers=bearer(person["room_token"]),
        )
        assert reported.status_code == 200, reported.text
    resolved = await client.post(
        f"/api/v1/rooms/{room.code}/reports/{ack['seq']}/resolution",
        json={"action": "dismiss"},
        headers=bearer(host["room_token"]),
    )
    assert resolved.status_code == 200, resolved.text

    banned = await client.post(
        f"/api/v1/rooms/{room.code}/bans",
        json={"participant_id": guest["participant"]["id"], "tier": "session", "reason": "trolling"},
        headers=bearer(host["room_token"]),
    )
    assert banned.status_code in (200, 201), banned.text
    ban_id = banned.json()["ban"]["id"]
    lifted = await client.delete(
        f"/api/v1/rooms/{room.code}/bans/{ban_id}", headers=bearer(host["room_token"])
    )
    assert lifted.status_code == 200, lifted.text

    events = await _events(
        client, admin, room.id, {"room.ban_created", "room.ban_lifted", "room.report_resolved"}
    )
    created = next(event for event in events if event["kind"] == "room.ban_created")
    assert created["target"] == guest["participant"]["id"]
    assert created["details"]["reason"] == "trolling"
    resolution = next(event for event in events if event["kind"] == "room.report_resolved")
    assert (resolution["details"]["resolution"], resolution["details"]["reports_closed"]) == ("dismiss", 3)
    # Chat messages are not security events.
    assert not any("buy cheap watches" in str(event) for event in events)

    private = await open_room(client, visibility="private", access_code="sesame-99")
    intruder = bearer(await _anonymous(client))
    for _ in range(10):
        wrong = await client.post(
            f"/api/v1/rooms/{private.code}/join",
            json={"username": "IntruderX", "access_code": "guess"},
            headers=intruder,
        )
        if wrong.status_code == 429:
            break
    assert wrong.status_code == 429, wrong.text
    lockouts = await _events(client, admin, private.id, {"room.access_code_lockout"})
    assert len([event for event in lockouts if event["kind"] == "room.access_code_lockout"]) == 1


async def _anonymous(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/v1/auth/anonymous")
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])

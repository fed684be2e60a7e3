"""Audit events are never lost between a change and identity's audit log.

A host bans a participant while identity is down; rooms is then killed (kill -9) before identity is
back, so nothing held in a process could carry the event. The ban's event waits in rooms' outbox,
committed with the ban; once identity and rooms run again, rooms' relay delivers it and the admin's
audit query shows it exactly once, also after it was handed over a second time.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx

from tests.admin_cli import new_admin
from tests.e2e.chat import bearer, history, join, open_room

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

WAIT = 60.0


async def _outbox_row(database_url: str, key: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchrow(
            "SELECT attempts, last_error, delivered_at, dead_at FROM rooms.outbox"
            " WHERE topic = 'audit.record' AND key = $1",
            key,
        )
    finally:
        await conn.close()


async def _ban_events(client: httpx.AsyncClient, admin: str, room_id: str) -> list[dict[str, Any]]:
    page = await client.get(
        "/api/v1/admin/audit",
        params={"room_id": room_id, "kind": "room.ban_created", "limit": 200},
        headers=bearer(admin),
    )
    assert page.status_code == 200, page.text
    return list(page.json()["events"])


async def _until(check: Any, what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {WAIT:.0f} s")
        await asyncio.sleep(0.2)


async def test_a_ban_made_while_identity_is_down_reaches_the_audit_log_once(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    admin = await new_admin(client, stack, "outage-auditor")
    room = await open_room(client)
    host = await join(client, room.code, "HostOfOutage", token=room.host_token)
    guest = await join(client, room.code, "BannedInOutage")
    # rooms and messaging learn identity's token keys now; with identity away they could not.
    bans = await client.get(f"/api/v1/rooms/{room.code}/bans", headers=bearer(room.host_token))
    assert bans.status_code == 200, bans.text
    await history(client, room.code, host["room_token"])

    await stack.astop("identity")
    try:
        banned = await client.post(
            f"/api/v1/rooms/{room.code}/bans",
            json={"participant_id": guest["participant"]["id"], "tier": "session", "reason": "spam"},
            headers=bearer(room.host_token),
        )
        assert banned.status_code == 201, banned.text
        key = f"room.ban_created:{banned.json()['ban']['id']}"

        async def failed_attempt() -> asyncpg.Record | None:
            row = await _outbox_row(stack.database_url, key)
            return row if row is not None and row["attempts"] >= 1 else None

        # Committed with the ban, and tried already: identity is not there to take it.
        row = await _until(failed_attempt, "a delivery attempt")
        assert row["delivered_at"] is None and row["dead_at"] is None, dict(row)
        # A crash now loses nothing: the event is in Postgres, not in the process.
        await stack.akill("rooms")
    finally:
        await stack.astart("identity")
    try:
        await asyncio.sleep(1.0)
        assert await _ban_events(client, admin, room.id) == [], "only rooms could have sent it"
    finally:
        await stack.astart("rooms")

    events = await _until(lambda: _ban_events(client, admin, room.id), "the ban event")
    assert [event["target"] for event in events] == [guest["participant"]["id"]]
    assert events[0]["details"]["reason"] == "spam"

    async def delivered() -> bool:
        row = await _outbox_row(stack.database_url, key)
        return row is not None and row["delivered_at"] is not None

    await _until(delivered, "the outbox row marked delivered")

    # Handed over again (as after a reply lost on the way back): identity records it once all the same.
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(
            "UPDATE rooms.outbox SET delivered_at = NULL, next_attempt_at = now()"
            " WHERE topic = 'audit.record' AND key = $1",
            key,
        )
    finally:
        await conn.close()
    await _until(delivered, "the second delivery")
    assert len(await _ban_events(client, admin, room.id)) == 1

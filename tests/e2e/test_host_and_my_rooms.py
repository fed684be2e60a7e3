"""The host's tools and "my rooms" through the edge, with all five services as real processes: slow
mode and closing as senders meet them, the access code shown again, read positions and unread
counts. Every JSON answer is checked against the OpenAPI document the edge serves."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.e2e.chat import anonymous, bearer, create_room, documented, join, new_id


async def send(
    client: httpx.AsyncClient, code: str, room_token: str, text: str, cid: str | None = None
) -> httpx.Response:
    return await client.post(
        f"/api/v1/rooms/{code}/messages",
        json={"client_msg_id": cid or new_id(), "text": text},
        headers=bearer(room_token),
    )


async def test_slow_mode_and_closing_apply_to_senders_at_once(
    client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    host = await anonymous(client)
    room = await create_room(client, host, name="Moderated")
    host_seat = await join(client, room["code"], "ModHost", host)
    guest = await join(client, room["code"], "ModGuest")
    code = room["code"]

    patched = await client.patch(
        f"/api/v1/rooms/{code}", json={"slow_mode_seconds": 30}, headers=bearer(host)
    )
    assert patched.status_code == 200, patched.text
    assert documented(openapi, "PATCH", "/api/v1/rooms/{code}", patched)["slow_mode_seconds"] == 30
    # Reading the room shows it to everyone.
    read_back = await client.get(f"/api/v1/rooms/{code}")
    assert documented(openapi, "GET", "/api/v1/rooms/{code}", read_back)["slow_mode_seconds"] == 30

    # The change is announced: messaging applies it from the next message on. (Slow mode lives in
    # Redis and, like the send limit, lets messages through while Redis is unreachable, as it may
    # still be for a moment after an earlier test restarted it.)
    assert (await send(client, code, guest["room_token"], "first")).status_code == 201
    for _ in range(30):
        waited = await send(client, code, guest["room_token"], "second")
        if waited.status_code != 201:
            break
        await asyncio.sleep(0.2)
    assert waited.status_code == 429, waited.text
    error = documented(openapi, "POST", "/api/v1/rooms/{code}/messages", waited)["error"]
    assert error["code"] == "slow_mode"
    assert 1 <= int(waited.headers["Retry-After"]) <= 30
    assert error["message"].startswith(
        "Slow mode is on: one message every 30 seconds. You can send again in "
    )
    # The host is never held back.
    for number in range(3):
        assert (await send(client, code, host_seat["room_token"], f"host {number}")).status_code == 201

    refused = await client.patch(
        f"/api/v1/rooms/{code}", json={"slow_mode_seconds": 4000}, headers=bearer(host)
    )
    assert refused.status_code == 422
    assert documented(openapi, "PATCH", "/api/v1/rooms/{code}", refused)["error"]["code"] == "invalid_request"
    not_host = await client.post(f"/api/v1/rooms/{code}/close", headers=bearer(await anonymous(client)))
    assert not_host.status_code == 403
    assert documented(openapi, "POST", "/api/v1/rooms/{code}/close", not_host)["error"]["code"] == "not_host"

    closed = await client.post(f"/api/v1/rooms/{code}/close", headers=bearer(host))
    assert closed.status_code == 200, closed.text
    assert documented(openapi, "POST", "/api/v1/rooms/{code}/close", closed)["closed"] is True
    # The close is announced, so messaging refuses the very next message.
    after = await send(client, code, host_seat["room_token"], "anyone there?")
    assert after.status_code == 409, after.text
    error = documented(openapi, "POST", "/api/v1/rooms/{code}/messages", after)["error"]
    assert error == {"code": "room_closed", "message": "This room is closed."}
    newcomer = await client.post(
        f"/api/v1/rooms/{code}/join", json={"username": "LateComer"}, headers=bearer(await anonymous(client))
    )
    assert newcomer.status_code == 409
    # What was said stays readable to those who were there.
    history = await client.get(f"/api/v1/rooms/{code}/messages", headers=bearer(guest["room_token"]))
    texts = [
        m["text"] for m in documented(openapi, "GET", "/api/v1/rooms/{code}/messages", history)["messages"]
    ]
    assert texts[:3] == ["host 2", "host 1", "host 0"]
    assert set(texts[3:]) <= {"first", "second"} and texts[-1] == "first"


async def test_the_host_sees_the_access_code_and_nobody_else(
    client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    host = await anonymous(client)
    room = await create_room(client, host, name="Hidden", visibility="private", access_code="let-me-in-42")
    code = room["code"]
    shown = await client.get(f"/api/v1/rooms/{code}/access-code", headers=bearer(host))
    assert shown.status_code == 200, shown.text
    assert documented(openapi, "GET", "/api/v1/rooms/{code}/access-code", shown) == {
        "access_code": "let-me-in-42"
    }
    stranger = await client.get(f"/api/v1/rooms/{code}/access-code", headers=bearer(await anonymous(client)))
    assert stranger.status_code == 403
    assert (
        documented(openapi, "GET", "/api/v1/rooms/{code}/access-code", stranger)["error"]["code"]
        == "not_host"
    )
    # Room info never carries it.
    assert "let-me-in-42" not in (await client.get(f"/api/v1/rooms/{code}")).text

    public = await create_room(client, host, name="Open")
    answer = await client.get(f"/api/v1/rooms/{public['code']}/access-code", headers=bearer(host))
    assert answer.status_code == 409
    assert (
        documented(openapi, "GET", "/api/v1/rooms/{code}/access-code", answer)["error"]["code"]
        == "room_public"
    )


async def test_my_rooms_with_unread_counts_that_reading_clears(
    client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    me = await anonymous(client)
    friend = await anonymous(client)
    mine = await create_room(client, me, name="Mine, never opened")
    theirs = await create_room(client, friend, name="Theirs")
    friend_seat = await join(client, theirs["code"], "FriendSeat", friend)
    my_seat = await join(client, theirs["code"], "MySeat", me)

    async def my_rooms() -> list[dict[str, Any]]:
        response = await client.get("/api/v1/me/rooms", headers=bearer(me))
        assert response.status_code == 200, response.text
        return list(documented(openapi, "GET", "/api/v1/me/rooms", response)["rooms"])

    for number in range(3):
        assert (
            await send(client, theirs["code"], friend_seat["room_token"], f"news {number}")
        ).status_code == 201
    assert (await send(client, theirs["code"], my_seat["room_token"], "mine")).status_code == 201

    listed = await my_rooms()
    assert [entry["room"]["name"] for entry in listed] == ["Theirs", "Mine, never opened"]
    theirs_entry, mine_entry = listed
    assert (theirs_entry["unread"], theirs_entry["unread_more"], theirs_entry["last_seq"]) == (3, False, 4)
    assert theirs_entry["participant"]["username"] == "MySeat" and not theirs_entry["is_host"]
    assert mine_entry["is_host"] and mine_entry["participant"] is None
    assert mine_entry["room"]["code"] == mine["code"] and mine_entry["unread"] == 0

    read = await client.post(
        f"/api/v1/rooms/{theirs['code']}/read", json={"seq": 2}, headers=bearer(my_seat["room_token"])
    )
    assert documented(openapi, "POST", "/api/v1/rooms/{code}/read", read) == {"read_seq": 2}
    assert (await my_rooms())[0]["unread"] == 1
    backwards = await client.post(
        f"/api/v1/rooms/{theirs['code']}/read", json={"seq": 1}, headers=bearer(my_seat["room_token"])
    )
    assert backwards.json() == {"read_seq": 2}
    await client.post(
        f"/api/v1/rooms/{theirs['code']}/read", json={"seq": 4}, headers=bearer(my_seat["room_token"])
    )
    assert (await my_rooms())[0]["unread"] == 0

    # The friend sees only their own rooms; an access token is needed, a room token will not do.
    friend_rooms = await client.get("/api/v1/me/rooms", headers=bearer(friend))
    assert [entry["room"]["name"] for entry in friend_rooms.json()["rooms"]] == ["Theirs"]
    with_room_token = await client.get("/api/v1/me/rooms", headers=bearer(my_seat["room_token"]))
    assert with_room_token.status_code == 403
    assert (
        documented(openapi, "GET", "/api/v1/me/rooms", with_room_token)["error"]["code"]
        == "access_token_required"
    )
    wrong_token = await client.post(
        f"/api/v1/rooms/{mine['code']}/read", json={"seq": 1}, headers=bearer(my_seat["room_token"])
    )
    assert wrong_token.status_code == 403

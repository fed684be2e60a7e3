"""Deleting an account, through the edge: live sockets see `participant_forgotten`, history then reads
the same, the account's tokens and email stop working, its reserved username is free again, and the
rooms it hosted are closed."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.chat import ChatSocket, anonymous, bearer, create_room, history, join
from tests.e2e.conftest import Stack

PASSWORD = "a long enough passphrase"
DELETE_ME = "/api/v1/auth/me"


async def _account(client: httpx.AsyncClient, username: str) -> dict[str, Any]:
    email = f"{uuid.uuid4().hex}@example.com"
    registered = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "reserved_username": username}
    )
    assert registered.status_code == 201, registered.text
    return {"email": email, **registered.json()}


async def _delete(client: httpx.AsyncClient, token: str, password: str, erase: bool) -> httpx.Response:
    return await client.request(
        "DELETE", DELETE_ME, json={"password": password, "erase_messages": erase}, headers=bearer(token)
    )


def _view(messages: list[dict[str, Any]]) -> list[tuple[int, str, str, bool]]:
    return [(m["seq"], m["sender"]["username"], m["text"], m["deleted"]) for m in messages]


def _applied(messages: list[dict[str, Any]], frame: dict[str, Any]) -> list[tuple[int, str, str, bool]]:
    """What a client holding `messages` shows after applying the frame."""
    view = []
    for m in messages:
        theirs = m["sender"]["participant_id"] == frame["participant_id"]
        erased = theirs and frame["messages_erased"]
        view.append(
            (
                m["seq"],
                frame["username"] if theirs else m["sender"]["username"],
                "" if erased else m["text"],
                m["deleted"] or erased,
            )
        )
    return view


@pytest.mark.parametrize("erase", [False, True])
async def test_deleting_an_account_forgets_it_live_and_in_history(
    stack: Stack, client: httpx.AsyncClient, erase: bool
) -> None:
    username = "gone" + uuid.uuid4().hex[:8]
    account = await _account(client, username)
    token = account["access_token"]
    # Someone else's room the account chats in, and a room the account hosts.
    host_token = await anonymous(client)
    room = await create_room(client, host_token)
    host = await join(client, room["code"], "RoomHost", host_token)
    member = await join(client, room["code"], username, token)
    own_room = await create_room(client, token)

    watcher = await ChatSocket.open(stack.ws_url, room["code"], host["room_token"])
    mine = await ChatSocket.open(stack.ws_url, room["code"], member["room_token"])
    try:
        for text in ("first words", "second words"):
            assert (await mine.ack_or_error(await mine.send(text)))["type"] == "ack"
        assert (await watcher.ack_or_error(await watcher.send("host replies")))["type"] == "ack"
        before = await history(client, room["code"], host["room_token"])
        assert {m["sender"]["username"] for m in before} == {username, "RoomHost"}

        wrong = await _delete(client, token, "not my password", erase)
        assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "wrong_password"
        deleted = await _delete(client, token, PASSWORD, erase)
        assert deleted.status_code == 204, deleted.text

        frame = await watcher.wait_for(lambda f: f["type"] == "participant_forgotten", timeout=20)
        assert frame["participant_id"] == member["participant"]["id"]
        assert frame["username"].startswith("deleted_") and frame["messages_erased"] is erase
        # The deleted account's own socket is told and closed.
        await mine.wait_for(lambda f: f["type"] == "error" and f["code"] == "account_deleted", timeout=20)
    finally:
        await mine.close()
        await watcher.close()

    after = await history(client, room["code"], host["room_token"])
    assert _view(after) == _applied(before, frame)
    assert username not in str(after)
    # A client that resumes from before the entry gets it in order.
    resumed = await ChatSocket.open(
        stack.ws_url, room["code"], host["room_token"], after_seq=before[-1]["seq"]
    )
    try:
        replay = await resumed.wait_for(lambda f: f["type"] == "participant_forgotten")
        assert replay == frame
    finally:
        await resumed.close()

    # The account's tokens fail, its email signs nobody in, its name is free, its room is closed.
    me = await client.get("/api/v1/auth/me", headers=bearer(token))
    assert me.status_code == 401 and me.json()["error"]["code"] == "account_deleted"
    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": account["refresh_token"]})
    assert refreshed.status_code == 401
    login = await client.post("/api/v1/auth/login", json={"email": account["email"], "password": PASSWORD})
    assert login.status_code == 401
    joined_again = await client.post(
        f"/api/v1/rooms/{room['code']}/join", json={"username": "Comeback1"}, headers=bearer(token)
    )
    assert joined_again.status_code in (401, 403), joined_again.text
    available = await client.get(f"/api/v1/auth/usernames/{username}")
    assert available.status_code == 200 and available.json()["available"] is True, available.text
    someone = await client.post(
        "/api/v1/auth/register",
        json={
            "email": f"{uuid.uuid4().hex}@example.com",
            "password": PASSWORD,
            "reserved_username": username,
        },
    )
    assert someone.status_code == 201, someone.text
    hosted = await client.get(f"/api/v1/rooms/{own_room['code']}")
    assert hosted.json()["closed"] is True and hosted.json()["erased"] is False

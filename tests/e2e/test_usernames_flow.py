"""Joining with usernames end to end through the edge: the dice roll, availability, reserved names
with the verified badge, and dual sessions on one device."""

from __future__ import annotations

import os
import re
import uuid
from typing import TYPE_CHECKING, Any

import httpx

from tests.e2e.chat import ChatSocket, anonymous, bearer, history, join, new_id, open_room

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

GENERATED = re.compile(r"[A-Z][a-z]+[A-Z][a-z]+[1-9][0-9]*")
_NAME_LETTERS = "bdghjmnpqrvwxz"


def _name(prefix: str) -> str:
    """A valid name unique to this run (consonants only, so it can never spell a refused word)."""
    return prefix + "_" + "".join(_NAME_LETTERS[b % len(_NAME_LETTERS)] for b in os.urandom(8))


async def _register(client: httpx.AsyncClient, reserved: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"email": f"{uuid.uuid4().hex}@example.com", "password": "correct horse battery"}
    if reserved is not None:
        body["reserved_username"] = reserved
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _roll(client: httpx.AsyncClient, code: str, token: str) -> httpx.Response:
    return await client.post(f"/api/v1/rooms/{code}/usernames/suggest", headers=bearer(token))


async def _availability(client: httpx.AsyncClient, name: str, token: str | None = None) -> dict[str, Any]:
    response = await client.get(f"/api/v1/auth/usernames/{name}", headers=bearer(token) if token else {})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_roll_the_dice_then_join_under_the_rolled_name(client: httpx.AsyncClient) -> None:
    room = await open_room(client)
    device, other = await anonymous(client), await anonymous(client)
    rolled = await _roll(client, room.code, device)
    assert rolled.status_code == 200, rolled.text
    suggestion = rolled.json()
    assert GENERATED.fullmatch(suggestion["username"]) and len(suggestion["username"]) <= 15
    assert (suggestion["remaining"], suggestion["held_for"]) == (19, 300)

    # Held for the roller: nobody else can take it meanwhile.
    stolen = await client.post(
        f"/api/v1/rooms/{room.code}/join", json={"username": suggestion["username"]}, headers=bearer(other)
    )
    assert (stolen.status_code, stolen.json()["error"]["code"]) == (409, "username_held")

    joined = await join(client, room.code, suggestion["username"], token=device)
    assert joined["participant"]["username"] == suggestion["username"]
    assert joined["participant"]["verified"] is False
    # Returning later gives the same name back.
    again = await join(client, room.code, "Another_Name", token=device)
    assert again["participant"]["id"] == joined["participant"]["id"]
    assert again["participant"]["username"] == suggestion["username"]


async def test_twenty_rolls_per_hour_then_429_with_retry_after(client: httpx.AsyncClient) -> None:
    room = await open_room(client)
    device = await anonymous(client)
    names = []
    for expected_remaining in range(19, -1, -1):
        rolled = await _roll(client, room.code, device)
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["remaining"] == expected_remaining
        names.append(rolled.json()["username"])
    assert len(set(names)) == 20
    refused = await _roll(client, room.code, device)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "too_many_rolls"
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    assert error["retry_after"] == int(refused.headers["Retry-After"])
    # The limit is per device and room: someone else still rolls, and typing a name still works.
    assert (await _roll(client, room.code, await anonymous(client))).status_code == 200
    assert (await join(client, room.code, "Typed_Name", token=device))["participant"][
        "username"
    ] == "Typed_Name"


async def test_rolling_needs_a_session_and_a_real_room(client: httpx.AsyncClient) -> None:
    room = await open_room(client)
    unauthenticated = await client.post(f"/api/v1/rooms/{room.code}/usernames/suggest")
    assert (unauthenticated.status_code, unauthenticated.json()["error"]["code"]) == (401, "unauthenticated")
    missing = await _roll(client, "ZZZZZZZZ", await anonymous(client))
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "room_not_found")


async def test_availability_says_why_a_name_cannot_be_had(client: httpx.AsyncClient) -> None:
    free = _name("Free")
    assert await _availability(client, free) == {
        "username": free,
        "available": True,
        "reason": None,
        "message": None,
    }
    owner = await _register(client, _name("Owned"))
    taken = owner["identity"]["reserved_username"]
    for name, reason in (
        ("abc", "username_invalid"),
        ("has space", "username_invalid"),
        ("Moderator", "username_reserved"),
        ("Sh1t_Head", "username_profane"),
        ("a55_hat", "username_profane"),
        (taken.upper(), "username_taken"),
    ):
        checked = await _availability(client, name)
        assert (checked["available"], checked["reason"]) == (False, reason), name
        assert checked["message"]
    # The legitimate words a naive filter would refuse are fine.
    for name in ("Scunthorpe", "password", "assistant"):
        assert (await _availability(client, name))["available"] is True, name
    mine = await _availability(client, taken, owner["access_token"])
    assert (mine["reason"], mine["message"]) == ("username_taken", "This is already your username.")


async def test_profanity_in_a_typed_name_is_refused_at_join_and_registration(
    client: httpx.AsyncClient,
) -> None:
    room = await open_room(client)
    guest = await anonymous(client)
    for name in ("Sh1t_Head", "s_h_i_t_hot", "B1tch_Pls"):
        joined = await client.post(
            f"/api/v1/rooms/{room.code}/join", json={"username": name}, headers=bearer(guest)
        )
        assert (joined.status_code, joined.json()["error"]["code"]) == (422, "username_profane"), name
    registered = await client.post(
        "/api/v1/auth/register",
        json={
            "email": f"{uuid.uuid4().hex}@example.com",
            "password": "correct horse",
            "reserved_username": "F_u_c_k_it",
        },
    )
    assert (registered.status_code, registered.json()["error"]["code"]) == (422, "username_profane")
    fine = await join(client, room.code, "Scunthorpe", token=guest)
    assert fine["participant"]["username"] == "Scunthorpe"


async def test_reserve_a_name_later_and_join_with_the_badge(client: httpx.AsyncClient) -> None:
    account = await _register(client)
    token = account["access_token"]
    name = _name("Later")
    reserved = await client.put(
        "/api/v1/auth/me/reserved-username", json={"reserved_username": name}, headers=bearer(token)
    )
    assert reserved.status_code == 200, reserved.text
    assert reserved.json()["identity"]["reserved_username"] == name
    me = await client.get("/api/v1/auth/me", headers=bearer(token))
    assert me.json()["identity"]["reserved_username"] == name

    anonymous_try = await client.put(
        "/api/v1/auth/me/reserved-username",
        json={"reserved_username": _name("Anon")},
        headers=bearer(await anonymous(client)),
    )
    assert (anonymous_try.status_code, anonymous_try.json()["error"]["code"]) == (403, "account_required")
    someone = await _register(client)
    clash = await client.put(
        "/api/v1/auth/me/reserved-username",
        json={"reserved_username": name.lower()},
        headers=bearer(someone["access_token"]),
    )
    assert (clash.status_code, clash.json()["error"]["code"]) == (409, "username_taken")

    # Joining without naming a username uses the reserved one, with the badge.
    room = await open_room(client)
    response = await client.post(f"/api/v1/rooms/{room.code}/join", json={}, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert (response.json()["participant"]["username"], response.json()["participant"]["verified"]) == (
        name,
        True,
    )
    # Anonymous sessions must name one.
    nameless = await client.post(
        f"/api/v1/rooms/{room.code}/join", json={}, headers=bearer(await anonymous(client))
    )
    assert (nameless.status_code, nameless.json()["error"]["code"]) == (422, "username_invalid")

    # Changing the name takes the badge off the participant under the old one, once a day at most.
    other_name = _name("Other")
    other = await client.put(
        "/api/v1/auth/me/reserved-username", json={"reserved_username": other_name}, headers=bearer(token)
    )
    assert other.status_code == 200, other.text
    assert other.json()["identity"]["reserved_username"] == other_name
    mine = await client.get(f"/api/v1/rooms/{room.code}/me", headers=bearer(token))
    assert (mine.json()["participant"]["username"], mine.json()["participant"]["verified"]) == (name, False)
    again = await client.put(
        "/api/v1/auth/me/reserved-username", json={"reserved_username": _name("Third")}, headers=bearer(token)
    )
    assert (again.status_code, again.json()["error"]["code"]) == (429, "username_change_too_soon")


async def test_dual_sessions_and_the_verified_badge_in_messages_and_the_participant_list(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await open_room(client)
    device_anonymous = await anonymous(client)
    name = _name("Dual")

    before = await client.get(f"/api/v1/rooms/{room.code}/me", headers=bearer(device_anonymous))
    assert (before.status_code, before.json()["error"]["code"]) == (404, "not_joined")
    anon = await join(client, room.code, name, token=device_anonymous)
    assert anon["participant"]["verified"] is False

    # Later the same person registers that name (free: no account holds it) and signs in.
    free = await _availability(client, name)
    assert free["available"] is True
    account = await _register(client, name.lower())
    device_account = account["access_token"]
    # Signed in, the device is a new identity in the room: nothing joined yet, no fallback.
    signed_in_before = await client.get(f"/api/v1/rooms/{room.code}/me", headers=bearer(device_account))
    assert signed_in_before.status_code == 404
    verified = await join(client, room.code, name, token=device_account)
    assert verified["participant"]["id"] != anon["participant"]["id"]
    assert verified["participant"]["verified"] is True

    for token, expected in ((device_anonymous, anon), (device_account, verified)):
        mine = await client.get(f"/api/v1/rooms/{room.code}/me", headers=bearer(token))
        assert mine.status_code == 200, mine.text
        assert mine.json()["participant"] == expected["participant"]

    people = await client.get(f"/api/v1/rooms/{room.code}/participants", headers=bearer(anon["room_token"]))
    assert people.status_code == 200, people.text
    badges = {p["id"]: (p["username"].lower(), p["verified"]) for p in people.json()["participants"]}
    assert badges == {
        anon["participant"]["id"]: (name.lower(), False),
        verified["participant"]["id"]: (name.lower(), True),
    }

    # Every message carries the badge of its sender, live and in history.
    watcher = await ChatSocket.open(stack.ws_url, room.code, anon["room_token"])
    try:
        sent = {}
        for member in (verified, anon):
            msg_id = new_id()
            response = await client.post(
                f"/api/v1/rooms/{room.code}/messages",
                json={"client_msg_id": msg_id, "text": "hello"},
                headers=bearer(member["room_token"]),
            )
            assert response.status_code == 201, response.text
            sent[msg_id] = member["participant"]["verified"]
            frame = await watcher.wait_for(
                lambda f, m=msg_id: f["type"] == "message" and f["client_msg_id"] == m
            )
            assert frame["sender"]["verified"] is member["participant"]["verified"]
        stored = await history(client, room.code, verified["room_token"])
        assert {m["client_msg_id"]: m["sender"]["verified"] for m in stored} == sent
    finally:
        await watcher.close()

    # A stranger can no longer take the name in any room.
    stranger = await client.post(
        f"/api/v1/rooms/{room.code}/join", json={"username": name}, headers=bearer(await anonymous(client))
    )
    assert (stranger.status_code, stranger.json()["error"]["code"]) == (409, "username_taken")
    elsewhere = await open_room(client)
    blocked = await client.post(
        f"/api/v1/rooms/{elsewhere.code}/join",
        json={"username": name},
        headers=bearer(await anonymous(client)),
    )
    assert (blocked.status_code, blocked.json()["error"]["code"]) == (409, "username_taken")


async def test_the_openapi_document_describes_the_username_endpoints(client: httpx.AsyncClient) -> None:
    document = (await client.get("/api/v1/openapi.json")).json()
    paths = document["paths"]
    assert "post" in paths["/api/v1/rooms/{code}/usernames/suggest"]
    assert "429" in paths["/api/v1/rooms/{code}/usernames/suggest"]["post"]["responses"]
    assert "get" in paths["/api/v1/auth/usernames/{name}"]
    assert "put" in paths["/api/v1/auth/me/reserved-username"]
    assert "get" in paths["/api/v1/rooms/{code}/participants"]
    assert "get" in paths["/api/v1/rooms/{code}/me"]
    reasons = document["components"]["schemas"]["UsernameAvailability"]["properties"]["reason"]
    assert "username_profane" in str(reasons)

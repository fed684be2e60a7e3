"""Personal mutes through the edge: a participant mutes another one of the same room.

The muted participant's messages leave the muter's history on every device of the muter's identity
(joining again with the same access token gives the same participant), pages still account for
their seqs, and the host's pins stay. The muter's sockets get the list as a `mutes` frame right
after `ready` and after every change, on whichever edge process they are; nobody else learns of it
or sees anything change, and a muted participant's typing no longer reaches the muter. Unmuting
brings the messages back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.e2e.chat import ChatSocket, Frame, anonymous, bearer, documented, join, open_room
from tests.e2e.conftest import Stack
from tests.e2e.test_live_room import warm, ws
from tests.e2e.test_room_events import send_and_ack

MUTE = "/api/v1/rooms/{code}/mutes/{participant_id}"
MUTES = "/api/v1/rooms/{code}/mutes"


async def history_view(
    client: httpx.AsyncClient, code: str, token: str
) -> tuple[dict[int, str], set[int], int]:
    """What a fresh client reads, in small pages: message texts by seq, the seqs the pages account
    for, and the room's last seq."""
    shown: dict[int, str] = {}
    accounted: set[int] = set()
    before: int | None = None
    last = 0
    while True:
        params = {"limit": 2} | ({"before_seq": before} if before else {})
        response = await client.get(f"/api/v1/rooms/{code}/messages", params=params, headers=bearer(token))
        assert response.status_code == 200, response.text
        page = response.json()
        last = max(last, page["last_seq"])
        shown |= {m["seq"]: m["sender"]["participant_id"] for m in page["messages"]}
        accounted |= set(range(page["low_seq"], before or page["last_seq"] + 1))
        if not page["has_more"]:
            return shown, accounted, last
        before = page["low_seq"]


def mutes_frames(socket: ChatSocket) -> list[list[str]]:
    return [f["participant_ids"] for f in socket.frames if f["type"] == "mutes"]


async def latest_mutes(socket: ChatSocket, expected: list[str]) -> None:
    """Wait until the socket's latest `mutes` frame names `expected`."""
    await socket.wait_for(lambda _frame: mutes_frames(socket)[-1:] == [expected])


def shown(socket: ChatSocket) -> list[str]:
    """The texts a client of this socket shows: it hides messages whose sender is in the latest
    `mutes` list it got (the web client's rule), whenever they came."""
    muted = set(mutes_frames(socket)[-1])
    return [f["text"] for f in socket.messages() if f["sender"]["participant_id"] not in muted]


def typists(socket: ChatSocket) -> list[str]:
    return [f["username"] for f in socket.frames if f["type"] == "typing"]


async def typing_heard(typist: ChatSocket, listener: ChatSocket, username: str) -> None:
    """`typist` types (again every half second: the edge relays one per socket every few seconds)
    until `listener` hears `username` typing once more."""
    heard = typists(listener).count(username)
    async with asyncio.timeout(15):
        while typists(listener).count(username) == heard:
            await typist.send_json({"type": "typing"})
            try:
                await listener.wait_for(lambda _f: typists(listener).count(username) > heard, timeout=0.5)
            except TimeoutError:
                continue


def right_after_ready(socket: ChatSocket) -> Frame:
    kinds = [f["type"] for f in socket.frames]
    ready = kinds.index("ready")
    return socket.frames[ready + 1]


async def test_a_mute_hides_messages_for_the_muter_alone_on_every_device(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    room = await open_room(client)
    host = await join(client, room.code, "HostHolly", token=room.host_token)
    alice_access = await anonymous(client)
    alice = await join(client, room.code, "AliceMutes", token=alice_access)
    bob = await join(client, room.code, "BobIsLoud")
    cara = await join(client, room.code, "CaraCalm")
    alice_id, bob_id = alice["participant"]["id"], bob["participant"]["id"]
    sockets = {
        name: await ChatSocket.open(stack.ws_url, room.code, member["room_token"])
        for name, member in (("alice", alice), ("bob", bob), ("cara", cara))
    }
    alice_socket = sockets["alice"]
    await alice_socket.wait_for(lambda f: f["type"] == "mutes")
    assert right_after_ready(alice_socket) == {"type": "mutes", "participant_ids": []}

    bob_seqs = [await send_and_ack(sockets["bob"], f"bob says {n}") for n in range(3)]
    alice_seqs = [await send_and_ack(sockets["alice"], f"alice says {n}") for n in range(2)]
    cara_seqs = [await send_and_ack(sockets["cara"], "cara says hi")]
    pinned = await client.put(
        f"/api/v1/rooms/{room.code}/pins/{bob_seqs[0]}", headers=bearer(host["room_token"])
    )
    assert pinned.status_code == 200, pinned.text

    response = await client.put(
        MUTE.format(code=room.code, participant_id=bob_id), headers=bearer(alice["room_token"])
    )
    muted = documented(openapi, "PUT", MUTE, response)
    assert response.status_code == 200
    assert muted["changed"] is True and muted["participant_id"] == bob_id
    assert [(m["participant_id"], m["username"]) for m in muted["mutes"]] == [(bob_id, "BobIsLoud")]
    await latest_mutes(alice_socket, [bob_id])
    # Muting again changes nothing.
    again = await client.put(
        MUTE.format(code=room.code, participant_id=bob_id), headers=bearer(alice["room_token"])
    )
    assert again.status_code == 200 and again.json()["changed"] is False

    # Alice's second device: the same identity joins again and is the same participant.
    second = await join(client, room.code, "AliceMutes", token=alice_access)
    assert second["participant"]["id"] == alice_id
    second_socket = await ChatSocket.open(stack.ws_url, room.code, second["room_token"])
    await second_socket.wait_for(lambda f: f["type"] == "mutes")
    assert right_after_ready(second_socket) == {"type": "mutes", "participant_ids": [bob_id]}
    listed = await client.get(MUTES.format(code=room.code), headers=bearer(second["room_token"]))
    assert [m["participant_id"] for m in documented(openapi, "GET", MUTES, listed)["mutes"]] == [bob_id]

    # From either device, Alice's history leaves Bob out yet accounts for every seq: no gap shows.
    for token in (alice["room_token"], second["room_token"]):
        shown, accounted, last = await history_view(client, room.code, token)
        assert sorted(shown) == sorted(alice_seqs + cara_seqs)
        assert bob_id not in shown.values()
        assert accounted == set(range(1, last + 1))
    # The host's pin of Bob's message is the room's: it stays on Alice's board.
    newest = (
        await client.get(f"/api/v1/rooms/{room.code}/messages", headers=bearer(alice["room_token"]))
    ).json()
    assert [pin["message"]["seq"] for pin in newest["board"]["pins"]] == [bob_seqs[0]]

    # Nobody else's view changes, and nobody else learns of the mute.
    for member in (cara, bob, host):
        shown, _, _ = await history_view(client, room.code, member["room_token"])
        assert sorted(shown) == sorted(bob_seqs + alice_seqs + cara_seqs)
        others = await client.get(MUTES.format(code=room.code), headers=bearer(member["room_token"]))
        assert others.status_code == 200 and others.json()["mutes"] == []
    for name in ("bob", "cara"):
        assert mutes_frames(sockets[name]) == [[]]
    # Alice's first socket heard of the change once (the second call changed nothing, so it tells
    # nobody); her second socket started with the list.
    assert mutes_frames(alice_socket) == [[], [bob_id]]
    assert mutes_frames(second_socket) == [[bob_id]]

    # Live frames carry the sender, so Alice's client can hide Bob's new messages by the list.
    live = await send_and_ack(sockets["bob"], "bob again")
    frame = await alice_socket.wait_for(lambda f: f["type"] == "message" and f["seq"] == live)
    assert frame["sender"]["participant_id"] == bob_id

    # Unmuting brings Bob back, on both of Alice's sockets and in her history.
    response = await client.delete(
        MUTE.format(code=room.code, participant_id=bob_id), headers=bearer(second["room_token"])
    )
    unmuted = documented(openapi, "DELETE", MUTE, response)
    assert unmuted["changed"] is True and unmuted["mutes"] == []
    for socket in (alice_socket, second_socket):
        await latest_mutes(socket, [])
    shown, accounted, last = await history_view(client, room.code, alice["room_token"])
    assert sorted(shown) == sorted([*bob_seqs, *alice_seqs, *cara_seqs, live])
    assert accounted == set(range(1, last + 1))

    for socket in (*sockets.values(), second_socket):
        await socket.close()


async def test_muting_oneself_or_a_stranger_is_refused(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    room, other_room = await open_room(client), await open_room(client)
    alice = await join(client, room.code, "AliceAlone")
    stranger = await join(client, other_room.code, "StrangerSam")
    headers = bearer(alice["room_token"])

    cases = [
        (alice["participant"]["id"], 422, "cannot_mute_self"),
        (stranger["participant"]["id"], 404, "participant_not_found"),
        ("00000000-0000-4000-8000-000000000000", 404, "participant_not_found"),
    ]
    for participant_id, status, code in cases:
        response = await client.put(
            MUTE.format(code=room.code, participant_id=participant_id), headers=headers
        )
        assert response.status_code == status, response.text
        assert documented(openapi, "PUT", MUTE, response)["error"]["code"] == code
    malformed = await client.put(
        MUTE.format(code=room.code, participant_id="not-a-participant"), headers=headers
    )
    assert malformed.status_code == 422
    # A room token for another room mutes nothing here; no token, nothing at all.
    wrong_room = await client.put(
        MUTE.format(code=room.code, participant_id=alice["participant"]["id"]),
        headers=bearer(stranger["room_token"]),
    )
    assert wrong_room.status_code == 403, wrong_room.text
    anonymous_call = await client.get(MUTES.format(code=room.code))
    assert anonymous_call.status_code == 401
    listed = await client.get(MUTES.format(code=room.code), headers=headers)
    assert listed.json()["mutes"] == []


async def test_a_mute_made_through_one_edge_reaches_the_muters_sockets_on_another(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    """Alice mutes Bob through edge 1, where she has no socket open: her socket on edge 2 learns the
    list at once, hides Bob's new messages and no longer gets his typing, while Cara, beside her on
    edge 2, sees and hears Bob as before. Unmuting through edge 1 brings Bob back on edge 2."""
    edge_2 = await stack.asecond_edge()
    room = await open_room(client)
    alice = await join(client, room.code, "AliceOnTwo")
    bob = await join(client, room.code, "BobOnOne")
    cara = await join(client, room.code, "CaraOnTwo")
    bob_id = bob["participant"]["id"]
    bob_socket = await ChatSocket.open(stack.ws_url, room.code, bob["room_token"])
    alice_socket = await ChatSocket.open(ws(edge_2), room.code, alice["room_token"])
    cara_socket = await ChatSocket.open(ws(edge_2), room.code, cara["room_token"])
    sockets = (bob_socket, alice_socket, cara_socket)
    try:
        await warm(list(sockets), client, room.code, cara["room_token"])
        await send_and_ack(bob_socket, "bob before the mute")
        await typing_heard(bob_socket, alice_socket, "BobOnOne")
        assert "bob before the mute" in shown(alice_socket)

        muted = await client.put(
            MUTE.format(code=room.code, participant_id=bob_id), headers=bearer(alice["room_token"])
        )
        assert muted.status_code == 200 and muted.json()["changed"] is True, muted.text
        await latest_mutes(alice_socket, [bob_id])
        assert mutes_frames(alice_socket) == [[], [bob_id]]

        # Bob's new message reaches edge 2 (Cara sees it) but Alice's client hides it, like the old one.
        seq = await send_and_ack(bob_socket, "bob while muted")
        for socket in (alice_socket, cara_socket):
            await socket.wait_for_seq(seq)
        assert "bob while muted" in shown(cara_socket)
        assert not [text for text in shown(alice_socket) if text.startswith("bob")]
        # Bob types: Cara hears it on edge 2, Alice does not. Signals keep their order, so Cara's
        # typing, heard by Alice, comes after Bob's would have.
        alice_heard = typists(alice_socket).count("BobOnOne")
        await typing_heard(bob_socket, cara_socket, "BobOnOne")
        await typing_heard(cara_socket, alice_socket, "CaraOnTwo")
        assert typists(alice_socket).count("BobOnOne") == alice_heard

        unmuted = await client.delete(
            MUTE.format(code=room.code, participant_id=bob_id), headers=bearer(alice["room_token"])
        )
        assert unmuted.status_code == 200 and unmuted.json()["changed"] is True, unmuted.text
        await latest_mutes(alice_socket, [])
        assert mutes_frames(alice_socket) == [[], [bob_id], []]
        seq = await send_and_ack(bob_socket, "bob after the unmute")
        await alice_socket.wait_for_seq(seq)
        assert [text for text in shown(alice_socket) if text.startswith("bob")] == [
            "bob before the mute",
            "bob while muted",
            "bob after the unmute",
        ]
        await typing_heard(bob_socket, alice_socket, "BobOnOne")

        # The mute was Alice's alone: nobody else's socket ever got a list but their own empty one.
        for socket in (bob_socket, cara_socket):
            assert mutes_frames(socket) == [[]]
    finally:
        for socket in sockets:
            await socket.close()

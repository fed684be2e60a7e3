"""Personal mutes through the edge: a participant mutes another one of the same room.

The muted participant's messages leave the muter's history on every device of the muter's identity
(joining again with the same access token gives the same participant), pages still account for
their seqs, and the host's pins stay. The muter's sockets get the list as a `mutes` frame right
after `ready` and after every change; nobody else learns of it or sees anything change. Unmuting
brings the messages back.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.chat import ChatSocket, Frame, anonymous, bearer, documented, join, open_room
from tests.e2e.conftest import Stack
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
    # Alice's first socket heard of both calls (the second changed nothing), the second of none.
    assert mutes_frames(alice_socket) == [[], [bob_id], [bob_id]]
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

"""Values at and past the documented bounds, through the edge to the real services.

The largest seq a client may send reaches messaging and gets its ordinary answer; one past it, or past
int64, is a 422 at the edge; a socket that was sent nonsense still sends and receives; a username
with a line break gets the documented answer. Every JSON answer is checked against the OpenAPI
document the edge serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from chatpop_edge.models import MAX_SEQ
from tests.e2e.chat import ChatSocket, anonymous, bearer, create_room, documented, join, new_id

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack


async def test_seqs_at_the_bound_reach_messaging_and_past_it_stop_at_the_edge(
    client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    host = await anonymous(client)
    room = await create_room(client, host)
    token = (await join(client, room["code"], "BoundHost", host))["room_token"]
    messages = f"/api/v1/rooms/{room['code']}/messages"
    template = "/api/v1/rooms/{code}/messages"

    page = await client.get(messages, params={"before_seq": MAX_SEQ}, headers=bearer(token))
    assert documented(openapi, "GET", template, page)["messages"] == []
    for before_seq in (MAX_SEQ + 1, 2**63):
        refused = await client.get(messages, params={"before_seq": before_seq}, headers=bearer(token))
        assert refused.status_code == 422
        assert documented(openapi, "GET", template, refused)["error"]["message"].startswith(
            "query.before_seq:"
        )

    far = await client.post(
        messages,
        json={"client_msg_id": new_id(), "text": "hi", "reply_to_seq": MAX_SEQ},
        headers=bearer(token),
    )
    assert far.status_code == 422
    assert documented(openapi, "POST", template, far)["error"]["code"] == "reply_target_not_found"
    for reply_to_seq in (MAX_SEQ + 1, 2**63):
        refused = await client.post(
            messages,
            json={"client_msg_id": new_id(), "text": "hi", "reply_to_seq": reply_to_seq},
            headers=bearer(token),
        )
        assert refused.status_code == 422
        assert documented(openapi, "POST", template, refused)["error"]["message"].startswith("reply_to_seq:")

    read = await client.post(
        f"/api/v1/rooms/{room['code']}/read", json={"seq": MAX_SEQ}, headers=bearer(token)
    )
    assert read.status_code == 200, read.text
    documented(openapi, "POST", "/api/v1/rooms/{code}/read", read)


async def test_a_socket_sent_nonsense_still_sends_and_receives(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    host = await anonymous(client)
    room = await create_room(client, host)
    alice = (await join(client, room["code"], "BoundAlice", host))["room_token"]
    bob = (await join(client, room["code"], "BoundBob"))["room_token"]
    socket = await ChatSocket.open(stack.ws_url, room["code"], alice)
    other = await ChatSocket.open(stack.ws_url, room["code"], bob)
    try:
        bad = await socket.send("hi", reply_to_seq=2**63)
        assert (await socket.ack_or_error(bad))["code"] == "invalid_frame"
        await socket.send_json({"type": "resume", "after_seq": 2**63})
        await socket.send_json({"type": "send", "client_msg_id": None, "text": {"deep": [[1e300]]}})
        # Beyond the room's newest message: reload, then live as before.
        await socket.send_json({"type": "resume", "after_seq": MAX_SEQ})
        await socket.wait_for(lambda f: f["type"] == "reload")

        good = await socket.send("still here")
        ack = await socket.ack_or_error(good)
        assert ack["type"] == "ack", ack
        await other.wait_for_seq(ack["seq"])
        from_bob = await other.send("and you hear me")
        seq = (await other.ack_or_error(from_bob))["seq"]
        await socket.wait_for_seq(seq)
        errors = [f["code"] for f in socket.frames if f["type"] == "error"]
        assert errors == ["invalid_frame"] * 3
    finally:
        await socket.ws.close()
        await other.ws.close()


@pytest.mark.parametrize(
    ("name", "available"),
    [("Bound%0Aname", False), ("line%0A%0Abreaks", False), ("nul%00name", False), ("with/slash", False)],
)
async def test_a_username_with_a_line_break_gets_the_documented_answer(
    client: httpx.AsyncClient, openapi: dict[str, Any], name: str, available: bool
) -> None:
    token = await anonymous(client)
    response = await client.get(f"/api/v1/auth/usernames/{name}", headers=bearer(token))
    assert response.status_code == 200, response.text
    body = documented(openapi, "GET", "/api/v1/auth/usernames/{name}", response)
    assert (body["available"], body["reason"]) == (available, "username_invalid")

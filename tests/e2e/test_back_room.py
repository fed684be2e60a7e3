"""The Back Room through the edge: a host who can receive money opens one, seat holders and the host
enter it and chat there over the ordinary room routes and WebSocket with the Back Room's code, and
nobody else gets in; a removed holder's live Back Room socket closes with 4403 `seat_removed`, and so
does a holder's banned in the main room, and their tokens stop working.

Seats are granted as payments grants them after a payment (rooms' GrantSeat with payments' own
service credential), and once through a real test-mode order, so that a removal's refund reaches it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatpop.identity.v1 import identity_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.service_auth import ServiceCredentials
from tests.e2e.chat import ChatSocket, anonymous, bearer, create_room, documented, join
from tests.e2e.money import error_code, order_in, register, until

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

PROMPTLY = 10.0


async def _onboarded_host(http: httpx.AsyncClient) -> str:
    """A registered host whose payouts can receive money (the test mode's onboarding)."""
    access = await register(http, "backroom")
    for path, body in (
        ("/api/v1/payments/payout-account/onboarding", {}),
        ("/api/v1/payments/payout-account/test-complete", None),
    ):
        done = await http.post(path, json=body, headers=bearer(access))
        assert done.status_code == 200, done.text
    return access


async def _back_room_room(
    http: httpx.AsyncClient, openapi: dict[str, Any], host: str, seats: int
) -> dict[str, Any]:
    created = await http.post(
        "/api/v1/rooms",
        json={
            "name": "Back Room e2e",
            "back_room": {"enabled": True, "seat_price_cents": 500, "seat_limit": seats},
        },
        headers=bearer(host),
    )
    assert created.status_code == 201, created.text
    return dict(documented(openapi, "POST", "/api/v1/rooms", created))


async def _closed(socket: ChatSocket, timeout: float = PROMPTLY) -> tuple[int | None, str | None]:
    async with socket.changed:
        await asyncio.wait_for(socket.changed.wait_for(lambda: socket.closed), timeout=timeout)
    return socket.ws.close_code, socket.ws.close_reason


async def _refused_socket(ws_url: str, code: str, token: str) -> tuple[int | None, str | None]:
    async with connect(f"{ws_url}/ws/v1/rooms/{code}?token={token}", open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), timeout=10)
        return ws.close_code, ws.close_reason


async def _enter(http: httpx.AsyncClient, code: str, token: str) -> httpx.Response:
    return await http.post(f"/api/v1/rooms/{code}/back-room/enter", headers=bearer(token))


async def _messages(http: httpx.AsyncClient, code: str, token: str) -> httpx.Response:
    return await http.get(f"/api/v1/rooms/{code}/messages", headers=bearer(token))


async def test_holders_meet_the_host_in_the_back_room_and_nobody_else_gets_in(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    # Paid features need payouts that can receive money, and an account.
    not_onboarded = await register(client, "nopayouts")
    refused = await client.post(
        "/api/v1/rooms",
        json={"name": "x", "back_room": {"enabled": True, "seat_price_cents": 500, "seat_limit": 2}},
        headers=bearer(not_onboarded),
    )
    assert error_code(refused) == (409, "payments_not_enabled"), refused.text
    plain = await create_room(client, not_onboarded)
    turned_on = await client.patch(
        f"/api/v1/rooms/{plain['code']}",
        json={"back_room": {"enabled": True, "seat_price_cents": 500, "seat_limit": 2}},
        headers=bearer(not_onboarded),
    )
    assert error_code(turned_on) == (409, "payments_not_enabled"), turned_on.text
    anonymous_host = await client.post(
        "/api/v1/rooms",
        json={"name": "x", "back_room": {"enabled": True, "seat_price_cents": 500, "seat_limit": 2}},
        headers=bearer(await anonymous(client)),
    )
    assert error_code(anonymous_host) == (403, "anonymous_host"), anonymous_host.text

    host = await _onboarded_host(client)
    room = await _back_room_room(client, openapi, host, seats=3)
    code = room["code"]
    assert room["back_room"]["enabled"] and room["back_room"]["seats_left"] == 3
    assert room["back_room"]["back_room_id"]
    public = await client.get(f"/api/v1/rooms/{code}")
    assert public.status_code == 200 and public.json()["back_room"]["back_room_id"] is None

    host_main = await join(client, code, "HostBeatrix", token=host)
    holder = await join(client, code, "HolderHugo")
    banned_holder = await join(client, code, "HolderBanned")
    stranger = await join(client, code, "StrangerSam")
    # Another host's room with its own Back Room, and a holder there.
    other_host = await _onboarded_host(client)
    other_room = await _back_room_room(client, openapi, other_host, seats=2)
    other_holder = await join(client, other_room["code"], "OtherOlga")

    secret = stack.specs["rooms"].env["SERVICE_TOKEN_SECRET"]
    async with (
        grpc.aio.insecure_channel(stack.address("identity")) as identity_channel,
        grpc.aio.insecure_channel(stack.address("rooms")) as rooms_channel,
    ):
        payments = ServiceCredentials(
            identity_pb2_grpc.IdentityServiceStub(identity_channel), "payments", secret
        )
        rooms = rooms_pb2_grpc.RoomsServiceStub(rooms_channel)
        for room_id, person in (
            (room["id"], holder),
            (room["id"], banned_holder),
            (other_room["id"], other_holder),
        ):
            granted = await rooms.GrantSeat(
                rooms_pb2.GrantSeatRequest(
                    order_id=f"e2e-{uuid.uuid4().hex}",
                    room_id=room_id,
                    participant_id=person["participant"]["id"],
                    price_cents=500,
                ),
                metadata=await payments.metadata(),
                timeout=10,
            )
            assert granted.outcome == rooms_pb2.SEAT_OUTCOME_GRANTED

    # The host and the holders enter; the Back Room is a room with its own code.
    entries = {}
    for name, person in (("host", host_main), ("holder", holder), ("banned", banned_holder)):
        entered = await _enter(client, code, person["room_token"])
        assert entered.status_code == 200, entered.text
        entries[name] = documented(openapi, "POST", "/api/v1/rooms/{code}/back-room/enter", entered)
    back = entries["holder"]["back_room"]
    back_code = back["code"]
    assert (
        back_code != code
        and back["parent_room_id"] == room["id"]
        and back["id"] == room["back_room"]["back_room_id"]
    )
    assert entries["holder"]["participant"]["username"] == "HolderHugo"
    assert entries["host"]["participant"]["is_host"] is True
    other_entry = await _enter(client, other_room["code"], other_holder["room_token"])
    assert other_entry.status_code == 200, other_entry.text
    other_back = other_entry.json()

    seats = await client.get(f"/api/v1/rooms/{code}/back-room/seats", headers=bearer(host))
    listed = documented(openapi, "GET", "/api/v1/rooms/{code}/back-room/seats", seats)
    assert [s["username"] for s in listed["seats"]] == ["HolderHugo", "HolderBanned"]
    assert listed["back_room"]["seats_left"] == 1
    no_list = await client.get(
        f"/api/v1/rooms/{code}/back-room/seats", headers=bearer(stranger["room_token"])
    )
    assert error_code(no_list) == (403, "no_seat")

    host_socket = await ChatSocket.open(stack.ws_url, back_code, entries["host"]["room_token"])
    holder_socket = await ChatSocket.open(stack.ws_url, back_code, entries["holder"]["room_token"])
    banned_socket = await ChatSocket.open(stack.ws_url, back_code, entries["banned"]["room_token"])
    main_socket = await ChatSocket.open(stack.ws_url, code, stranger["room_token"])
    sockets = [host_socket, holder_socket, banned_socket, main_socket]
    try:
        # They chat there like in any room; the main room sees none of it.
        sent = await holder_socket.send("just us in here")
        assert (await holder_socket.ack_or_error(sent))["type"] == "ack"
        heard = await host_socket.wait_for(
            lambda f: f["type"] == "message" and f["text"] == "just us in here"
        )
        assert heard["sender"]["username"] == "HolderHugo"
        main_history = await _messages(client, code, stranger["room_token"])
        assert all(m["text"] != "just us in here" for m in main_history.json()["messages"])

        # Nobody else gets in: not a participant without a seat, not with a main-room token, not with
        # another room's Back Room.
        assert error_code(await _enter(client, code, stranger["room_token"])) == (403, "no_seat")
        assert error_code(await _enter(client, code, other_holder["room_token"])) == (403, "wrong_room")
        # An access token is no main-room token.
        assert error_code(await _enter(client, code, await anonymous(client)))[0] == 401
        hidden = await client.get(f"/api/v1/rooms/{back_code}", headers=bearer(stranger["room_token"]))
        assert error_code(hidden) == (404, "room_not_found")
        not_joinable = await client.post(
            f"/api/v1/rooms/{back_code}/join",
            json={"username": "Gatecrash"},
            headers=bearer(await anonymous(client)),
        )
        assert error_code(not_joinable) == (404, "room_not_found")
        for token in (stranger["room_token"], holder["room_token"], other_back["room_token"]):
            assert error_code(await _messages(client, back_code, token)) == (403, "wrong_room")
            assert await _refused_socket(stack.ws_url, back_code, token) == (4403, "wrong_room")
        seen = await client.get(f"/api/v1/rooms/{back_code}", headers=bearer(entries["holder"]["room_token"]))
        assert seen.status_code == 200 and seen.json()["parent_room_id"] == room["id"]

        # The host removes a seat without a refund: the holder's Back Room closes at once.
        removed = await client.delete(
            f"/api/v1/rooms/{code}/back-room/seats/{holder['participant']['id']}", headers=bearer(host)
        )
        body = documented(openapi, "DELETE", "/api/v1/rooms/{code}/back-room/seats/{participant_id}", removed)
        assert (body["changed"], body["refunded"], body["seat"]["username"]) == (True, False, "HolderHugo")
        assert body["back_room"]["seats_left"] == 2
        assert await _closed(holder_socket) == (4403, "seat_removed")
        assert any(f["type"] == "error" and f["code"] == "seat_removed" for f in holder_socket.frames)
        # The main room is told a seat came free.
        update = await main_socket.wait_for(
            lambda f: f["type"] == "room_updated" and f["room"]["back_room"]["seats_taken"] == 1
        )
        assert update["room"]["back_room"]["back_room_id"] is None
        old_token = entries["holder"]["room_token"]
        assert error_code(await _messages(client, back_code, old_token)) == (403, "seat_removed")
        assert error_code(await client.get(f"/api/v1/rooms/{back_code}", headers=bearer(old_token))) == (
            403,
            "seat_removed",
        )
        assert await _refused_socket(stack.ws_url, back_code, old_token) == (4403, "seat_removed")
        assert error_code(await _enter(client, code, holder["room_token"])) == (403, "no_seat")
        again = await client.delete(
            f"/api/v1/rooms/{code}/back-room/seats/{holder['participant']['id']}", headers=bearer(host)
        )
        assert again.status_code == 200 and again.json()["changed"] is False
        not_host = await client.delete(
            f"/api/v1/rooms/{code}/back-room/seats/{banned_holder['participant']['id']}",
            headers=bearer(stranger["room_token"]),
        )
        assert error_code(not_host) == (403, "not_host")

        # A ban in the main room takes the seat (no refund) and closes the Back Room for them too.
        banned = await client.post(
            f"/api/v1/rooms/{code}/bans",
            json={"participant_id": banned_holder["participant"]["id"], "tier": "session"},
            headers=bearer(host),
        )
        assert banned.status_code == 201, banned.text
        assert (await _closed(banned_socket))[0] == 4403
        banned_token = entries["banned"]["room_token"]
        assert error_code(await _messages(client, back_code, banned_token)) == (403, "banned")
        assert (await _refused_socket(stack.ws_url, back_code, banned_token))[0] == 4403
        assert error_code(await _enter(client, code, banned_holder["room_token"]))[0] == 403
        left = await client.get(f"/api/v1/rooms/{code}/back-room/seats", headers=bearer(host))
        assert left.json()["seats"] == [] and left.json()["back_room"]["seats_left"] == 3

        # The host carries on in the Back Room.
        still = await host_socket.send("still here")
        assert (await host_socket.ack_or_error(still))["type"] == "ack"
        assert not host_socket.closed
    finally:
        await asyncio.gather(*(socket.close() for socket in sockets))


async def test_a_paid_seat_removed_with_a_refund_is_refunded(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    host = await _onboarded_host(client)
    room = await _back_room_room(client, openapi, host, seats=1)
    code = room["code"]
    fan = await join(client, code, "PayingFan")
    ordered = await client.post(
        f"/api/v1/rooms/{code}/orders",
        json={"idempotency_key": uuid.uuid4().hex, "seat": {}},
        headers=bearer(fan["room_token"]),
    )
    assert ordered.status_code == 201, ordered.text
    order_id = ordered.json()["order"]["id"]
    confirmed = await client.post(
        f"/api/v1/payments/orders/{order_id}/test-confirm",
        json={"outcome": "succeed"},
        headers=bearer(fan["room_token"]),
    )
    assert confirmed.status_code == 200, confirmed.text
    await order_in(client, fan["room_token"], order_id, "fulfilled")
    entered = await _enter(client, code, fan["room_token"])
    assert entered.status_code == 200, entered.text
    socket = await ChatSocket.open(
        stack.ws_url, entered.json()["back_room"]["code"], entered.json()["room_token"]
    )
    try:
        removed = await client.delete(
            f"/api/v1/rooms/{code}/back-room/seats/{fan['participant']['id']}",
            params={"refund": "true"},
            headers=bearer(host),
        )
        assert removed.status_code == 200, removed.text
        assert (removed.json()["changed"], removed.json()["refunded"]) == (True, True)
        assert await _closed(socket) == (4403, "seat_removed")
        refunded = await order_in(client, fan["room_token"], order_id, "refunding", "refunded")
        assert refunded["refund_reason"] == "seat_removed"
        # Sending the removal again refunds nothing twice.
        again = await client.delete(
            f"/api/v1/rooms/{code}/back-room/seats/{fan['participant']['id']}",
            params={"refund": "true"},
            headers=bearer(host),
        )
        assert again.status_code == 200 and again.json()["changed"] is False

        async def settled() -> dict[str, Any] | None:
            answer = await client.get(
                f"/api/v1/payments/orders/{order_id}", headers=bearer(fan["room_token"])
            )
            current = dict(answer.json()["order"])
            return current if current["state"] == "refunded" else None

        final = await until(settled, "the seat's refund settling")
        assert final["amount_cents"] == 500
    finally:
        await socket.close()

"""Chat end to end: real services as processes, real Postgres and Redis, driven through the edge."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import redis.asyncio as aioredis

from tests.e2e.chat import ChatSocket, anonymous, bearer, history, join, new_id, open_room

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack


async def test_two_participants_exchange_messages(stack: Stack, client: httpx.AsyncClient) -> None:
    room = await open_room(client)
    alice = await join(client, room.code, "Alice_1")
    bob = await join(client, room.code, "Bobby_2")
    a = await ChatSocket.open(stack.ws_url, room.code, alice["room_token"])
    b = await ChatSocket.open(stack.ws_url, room.code, bob["room_token"])
    try:
        hello = await a.send("hello <b>Bob</b>")
        ack = await a.ack_or_error(hello)
        assert ack["type"] == "ack" and ack["seq"] == 1
        received = await b.wait_for(lambda f: f["type"] == "message" and f["client_msg_id"] == hello)
        assert received["seq"] == 1
        assert received["text"] == "hello <b>Bob</b>"
        assert received["sender"]["username"] == "Alice_1"
        assert received["sender"]["is_host"] is False

        reply = await b.send("hi Alice", reply_to_seq=1)
        assert (await b.ack_or_error(reply))["seq"] == 2
        answer = await a.wait_for(lambda f: f["type"] == "message" and f["client_msg_id"] == reply)
        assert answer["reply_to_seq"] == 1
        assert answer["sender"]["username"] == "Bobby_2"
        # Each side also sees its own message exactly once, in seq order.
        await a.wait_for_seq(2)
        await b.wait_for_seq(2)
        assert a.seqs() == [1, 2]
        assert b.seqs() == [1, 2]
    finally:
        await a.close()
        await b.close()


async def test_a_busy_room_reaches_every_socket_once_and_in_order(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    """Four writers at once (their sends commit in groups), then one at a time (each message alone),
    with typing in between so that a socket often has a frame queued when a message comes: every
    socket gets every message exactly once, in seq order, and every writer an ack for each send."""
    room = await open_room(client)
    members = [await join(client, room.code, f"Busy_{index}") for index in range(6)]
    sockets = [await ChatSocket.open(stack.ws_url, room.code, member["room_token"]) for member in members]
    writers = sockets[:4]
    try:

        async def burst(socket: ChatSocket, index: int) -> list[str]:
            sent = []
            for number in range(8):
                sent.append(await socket.send(f"from {index}, number {number}"))
                await socket.send_json({"type": "typing"})
            return sent

        bursts = await asyncio.gather(*(burst(socket, index) for index, socket in enumerate(writers)))
        sent = []
        for socket, ids in zip(writers, bursts, strict=True):
            for client_msg_id in ids:
                assert (await socket.ack_or_error(client_msg_id))["type"] == "ack"
                sent.append(client_msg_id)
        for turn in range(12):
            socket = writers[turn % 4]
            await writers[(turn + 1) % 4].send_json({"type": "typing"})
            client_msg_id = await socket.send(f"turn {turn}")
            assert (await socket.ack_or_error(client_msg_id))["type"] == "ack"
            sent.append(client_msg_id)

        acks = [frame for socket in writers for frame in socket.frames if frame["type"] == "ack"]
        assert sorted(frame["client_msg_id"] for frame in acks) == sorted(sent)
        total = len(sent)
        assert sorted(frame["seq"] for frame in acks) == list(range(1, total + 1))
        for socket in sockets:
            await socket.wait_for_seq(total)
        for socket in sockets:
            assert socket.seqs() == list(range(1, total + 1))
            assert sorted(frame["client_msg_id"] for frame in socket.messages()) == sorted(sent)
    finally:
        for socket in sockets:
            await socket.close()


async def test_host_messages_are_marked(stack: Stack, client: httpx.AsyncClient) -> None:
    room = await open_room(client)
    host = await join(client, room.code, "TheHost", token=room.host_token)
    assert host["participant"]["is_host"] is True
    guest = await join(client, room.code, "Guest_1")
    h = await ChatSocket.open(stack.ws_url, room.code, host["room_token"])
    g = await ChatSocket.open(stack.ws_url, room.code, guest["room_token"])
    try:
        sent = await h.send("welcome")
        frame = await g.wait_for(lambda f: f["type"] == "message" and f["client_msg_id"] == sent)
        assert frame["sender"]["is_host"] is True
    finally:
        await h.close()
        await g.close()


async def test_reconnect_resumes_without_gaps_or_duplicates(stack: Stack, client: httpx.AsyncClient) -> None:
    room = await open_room(client)
    writer = await join(client, room.code, "Writer_1")
    reader = await join(client, room.code, "Reader_1")
    w = await ChatSocket.open(stack.ws_url, room.code, writer["room_token"])
    r = await ChatSocket.open(stack.ws_url, room.code, reader["room_token"])
    total = 60
    stop_after = 15

    async def keep_sending() -> None:
        for i in range(total):
            msg_id = await w.send(f"message {i}")
            assert (await w.ack_or_error(msg_id))["type"] == "ack"
            await asyncio.sleep(0.01)

    sender = asyncio.create_task(keep_sending())
    try:
        await r.wait_for_seq(stop_after)
        seen = r.seqs()
        await r.close()
        # Messages keep flowing while the reader is away.
        await asyncio.sleep(0.2)
        r = await ChatSocket.open(stack.ws_url, room.code, reader["room_token"])
        await r.send_json({"type": "resume", "after_seq": seen[-1]})
        await sender
        await r.wait_for_seq(total)
        await asyncio.sleep(0.3)
        combined = seen + r.seqs()
        assert len(combined) == len(set(combined)), "a duplicate after resume"
        assert sorted(combined) == list(range(1, total + 1)), "a gap after resume"
    finally:
        sender.cancel()
        await w.close()
        await r.close()


async def test_resume_far_behind_asks_for_reload_or_replays_exactly(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await open_room(client)
    member = await join(client, room.code, "Member_1")
    s = await ChatSocket.open(stack.ws_url, room.code, member["room_token"])
    try:
        for i in range(5):
            assert (await s.ack_or_error(await s.send(f"m{i}")))["type"] == "ack"
        again = await ChatSocket.open(stack.ws_url, room.code, member["room_token"])
        await again.send_json({"type": "resume", "after_seq": 2})
        await again.wait_for_seq(5)
        assert again.seqs() == [3, 4, 5]
        await again.close()
    finally:
        await s.close()


async def test_retried_send_yields_one_message(stack: Stack, client: httpx.AsyncClient) -> None:
    room = await open_room(client)
    member = await join(client, room.code, "Retry_1")
    s = await ChatSocket.open(stack.ws_url, room.code, member["room_token"])
    try:
        msg_id = new_id()
        for _ in range(3):
            await s.send("only once", client_msg_id=msg_id)
        await s.wait_for(
            lambda f: (
                len([x for x in s.frames if x.get("client_msg_id") == msg_id and x["type"] == "ack"]) == 3
            )
        )
        acks = [f for f in s.frames if f["type"] == "ack" and f["client_msg_id"] == msg_id]
        assert {a["seq"] for a in acks} == {1}
        # The same id over REST is still the same message.
        response = await client.post(
            f"/api/v1/rooms/{room.code}/messages",
            json={"client_msg_id": msg_id, "text": "only once"},
            headers=bearer(member["room_token"]),
        )
        assert response.status_code in (200, 201), response.text
        assert response.json()["created"] is False
        assert response.json()["message"]["seq"] == 1
        stored = await history(client, room.code, member["room_token"])
        assert [m["client_msg_id"] for m in stored] == [msg_id]
    finally:
        await s.close()


async def test_private_room_rejects_wrong_code_and_locks_out(client: httpx.AsyncClient) -> None:
    room = await open_room(client, visibility="private", access_code="sesame-42")
    token = await anonymous(client)
    url = f"/api/v1/rooms/{room.code}/join"
    intruder = {**bearer(token), "X-Forwarded-For": "203.0.113.7"}

    missing = await client.post(url, json={"username": "Intruder1"}, headers=intruder)
    assert missing.status_code in (401, 403), missing.text
    assert missing.json()["error"]["code"] == "access_code_required"
    refused = 0
    while True:
        wrong = await client.post(
            url, json={"username": "Intruder1", "access_code": "guess"}, headers=intruder
        )
        if wrong.status_code == 429:
            break
        assert wrong.status_code == 403, wrong.text
        assert wrong.json()["error"]["code"] == "invalid_access_code"
        refused += 1
        assert refused <= 5, "no lockout after the attempt limit"
    assert wrong.json()["error"]["code"] == "too_many_attempts"
    assert int(wrong.headers["Retry-After"]) > 0
    # Even the right code is refused while locked out.
    right = await client.post(
        url, json={"username": "Intruder1", "access_code": "sesame-42"}, headers=intruder
    )
    assert right.status_code == 429
    # Someone else, from another address, with the right code gets in.
    friend_token = await anonymous(client)
    friend = await client.post(
        url,
        json={"username": "Friend_1", "access_code": "sesame-42"},
        headers={**bearer(friend_token), "X-Forwarded-For": "198.51.100.9"},
    )
    assert friend.status_code == 200, friend.text
    assert friend.json()["participant"]["username"] == "Friend_1"


async def test_room_token_of_one_room_is_rejected_in_another(stack: Stack, client: httpx.AsyncClient) -> None:
    room_a = await open_room(client)
    room_b = await open_room(client)
    member_a = await join(client, room_a.code, "Member_A")
    token_a = member_a["room_token"]

    listed = await client.get(f"/api/v1/rooms/{room_b.code}/messages", headers=bearer(token_a))
    assert listed.status_code == 403
    assert listed.json()["error"]["code"] == "wrong_room"
    posted = await client.post(
        f"/api/v1/rooms/{room_b.code}/messages",
        json={"client_msg_id": new_id(), "text": "sneaky"},
        headers=bearer(token_a),
    )
    assert posted.status_code == 403

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    ws = await connect(f"{stack.ws_url}/ws/v1/rooms/{room_b.code}?token={token_a}")
    try:
        await asyncio.wait_for(ws.recv(), 5)
        raise AssertionError("the socket for room B accepted room A's token")
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 4403
    member_b = await join(client, room_b.code, "Member_B")
    assert [m for m in await history(client, room_b.code, member_b["room_token"])] == []


async def test_invalid_messages_get_clear_errors_and_nothing_is_stored(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await open_room(client)
    member = await join(client, room.code, "Careful1")
    s = await ChatSocket.open(stack.ws_url, room.code, member["room_token"])
    try:
        cases = {
            "message_empty": "   \n\t  ",
            "message_too_long": "x" * 4001,
            "message_invalid_characters": "bell\x07ring",
        }
        for code, text in cases.items():
            frame = await s.ack_or_error(await s.send(text))
            assert frame["type"] == "error", frame
            assert frame["code"] == code
            assert frame["message"]
            assert frame["retryable"] is False
        await s.send_json({"type": "no-such-frame"})
        await s.wait_for(lambda f: f["type"] == "error" and "client_msg_id" not in f)
        rest = await client.post(
            f"/api/v1/rooms/{room.code}/messages",
            json={"client_msg_id": new_id(), "text": "nul\x00byte"},
            headers=bearer(member["room_token"]),
        )
        assert rest.status_code == 422
        assert rest.json()["error"]["code"] == "message_invalid_characters"
        assert await history(client, room.code, member["room_token"]) == []
        ok = await s.ack_or_error(await s.send("x" * 4000))
        assert ok["type"] == "ack" and ok["seq"] == 1
    finally:
        await s.close()


async def _traffic_with_retries(s: ChatSocket, count: int, acked: dict[str, int], label: str) -> None:
    """Send `count` messages one after another; an unacknowledged send is retried with the same id."""
    for i in range(count):
        msg_id = new_id()
        for _attempt in range(200):
            await s.send(f"{label} {i}", client_msg_id=msg_id)
            try:
                frame = await s.ack_or_error(msg_id, timeout=2)
            except TimeoutError:
                continue
            if frame["type"] == "ack":
                acked[msg_id] = frame["seq"]
                break
            assert frame.get("retryable"), frame
            s.frames.remove(frame)
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"message {i} was never acknowledged")


async def _assert_log_matches(
    client: httpx.AsyncClient, code: str, room_token: str, acked: dict[str, int], reader: ChatSocket
) -> None:
    """Every acknowledged message is stored once with its acked seq, seqs are gap-free, and the live
    reader got each stored message exactly once, in order."""
    stored = await history(client, code, room_token)
    by_id = {m["client_msg_id"]: m["seq"] for m in stored}
    assert len(stored) == len(by_id), "a message was stored twice"
    for msg_id, seq in acked.items():
        assert by_id.get(msg_id) == seq, "an acknowledged message was lost"
    assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))
    await reader.wait_for_seq(len(stored), timeout=30)
    assert reader.seqs() == list(range(1, len(stored) + 1))


async def test_messaging_killed_mid_traffic_loses_no_acknowledged_message(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await open_room(client)
    writer = await join(client, room.code, "Writer_9")
    reader = await join(client, room.code, "Reader_9")
    w = await ChatSocket.open(stack.ws_url, room.code, writer["room_token"])
    r = await ChatSocket.open(stack.ws_url, room.code, reader["room_token"])
    acked: dict[str, int] = {}
    try:
        traffic = asyncio.create_task(_traffic_with_retries(w, 80, acked, "before and after"))
        while len(acked) < 20:
            await asyncio.sleep(0.02)
        await stack.akill("messaging")
        await asyncio.sleep(0.5)
        await stack.astart("messaging")
        await asyncio.wait_for(traffic, 120)

        # The live reader gets every message without resuming by hand.
        await _assert_log_matches(client, room.code, reader["room_token"], acked, r)
    finally:
        await w.close()
        await r.close()


async def test_redis_restart_mid_traffic_loses_no_acknowledged_message(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await open_room(client)
    writer = await join(client, room.code, "Writer_8")
    reader = await join(client, room.code, "Reader_8")
    w = await ChatSocket.open(stack.ws_url, room.code, writer["room_token"])
    r = await ChatSocket.open(stack.ws_url, room.code, reader["room_token"])
    acked: dict[str, int] = {}
    try:
        traffic = asyncio.create_task(_traffic_with_retries(w, 80, acked, "through a redis restart"))
        while len(acked) < 20:
            await asyncio.sleep(0.02)
        await stack.astop_redis()
        # Sends keep being acknowledged while Redis is down: Postgres is the log.
        down_at = len(acked)
        while len(acked) < down_at + 10 and not traffic.done():
            await asyncio.sleep(0.02)
        await stack.astart_redis()
        await asyncio.wait_for(traffic, 120)

        await _assert_log_matches(client, room.code, reader["room_token"], acked, r)
        await _until_cached_again(stack, room.id, w)
    finally:
        await w.close()
        await r.close()


async def _until_cached_again(stack: Stack, room_id: str, socket: ChatSocket) -> None:
    """Sends until one reaches the room's hot cache, with a deadline. After a Redis failure messaging
    leaves Redis alone for a moment: a send in that moment is committed and acknowledged but not
    cached (readers take it from Postgres), so the next test must not start inside it."""
    redis = aioredis.Redis.from_url(stack.redis_url)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not [key async for key in redis.scan_iter(match=f"msg:{{{room_id}}}:*")]:
            assert asyncio.get_running_loop().time() < deadline, "messaging never wrote to Redis again"
            ack = await socket.ack_or_error(await socket.send("is the cache back?"))
            assert ack["type"] == "ack", ack
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()

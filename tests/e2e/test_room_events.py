"""Room events: reactions, deletions, paid pins and tips are entries of the room's log.

For every change the same room state is reached three ways: by a client that saw it live, by one that
was away and resumed after the last seq it had, and by a fresh client reading history. The hot cache
and Postgres keep no text of a deleted message.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import httpx
import redis.asyncio as aioredis

from chatpop.identity.v1 import identity_pb2_grpc
from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop_common.service_auth import ServiceCredentials
from chatpop_messaging.keys import Keyring, MasterKeys
from tests.e2e.chat import ChatSocket, Frame, bearer, documented, join, open_room
from tests.e2e.conftest import Stack

THUMBS, HEART, JOY = "\U0001f44d", "\u2764\ufe0f", "\U0001f602"


@dataclass
class RoomView:
    """What a client shows, built from frames (live or resumed) or from history pages."""

    me: str
    seqs: set[int] = field(default_factory=set)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)

    def apply(self, frame: Frame) -> None:
        kind = frame["type"]
        if "seq" in frame and kind in ("message", "reaction", "deleted"):
            self.seqs.add(frame["seq"])
        if kind == "message":
            self.messages.setdefault(frame["seq"], self._from_message(frame))
            return
        target = self.messages.get(frame.get("target_seq", -1))
        if target is None or frame["state_seq"] <= target["state_seq"]:
            return
        target["state_seq"] = frame["state_seq"]
        if kind == "reaction":
            target["reactions"] = dict(frame["reactions"])
            if frame["participant_id"] == self.me:
                mine = set(target["mine"])
                (mine.add if frame["added"] else mine.discard)(frame["emoji"])
                target["mine"] = sorted(mine)
        elif kind == "deleted":
            target.update(text="", deleted=True, by_host=frame["by_host"], reactions={}, mine=[])

    @staticmethod
    def _from_message(message: dict[str, Any]) -> dict[str, Any]:
        return {
            "text": message["text"],
            "deleted": message["deleted"],
            "by_host": message["deleted_by_host"],
            "reactions": dict(message["reactions"]),
            "mine": sorted(message["my_reactions"]),
            "state_seq": message["state_seq"],
            "reply_to_seq": message["reply_to_seq"],
        }

    def shown(self) -> dict[int, dict[str, Any]]:
        """The state a person sees, without the bookkeeping."""
        return {
            seq: {key: value for key, value in message.items() if key != "state_seq"}
            for seq, message in sorted(self.messages.items())
        }


async def fresh_view(client: httpx.AsyncClient, code: str, token: str, me: str) -> tuple[RoomView, int]:
    """A client that reads the whole history now, page by page; returns the view and its top seq."""
    view = RoomView(me)
    before: int | None = None
    top = 0
    while True:
        params: dict[str, int] = {"limit": 3}
        if before is not None:
            params["before_seq"] = before
        page = (
            await client.get(f"/api/v1/rooms/{code}/messages", params=params, headers=bearer(token))
        ).json()
        top = max(top, page["last_seq"])
        for message in page["messages"]:
            view.messages[message["seq"]] = view._from_message(message)
        view.seqs |= set(range(page["low_seq"], (before or page["last_seq"] + 1)))
        if not page["has_more"]:
            return view, top
        before = page["low_seq"]


async def react(
    client: httpx.AsyncClient, code: str, token: str, seq: int, emoji: str, on: bool = True
) -> httpx.Response:
    return await client.post(
        f"/api/v1/rooms/{code}/messages/{seq}/reactions",
        json={"emoji": emoji, "on": on},
        headers=bearer(token),
    )


async def send_and_ack(socket: ChatSocket, text: str, **extra: Any) -> int:
    msg_id = await socket.send(text, **extra)
    frame = await socket.ack_or_error(msg_id)
    assert frame["type"] == "ack", frame
    return int(frame["seq"])


async def test_reactions_and_deletions_reach_live_resumed_and_fresh_clients_alike(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    room = await open_room(client)
    host = await join(client, room.code, "HostHanna", token=room.host_token)
    bob = await join(client, room.code, "BobReacts")
    cara = await join(client, room.code, "CaraAway")
    host_socket = await ChatSocket.open(stack.ws_url, room.code, host["room_token"])
    bob_socket = await ChatSocket.open(stack.ws_url, room.code, bob["room_token"])
    cara_socket = await ChatSocket.open(stack.ws_url, room.code, cara["room_token"])
    sockets = [host_socket, bob_socket, cara_socket]
    try:
        first = await send_and_ack(host_socket, "welcome, everyone")
        second = await send_and_ack(bob_socket, "a message bob regrets")
        third = await send_and_ack(cara_socket, "something the host removes")
        await cara_socket.wait_for_seq(third)
        # Cara goes away holding everything so far.
        cara_top = max(cara_socket.seqs())
        await cara_socket.close()
        sockets.remove(cara_socket)

        changes = [
            (bob, first, THUMBS, True),
            (cara, first, THUMBS, True),
            (cara, first, HEART, True),
            (bob, second, JOY, True),
            (cara, first, HEART, False),
        ]
        for person, seq, emoji, on in changes:
            answer = await react(client, room.code, person["room_token"], seq, emoji, on)
            documented(openapi, "POST", "/api/v1/rooms/{code}/messages/{seq}/reactions", answer)
            assert answer.status_code == 200 and answer.json()["changed"] is True, answer.text
        again = await react(client, room.code, bob["room_token"], first, THUMBS)
        assert again.json() == {
            "target_seq": first,
            "reactions": {THUMBS: 2},
            "my_reactions": [THUMBS],
            "state_seq": again.json()["state_seq"],
            "changed": False,
        }
        own = await client.delete(
            f"/api/v1/rooms/{room.code}/messages/{second}", headers=bearer(bob["room_token"])
        )
        assert documented(openapi, "DELETE", "/api/v1/rooms/{code}/messages/{seq}", own)["changed"] is True
        by_host = await client.delete(
            f"/api/v1/rooms/{room.code}/messages/{third}", headers=bearer(host["room_token"])
        )
        assert by_host.json() == {"target_seq": third, "deleted": True, "changed": True}
        repeat = await client.delete(
            f"/api/v1/rooms/{room.code}/messages/{third}", headers=bearer(host["room_token"])
        )
        assert repeat.json()["changed"] is False
        reply = await send_and_ack(bob_socket, "replying to what is gone", reply_to_seq=second)

        # Changes that must be refused, and append nothing.
        not_yours = await client.delete(
            f"/api/v1/rooms/{room.code}/messages/{first}", headers=bearer(bob["room_token"])
        )
        assert documented(openapi, "DELETE", "/api/v1/rooms/{code}/messages/{seq}", not_yours).get("error")
        assert (not_yours.status_code, not_yours.json()["error"]["code"]) == (403, "forbidden")
        on_deleted = await react(client, room.code, cara["room_token"], second, THUMBS)
        assert (on_deleted.status_code, on_deleted.json()["error"]["code"]) == (409, "message_deleted")
        not_a_message = await react(client, room.code, cara["room_token"], first + 3, THUMBS)
        assert (not_a_message.status_code, not_a_message.json()["error"]["code"]) == (
            404,
            "message_not_found",
        )
        bad_emoji = await react(client, room.code, cara["room_token"], first, "\U0001f355")
        assert bad_emoji.status_code == 422

        # 3 messages, 5 reactions, 2 deletions, 1 reply: 11 entries, gap-free.
        last = reply
        assert last == 11
        live = RoomView(bob["participant"]["id"])
        await bob_socket.wait_for_seq(last)
        await host_socket.wait_for(lambda f: f.get("seq") == last)
        for frame in bob_socket.frames:
            live.apply(frame)

        resumed_socket = await ChatSocket.open(
            stack.ws_url, room.code, cara["room_token"], after_seq=cara_top
        )
        sockets.append(resumed_socket)
        await resumed_socket.wait_for(lambda f: f.get("seq") == last)
        resumed = RoomView(cara["participant"]["id"])
        # Cara's view before she left, then what the resume brought.
        for frame in cara_socket.frames + resumed_socket.frames:
            resumed.apply(frame)
        fresh, top = await fresh_view(client, room.code, bob["room_token"], bob["participant"]["id"])
        fresh_cara, _ = await fresh_view(client, room.code, cara["room_token"], cara["participant"]["id"])

        assert top == last
        for view in (live, resumed, fresh):
            assert view.seqs == set(range(1, last + 1)), "a seq was missed"
        assert live.shown() == fresh.shown()
        assert resumed.shown() == fresh_cara.shown()
        shown = fresh.shown()
        assert shown[first]["reactions"] == {THUMBS: 2}
        assert shown[first]["mine"] == [THUMBS]
        assert fresh_cara.shown()[first]["mine"] == [THUMBS]
        assert shown[second] | {"reactions": {}} == shown[second]
        assert (shown[second]["deleted"], shown[second]["by_host"], shown[second]["text"]) == (
            True,
            False,
            "",
        )
        assert (shown[third]["deleted"], shown[third]["by_host"], shown[third]["text"]) == (True, True, "")
        assert shown[reply]["reply_to_seq"] == second
    finally:
        for socket in sockets:
            await socket.close()


async def test_a_deleted_message_leaves_no_text_in_postgres_or_the_hot_cache(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await open_room(client)
    person = await join(client, room.code, "SecretKeeper")
    socket = await ChatSocket.open(stack.ws_url, room.code, person["room_token"])
    try:
        secret = "my phone number is 555-0100"
        seq = await send_and_ack(socket, secret)
        await send_and_ack(socket, "and this one stays")
        gone = await client.delete(
            f"/api/v1/rooms/{room.code}/messages/{seq}", headers=bearer(person["room_token"])
        )
        assert gone.status_code == 200
        await socket.wait_for(lambda f: f["type"] == "deleted" and f["target_seq"] == seq)
    finally:
        await socket.close()

    connection = await asyncpg.connect(stack.database_url)
    try:
        rows = await connection.fetch("SELECT text FROM messaging.messages WHERE room_id = $1", room.id)
    finally:
        await connection.close()
    assert all(secret.encode() not in bytes(row["text"]) for row in rows)

    cache = aioredis.Redis.from_url(stack.redis_url)
    try:
        entries = await cache.xrange(f"msg:{{{room.id}}}:stream")
    finally:
        await cache.aclose()
    assert entries, "the room's hot cache was expected to hold its entries"
    # The entries are sealed with the room's data key: open them as messaging does.
    pool = await asyncpg.create_pool(stack.database_url, server_settings={"search_path": "messaging"})
    try:
        master = MasterKeys.load(stack.specs["messaging"].env["MASTER_KEYS_FILE"], None)
        payloads = [fields[b"m"] for _id, fields in entries]
        opener = await Keyring(pool, master).opener(room.id, payloads)
    finally:
        await pool.close()
    texts = [opener.entry(payload).text for payload in payloads]
    assert secret not in texts
    assert "and this one stays" in texts

    # History and a resume from before it both show the tombstone.
    page = (
        await client.get(f"/api/v1/rooms/{room.code}/messages", headers=bearer(person["room_token"]))
    ).json()
    tombstone = next(m for m in page["messages"] if m["seq"] == seq)
    assert (tombstone["text"], tombstone["deleted"]) == ("", True)
    again = await ChatSocket.open(stack.ws_url, room.code, person["room_token"], after_seq=0)
    try:
        replayed = await again.wait_for(lambda f: f.get("seq") == seq)
        assert replayed["text"] == "" and replayed["deleted"] is True
    finally:
        await again.close()


async def test_a_page_brings_the_state_of_older_messages_its_changes_touched(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    """A client filling a hole with a history page learns about changes in that hole even when they
    target messages older than the page."""
    room = await open_room(client)
    person = await join(client, room.code, "HoleFiller")
    socket = await ChatSocket.open(stack.ws_url, room.code, person["room_token"])
    token = person["room_token"]
    try:
        oldest = await send_and_ack(socket, "one")
        doomed = await send_and_ack(socket, "two")
        newest = await send_and_ack(socket, "three")
        assert (await react(client, room.code, token, oldest, THUMBS)).status_code == 200
        assert (
            await client.delete(f"/api/v1/rooms/{room.code}/messages/{doomed}", headers=bearer(token))
        ).status_code == 200
    finally:
        await socket.close()
    # The hole is seqs 4..5 (a reaction and a deletion); the page fills it and reaches message 3.
    answer = await client.get(
        f"/api/v1/rooms/{room.code}/messages", params={"before_seq": 6, "limit": 1}, headers=bearer(token)
    )
    page = documented(openapi, "GET", "/api/v1/rooms/{code}/messages", answer)
    assert [m["seq"] for m in page["messages"]] == [newest]
    assert page["low_seq"] == newest
    touched = {m["seq"]: m for m in page["touched"]}
    assert set(touched) == {oldest, doomed}
    assert touched[oldest]["reactions"] == {THUMBS: 1} and touched[oldest]["my_reactions"] == [THUMBS]
    assert touched[doomed]["deleted"] is True and touched[doomed]["text"] == ""


# --- paid pins and tips -----------------------------------------------------------------------------

_PAID_ENTRIES = ("message", "paid_pin", "paid_pin_removed", "tip")


@dataclass
class PaidView:
    """What a client shows of paid pins and tips, from frames (live or resumed) or from history."""

    seqs: set[int] = field(default_factory=set)
    pins: list[dict[str, Any]] = field(default_factory=list)
    pins_state_seq: int = 0
    tips: dict[int, tuple[str, int, str]] = field(default_factory=dict)

    def apply(self, frame: Frame) -> None:
        kind = frame["type"]
        if kind in _PAID_ENTRIES:
            self.seqs.add(frame["seq"])
        if kind in ("paid_pin", "paid_pin_removed") and frame["paid_pins_state_seq"] > self.pins_state_seq:
            self.pins, self.pins_state_seq = frame["paid_pins"], frame["paid_pins_state_seq"]
        elif kind == "tip":
            self.tip(frame)

    def tip(self, item: dict[str, Any]) -> None:
        self.tips[item["seq"]] = (
            item["sender"]["username"],
            item["tip"]["amount_cents"],
            item["tip"]["note"],
        )

    def shown(self) -> tuple[list[tuple[str, int, int, str | None, str]], dict[int, tuple[str, int, str]]]:
        """Live pins top first (none runs out within a test), and the tips."""
        pins = [
            (pin["id"], pin["target_seq"], pin["amount_cents"], pin["expires_at"], pin["message"]["text"])
            for pin in self.pins
        ]
        return pins, dict(sorted(self.tips.items()))


async def test_paid_pins_and_tips_reach_live_resumed_and_fresh_clients_alike(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    """payments fulfils orders over gRPC with its service credential; the host takes a pin down over
    REST; every socket sees the same pins and tips as a client that resumes or reads history."""
    room = await open_room(client)
    host = await join(client, room.code, "HostPaula", token=room.host_token)
    bob = await join(client, room.code, "BobBuysPins")
    cara = await join(client, room.code, "CaraComesBack")
    sockets = [await ChatSocket.open(stack.ws_url, room.code, p["room_token"]) for p in (host, bob, cara)]
    host_socket, bob_socket, cara_socket = sockets
    secret = stack.specs["messaging"].env["SERVICE_TOKEN_SECRET"]
    async with (
        grpc.aio.insecure_channel(stack.address("identity")) as identity_channel,
        grpc.aio.insecure_channel(stack.address("messaging")) as messaging_channel,
    ):
        payments = ServiceCredentials(
            identity_pb2_grpc.IdentityServiceStub(identity_channel), "payments", secret
        )
        messaging = messaging_pb2_grpc.MessagingServiceStub(messaging_channel)

        async def pin(
            person: dict[str, Any], amount: int, **target: Any
        ) -> messaging_pb2.ApplyPaidPinResponse:
            response: messaging_pb2.ApplyPaidPinResponse = await messaging.ApplyPaidPin(
                messaging_pb2.ApplyPaidPinRequest(
                    order_id=str(uuid.uuid4()),
                    room_id=room.id,
                    participant_id=person["participant"]["id"],
                    amount_cents=amount,
                    currency="usd",
                    **target,
                ),
                metadata=await payments.metadata(),
                timeout=10,
            )
            return response

        try:
            welcome = await send_and_ack(host_socket, "welcome, all")
            bobs = await send_and_ack(bob_socket, "pin me, I paid")
            caras = await send_and_ack(cara_socket, "and me")
            await cara_socket.wait_for_seq(caras)
            cara_top = max(cara_socket.seqs())
            await cara_socket.close()
            sockets.remove(cara_socket)

            # A host pin sits above every paid pin, in its own list.
            assert (
                await client.put(
                    f"/api/v1/rooms/{room.code}/pins/{welcome}", headers=bearer(host["room_token"])
                )
            ).status_code == 200
            first = await pin(bob, 100, target_seq=bobs)
            second = await pin(cara, 200, target_seq=caras)
            assert (first.outcome, second.outcome) == (
                messaging_pb2.PAID_PIN_OUTCOME_GRANTED,
                messaging_pb2.PAID_PIN_OUTCOME_GRANTED,
            )
            outbid = await pin(bob, 200, target_seq=bobs)
            assert outbid.outcome == messaging_pb2.PAID_PIN_OUTCOME_OUTBID
            extended = await pin(cara, 500, extend_pin_id=second.pin.id)
            assert extended.outcome == messaging_pb2.PAID_PIN_OUTCOME_GRANTED
            tip = await messaging.ApplyTip(
                messaging_pb2.ApplyTipRequest(
                    order_id=str(uuid.uuid4()),
                    room_id=room.id,
                    participant_id=bob["participant"]["id"],
                    amount_cents=500,
                    currency="usd",
                    note="lovely room",
                ),
                metadata=await payments.metadata(),
                timeout=10,
            )
            assert tip.created

            path = f"/api/v1/rooms/{room.code}/paid-pins/{first.pin.id}"
            not_host = await client.delete(path, headers=bearer(bob["room_token"]))
            assert documented(openapi, "DELETE", "/api/v1/rooms/{code}/paid-pins/{pin_id}", not_host)
            assert (not_host.status_code, not_host.json()["error"]["code"]) == (403, "forbidden")
            removed = await client.delete(path, headers=bearer(host["room_token"]))
            body = documented(openapi, "DELETE", "/api/v1/rooms/{code}/paid-pins/{pin_id}", removed)
            assert body == {"pin_id": first.pin.id, "seq": body["seq"], "changed": True}
            again = await client.delete(path, headers=bearer(host["room_token"]))
            assert again.json() == {"pin_id": first.pin.id, "seq": None, "changed": False}
            unknown = await client.delete(
                f"/api/v1/rooms/{room.code}/paid-pins/{uuid.uuid4()}", headers=bearer(host["room_token"])
            )
            assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "paid_pin_not_found")
            malformed = await client.delete(
                f"/api/v1/rooms/{room.code}/paid-pins/not-a-pin", headers=bearer(host["room_token"])
            )
            assert malformed.status_code == 422
            last = await send_and_ack(bob_socket, "the last word")

            # 3 messages, a host pin, 2 pins, an extension, a tip, a removal, a message.
            assert last == 10
            live = PaidView()
            await bob_socket.wait_for(lambda f: f.get("seq") == last)
            for frame in bob_socket.frames:
                live.apply(frame)
            removal = next(f for f in bob_socket.frames if f["type"] == "paid_pin_removed")
            assert removal["paid_pin"]["removed_reason"] == "host"
            assert removal["paid_pin"]["id"] == first.pin.id and removal["seq"] == body["seq"]
            tip_frame = next(f for f in bob_socket.frames if f["type"] == "tip")
            assert (tip_frame["kind"], tip_frame["text"], tip_frame["sender"]["username"]) == (
                "tip",
                "",
                "BobBuysPins",
            )

            resumed_socket = await ChatSocket.open(
                stack.ws_url, room.code, cara["room_token"], after_seq=cara_top
            )
            sockets.append(resumed_socket)
            await resumed_socket.wait_for(lambda f: f.get("seq") == last)
            resumed = PaidView()
            for frame in cara_socket.frames + resumed_socket.frames:
                resumed.apply(frame)

            fresh = PaidView()
            before: int | None = None
            while True:
                params: dict[str, int] = {"limit": 3} | ({"before_seq": before} if before else {})
                answer = await client.get(
                    f"/api/v1/rooms/{room.code}/messages", params=params, headers=bearer(cara["room_token"])
                )
                page = documented(openapi, "GET", "/api/v1/rooms/{code}/messages", answer)
                if before is None:
                    board = page["board"]
                    assert [p["message"]["seq"] for p in board["pins"]] == [welcome]
                    fresh.pins, fresh.pins_state_seq = board["paid_pins"], board["paid_pins_state_seq"]
                for item in page["messages"]:
                    if item["kind"] == "tip":
                        fresh.tip(item)
                fresh.seqs |= set(range(page["low_seq"], (before or page["last_seq"] + 1)))
                if not page["has_more"]:
                    break
                before = page["low_seq"]
        finally:
            for socket in sockets:
                await socket.close()

    expected_pins = [(second.pin.id, caras, 700, fresh.pins[0]["expires_at"], "and me")]
    assert fresh.shown() == (expected_pins, {tip.entry.seq: ("BobBuysPins", 500, "lovely room")})
    assert live.shown() == resumed.shown() == fresh.shown()
    assert live.pins_state_seq == resumed.pins_state_seq == fresh.pins_state_seq == body["seq"]
    assert fresh.seqs == set(range(1, last + 1))

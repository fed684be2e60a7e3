"""Host pins, the sticky message, reports and hidden messages are entries of the room's log.

For every change the same room state is reached three ways: by a client that saw it live, by one that
was away and resumed after the last seq it had, and by a fresh client reading history (whose newest
page carries the room's pins and sticky message). A hidden message shows its text to the host alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx

from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from tests.e2e.chat import ChatSocket, Frame, bearer, documented, join, open_room
from tests.e2e.conftest import Stack
from tests.e2e.test_room_events import send_and_ack

_LOGGED = ("message", "reaction", "deleted", "pinned", "unpinned", "sticky", "hidden", "restored")


@dataclass
class BoardView:
    """What a client shows, messages and what sits above them, from frames or from history."""

    host: bool
    seqs: set[int] = field(default_factory=set)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    pins: list[int] = field(default_factory=list)
    pins_state_seq: int = 0
    sticky: str = ""
    sticky_seq: int = 0

    def apply(self, frame: Frame) -> None:
        kind = frame["type"]
        if kind in _LOGGED:
            self.seqs.add(frame["seq"])
        if kind == "message":
            self.messages.setdefault(frame["seq"], self.from_message(frame))
        elif kind in ("pinned", "unpinned"):
            if "message" in frame:
                self.messages.setdefault(frame["target_seq"], self.from_message(frame["message"]))
            if frame["pins_state_seq"] > self.pins_state_seq:
                self.pins, self.pins_state_seq = list(frame["pinned_seqs"]), frame["pins_state_seq"]
        elif kind == "sticky":
            if frame["sticky_seq"] > self.sticky_seq:
                self.sticky, self.sticky_seq = frame["text"], frame["sticky_seq"]
        elif kind in ("deleted", "hidden", "restored"):
            target = self.messages.get(frame["target_seq"])
            if target is None or frame["state_seq"] <= target["state_seq"]:
                return
            target["state_seq"] = frame["state_seq"]
            if kind == "deleted":
                target.update(text="", deleted=True)
            elif kind == "hidden":
                target["hidden"] = True
                if not self.host:
                    target["text"] = ""
            else:
                target.update(hidden=False, text=frame["text"])

    @staticmethod
    def from_message(message: dict[str, Any]) -> dict[str, Any]:
        return {
            "text": message["text"],
            "deleted": message["deleted"],
            "hidden": message["hidden"],
            "state_seq": message["state_seq"],
        }

    def shown(self) -> dict[str, Any]:
        return {
            "messages": {
                seq: {key: value for key, value in message.items() if key != "state_seq"}
                for seq, message in sorted(self.messages.items())
            },
            "pins": self.pins,
            "sticky": self.sticky,
        }


async def fresh_view(
    client: httpx.AsyncClient, code: str, token: str, host: bool, openapi: dict[str, Any]
) -> tuple[BoardView, int]:
    view = BoardView(host)
    before: int | None = None
    top = 0
    while True:
        params: dict[str, int] = {"limit": 3}
        if before is not None:
            params["before_seq"] = before
        answer = await client.get(f"/api/v1/rooms/{code}/messages", params=params, headers=bearer(token))
        page = documented(openapi, "GET", "/api/v1/rooms/{code}/messages", answer)
        top = max(top, page["last_seq"])
        for message in page["messages"]:
            view.messages[message["seq"]] = view.from_message(message)
        if before is None:
            board = page["board"]
            view.pins = [pin["message"]["seq"] for pin in board["pins"]]
            assert all(pin["source"] == "host" for pin in board["pins"])
            for pin in board["pins"]:
                view.messages.setdefault(pin["message"]["seq"], view.from_message(pin["message"]))
            view.sticky = board["sticky_text"]
        else:
            assert page.get("board") is None
        view.seqs |= set(range(page["low_seq"], (before or page["last_seq"] + 1)))
        if not page["has_more"]:
            return view, top
        before = page["low_seq"]


async def test_pins_sticky_and_hidden_messages_reach_live_resumed_and_fresh_clients_alike(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    room = await open_room(client)
    host = await join(client, room.code, "HostHolly", token=room.host_token)
    bob = await join(client, room.code, "BobLive")
    cara = await join(client, room.code, "CaraAway")
    dan = await join(client, room.code, "DanReports")
    erin = await join(client, room.code, "ErinSpams")
    host_socket = await ChatSocket.open(stack.ws_url, room.code, host["room_token"])
    bob_socket = await ChatSocket.open(stack.ws_url, room.code, bob["room_token"])
    cara_socket = await ChatSocket.open(stack.ws_url, room.code, cara["room_token"])
    erin_socket = await ChatSocket.open(stack.ws_url, room.code, erin["room_token"])
    sockets = [host_socket, bob_socket, cara_socket, erin_socket]

    async def call(method: str, path: str, person: dict[str, Any], **kwargs: Any) -> Any:
        answer = await client.request(
            method, f"/api/v1/rooms/{room.code}{path}", headers=bearer(person["room_token"]), **kwargs
        )
        template = "/api/v1/rooms/{code}" + "/".join(
            "{seq}" if part.isdigit() else part for part in path.split("/")
        )
        body = documented(openapi, method, template, answer)
        return answer.status_code, body

    try:
        welcome = await send_and_ack(host_socket, "welcome, everyone")
        rules = await send_and_ack(bob_socket, "what are the rules?")
        spam = await send_and_ack(erin_socket, "buy cheap watches")
        soon_gone = await send_and_ack(bob_socket, "pin me, then I go")
        await cara_socket.wait_for(lambda f: f.get("seq") == soon_gone)
        cara_top = soon_gone
        await cara_socket.close()
        sockets.remove(cara_socket)

        # Pins and the sticky message: the host's alone.
        status, body = await call("PUT", f"/pins/{welcome}", host)
        assert (status, body["changed"], body["pinned_seqs"]) == (200, True, [welcome])
        status, body = await call("PUT", f"/pins/{rules}", host)
        assert body["pinned_seqs"] == [rules, welcome]
        status, body = await call("PUT", f"/pins/{welcome}", host)
        assert (body["changed"], body["pinned_seqs"]) == (False, [rules, welcome])
        status, body = await call("DELETE", f"/pins/{spam}", host)
        assert (status, body["changed"]) == (200, False)
        status, body = await call("PUT", f"/pins/{soon_gone}", host)
        assert body["pinned_seqs"] == [soon_gone, rules, welcome]
        status, body = await call("DELETE", f"/pins/{welcome}", host)
        assert (body["changed"], body["pinned_seqs"]) == (True, [soon_gone, rules])
        status, body = await call("PUT", "/sticky", host, json={"text": "  be kind  "})
        assert (status, body["text"], body["changed"]) == (200, "be kind", True)
        status, body = await call("PUT", "/sticky", host, json={"text": "be kind"})
        assert body["changed"] is False
        status, body = await call("DELETE", "/sticky", host)
        assert (body["text"], body["changed"]) == ("", True)
        status, body = await call("PUT", "/sticky", host, json={"text": "stay on topic"})
        for method, path, extra in (
            ("PUT", f"/pins/{rules}", {}),
            ("DELETE", f"/pins/{rules}", {}),
            ("PUT", "/sticky", {"json": {"text": "mine now"}}),
            ("DELETE", "/sticky", {}),
            ("GET", "/reports", {}),
            ("POST", f"/reports/{spam}/resolution", {"json": {"action": "restore"}}),
        ):
            status, body = await call(method, path, bob, **extra)
            assert (status, body["error"]["code"]) == (403, "forbidden"), (method, path)

        # Deleting a pinned message unpins it.
        status, body = await call("DELETE", f"/messages/{soon_gone}", bob)
        assert body["changed"] is True
        await bob_socket.wait_for(lambda f: f["type"] == "unpinned" and f["target_seq"] == soon_gone)

        # Reports: three people hide the message; a second report by one of them changes nothing.
        for person in (bob, dan):
            status, body = await call("POST", f"/messages/{spam}/reports", person, json={"reason": "spam"})
            assert (status, body["created"], body["hidden"]) == (200, True, False)
        status, body = await call(
            "POST", f"/messages/{spam}/reports", bob, json={"reason": "other", "text": "again"}
        )
        assert (body["created"], body["hidden"]) == (False, False)
        status, body = await call("POST", f"/messages/{spam}/reports", erin, json={"reason": "spam"})
        assert (status, body["error"]["code"]) == (409, "own_message")
        status, _body = await call("POST", f"/messages/{spam}/reports", dan, json={"reason": "rude"})
        assert status == 422
        status, body = await call(
            "POST", f"/messages/{spam}/reports", cara, json={"reason": "spam", "text": "an ad"}
        )
        assert (body["created"], body["hidden"]) == (True, True)
        hide = await bob_socket.wait_for(lambda f: f["type"] == "hidden" and f["target_seq"] == spam)
        assert set(hide) == {"type", "seq", "target_seq", "state_seq"}, "a hidden frame names no reporter"
        await host_socket.wait_for(lambda f: f["type"] == "hidden" and f["target_seq"] == spam)

        shown_bob, _ = await fresh_view(client, room.code, bob["room_token"], False, openapi)
        shown_host, _ = await fresh_view(client, room.code, host["room_token"], True, openapi)
        assert shown_bob.messages[spam] | {"state_seq": 0} == {
            "text": "",
            "deleted": False,
            "hidden": True,
            "state_seq": 0,
        }
        assert (shown_host.messages[spam]["text"], shown_host.messages[spam]["hidden"]) == (
            "buy cheap watches",
            True,
        )

        status, queue = await call("GET", "/reports", host)
        assert status == 200 and [item["message"]["seq"] for item in queue["items"]] == [spam]
        reports = queue["items"][0]["reports"]
        assert sorted(r["reporter"]["username"] for r in reports) == ["BobLive", "CaraAway", "DanReports"]
        assert {r["reason"] for r in reports} == {"spam"}
        assert queue["items"][0]["message"]["text"] == "buy cheap watches"

        # The host restores it; another hidden message is deleted; one report is dismissed.
        status, body = await call("POST", f"/reports/{spam}/resolution", host, json={"action": "restore"})
        assert (status, body["closed"], body["changed"]) == (200, 3, True)
        worse = await send_and_ack(erin_socket, "something nasty")
        for person in (bob, cara, dan):
            await call("POST", f"/messages/{worse}/reports", person, json={"reason": "harassment"})
        status, body = await call("POST", f"/reports/{worse}/resolution", host, json={"action": "delete"})
        assert (body["closed"], body["changed"]) == (3, True)
        await call("POST", f"/messages/{rules}/reports", dan, json={"reason": "other"})
        status, body = await call("POST", f"/reports/{rules}/resolution", host, json={"action": "dismiss"})
        assert (body["closed"], body["changed"]) == (1, False)
        status, queue = await call("GET", "/reports", host)
        assert queue == {"items": [], "has_more": False}
        # And one stays hidden, for the host's eyes only.
        stays = await send_and_ack(erin_socket, "still under review")
        for person in (bob, cara, dan):
            await call("POST", f"/messages/{stays}/reports", person, json={"reason": "violence"})
        last = await send_and_ack(host_socket, "that is all")

        await bob_socket.wait_for(lambda f: f.get("seq") == last)
        await host_socket.wait_for(lambda f: f.get("seq") == last)
        live = BoardView(host=False)
        live_host = BoardView(host=True)
        for frame in bob_socket.frames:
            live.apply(frame)
        for frame in host_socket.frames:
            live_host.apply(frame)
        resumed_socket = await ChatSocket.open(
            stack.ws_url, room.code, cara["room_token"], after_seq=cara_top
        )
        sockets.append(resumed_socket)
        await resumed_socket.wait_for(lambda f: f.get("seq") == last)
        resumed = BoardView(host=False)
        for frame in cara_socket.frames + resumed_socket.frames:
            resumed.apply(frame)
        fresh, top = await fresh_view(client, room.code, bob["room_token"], False, openapi)
        fresh_host, _ = await fresh_view(client, room.code, host["room_token"], True, openapi)

        assert top == last
        for view in (live, live_host, resumed, fresh):
            assert view.seqs == set(range(1, last + 1)), "a seq was missed"
        assert live.shown() == fresh.shown() == resumed.shown()
        assert live_host.shown() == fresh_host.shown()
        shown = fresh.shown()
        assert shown["pins"] == [rules]
        assert shown["sticky"] == "stay on topic"
        assert shown["messages"][spam] == {"text": "buy cheap watches", "deleted": False, "hidden": False}
        assert shown["messages"][worse]["deleted"] is True and shown["messages"][worse]["text"] == ""
        assert shown["messages"][stays] == {"text": "", "deleted": False, "hidden": True}
        assert fresh_host.shown()["messages"][stays]["text"] == "still under review"
        # What the resume brought carries no text the room has hidden or deleted since.
        replayed = {f["seq"]: f for f in resumed_socket.frames if f["type"] == "message"}
        assert replayed[stays]["text"] == "" and replayed[stays]["hidden"] is True
        assert replayed[worse]["text"] == ""
    finally:
        for socket in sockets:
            await socket.close()


async def test_a_room_stream_catching_up_brings_no_hidden_text(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    """messaging's Subscribe serves a whole room (host included): a message hidden since it was sent
    comes without its text when a stream catches up from before it."""
    room = await open_room(client)
    writer = await join(client, room.code, "WriterHidden")
    reporters = [await join(client, room.code, f"Flagger_{n}") for n in range(3)]
    socket = await ChatSocket.open(stack.ws_url, room.code, writer["room_token"])
    try:
        seq = await send_and_ack(socket, "something under review")
    finally:
        await socket.close()
    for person in reporters:
        answer = await client.post(
            f"/api/v1/rooms/{room.code}/messages/{seq}/reports",
            json={"reason": "spam"},
            headers=bearer(person["room_token"]),
        )
        assert answer.status_code == 200, answer.text
    assert answer.json()["hidden"] is True

    async with grpc.aio.insecure_channel(stack.address("messaging")) as channel:
        stream = messaging_pb2_grpc.MessagingServiceStub(channel).Subscribe(
            messaging_pb2.SubscribeRequest(room_id=room.id, after_seq=0),
            metadata=(("authorization", f"Bearer {writer['room_token']}"),),
            timeout=10,
        )
        async for item in stream:
            # A catch-up comes as batches of consecutive entries, or one message at a time.
            if item.HasField("batch"):
                entries = list(item.batch.messages)
            else:
                entries = [item.message] if item.HasField("message") else []
            mine = [entry for entry in entries if entry.seq == seq]
            if mine:
                assert mine[0].text == "" and mine[0].state.hidden
                break
        stream.cancel()

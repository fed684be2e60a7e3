"""The conversation survives the edge restarting and a dropped connection: no gaps, no doubles."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import httpx
from playwright.async_api import WebSocketRoute, expect

from tests.browser import ui
from tests.browser.harness import DESKTOP, MOBILE, People
from tests.e2e.chat import anonymous, bearer, history, join

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

RECONNECTED = 45_000


async def test_edge_restart_mid_conversation_loses_and_doubles_nothing(people: People, stack: Stack) -> None:
    alice = await people.new(DESKTOP)
    bob = await people.new(MOBILE)
    code = await ui.create_room(alice.page, "Restart room")
    alice_name = await ui.join(alice.page, "AliceRun")
    await bob.page.goto(f"/c/{code}")
    bob_name = await ui.join(bob.page, "BobbyRun")

    for number in range(3):
        await ui.send(alice.page, f"before A{number}")
        await ui.send(bob.page, f"before B{number}")
    for person in (alice, bob):
        await expect(ui.messages(person.page)).to_have_count(6)

    await stack.akill("edge")
    for person in (alice, bob):
        await expect(ui.connection(person.page)).not_to_have_attribute("data-state", "live")
    # Both keep writing while the edge is gone: shown at once, marked as not yet sent.
    await ui.send(alice.page, "during A")
    await ui.send(bob.page, "during B")
    await expect(ui.pending(alice.page)).to_contain_text("during A")
    await expect(ui.pending(bob.page)).to_contain_text("during B")

    await stack.astart("edge")
    for person in (alice, bob):
        await expect(ui.connection(person.page)).to_have_attribute("data-state", "live", timeout=RECONNECTED)
    await ui.send(alice.page, "after A")
    await ui.send(bob.page, "after B")

    for person in (alice, bob):
        await expect(ui.messages(person.page)).to_have_count(10, timeout=RECONNECTED)
        await expect(ui.pending(person.page)).to_have_count(0)
    on_alice = await ui.shown(alice.page)
    assert on_alice == await ui.shown(bob.page)
    assert [seq for seq, _sender, _text in on_alice] == list(range(1, 11))
    texts = [text for _seq, _sender, text in on_alice]
    assert sorted(texts) == sorted(
        [f"before {who}{n}" for who in "AB" for n in range(3)]
        + ["during A", "during B", "after A", "after B"]
    )
    # Each person's own messages kept their order.
    assert [t for t in texts if "A" in t.split()[-1]] == [
        "before A0",
        "before A1",
        "before A2",
        "during A",
        "after A",
    ]
    assert {sender for _seq, sender, _text in on_alice} == {alice_name, bob_name}

    # What the screens show is what the room stored.
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=10, headers={"X-Forwarded-For": "10.250.0.1"}
    ) as http:
        reader = await join(http, code, "ReaderRun")
        stored = await history(http, code, reader["room_token"])
    assert [(m["seq"], m["sender"]["username"], m["text"]) for m in stored] == on_alice


async def test_a_dropped_connection_resumes_after_the_last_message_seen(people: People) -> None:
    alice = await people.new(DESKTOP)
    bob = await people.new(DESKTOP)
    code = await ui.create_room(alice.page, "Resume room")
    await ui.join(alice.page, "AliceResume")

    # Bob's socket runs through a switch the test controls, like a train entering a tunnel.
    bob_sockets: list[WebSocketRoute] = []
    refused: list[str] = []
    reachable = True

    async def route(socket: WebSocketRoute) -> None:
        if reachable:
            socket.connect_to_server()
            bob_sockets.append(socket)
        else:
            refused.append(socket.url)
            await socket.close(code=4000, reason="unreachable")

    await bob.page.route_web_socket(re.compile(r"/ws/v1/rooms/"), route)
    await bob.page.goto(f"/c/{code}")
    await ui.join(bob.page, "BobbyResume")
    await ui.send(alice.page, "first")
    await ui.send(bob.page, "second")
    await expect(ui.messages(bob.page)).to_have_count(2)

    reachable = False
    await bob_sockets[-1].close(code=4000, reason="tunnel")
    await expect(ui.connection(bob.page)).to_have_attribute("data-state", re.compile("waiting|connecting"))
    for text in ("third", "fourth", "fifth"):
        await ui.send(alice.page, text)
    await expect(ui.messages(alice.page)).to_have_count(5)
    await expect(ui.messages(bob.page)).to_have_count(2)

    # "Retry now" tries at once; still unreachable, it goes back to waiting.
    tries = len(refused)
    await bob.page.get_by_role("button", name="Retry now").click()
    for _ in range(200):
        if len(refused) > tries:
            break
        await asyncio.sleep(0.05)
    assert len(refused) > tries
    await expect(ui.connection(bob.page)).to_have_attribute("data-state", "waiting")

    # The network comes back: the client reconnects without waiting out its backoff.
    reachable = True
    await bob.page.evaluate("window.dispatchEvent(new Event('online'))")
    await expect(ui.connection(bob.page)).to_have_attribute("data-state", "live")
    await expect(ui.messages(bob.page)).to_have_count(5)
    assert [(seq, text) for seq, _sender, text in await ui.shown(bob.page)] == [
        (1, "first"),
        (2, "second"),
        (3, "third"),
        (4, "fourth"),
        (5, "fifth"),
    ]
    # The reconnect asked for exactly what followed the last message Bob had.
    assert "after_seq=2" in bob_sockets[-1].url


async def test_history_loads_on_scroll_up_and_a_reply_jumps_to_its_message(
    people: People, stack: Stack
) -> None:
    total = 110
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        host = await anonymous(http)
        created = await http.post("/api/v1/rooms", json={"name": "Long history"}, headers=bearer(host))
        assert created.status_code == 201, created.text
        code = created.json()["code"]
        # Ten writers, so no one meets the send limit.
        for writer in range(total // 10):
            http.headers["X-Forwarded-For"] = f"10.251.{writer}.1"
            joined = await join(http, code, f"Writer_{writer:02d}")
            for line in range(10):
                number = writer * 10 + line + 1
                body: dict[str, object] = {"client_msg_id": f"seed-{number}", "text": f"line {number}"}
                if number == total:
                    body["reply_to_seq"] = 3
                sent = await http.post(
                    f"/api/v1/rooms/{code}/messages", json=body, headers=bearer(joined["room_token"])
                )
                assert sent.status_code == 201, sent.text

    reader = await people.new(MOBILE)
    await reader.page.goto(f"/c/{code}")
    await ui.join(reader.page, "ReaderLong")
    newest = reader.page.locator(f"article.msg[data-seq='{total}']")
    await expect(newest).to_be_in_viewport()
    await expect(ui.messages(reader.page)).to_have_count(50)

    # Tapping the quote of message 110 loads what lies between and shows message 3.
    await newest.locator(".quote").click()
    target = reader.page.locator("article.msg[data-seq='3']")
    await expect(target).to_be_focused()
    await expect(target).to_be_in_viewport()
    await expect(target).to_contain_text("line 3")

    # A fresh visit starts from the newest page; scrolling up brings the rest, each message once.
    await reader.page.reload()
    await expect(ui.messages(reader.page)).to_have_count(50)
    log = reader.page.get_by_role("log")
    for _ in range(10):
        if await reader.page.get_by_text("This is the start of Long history.").count():
            break
        await log.evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
        await reader.page.wait_for_timeout(300)
    await expect(reader.page.get_by_text("This is the start of Long history.")).to_be_visible()
    assert [seq for seq, _sender, _text in await ui.shown(reader.page)] == list(range(1, total + 1))

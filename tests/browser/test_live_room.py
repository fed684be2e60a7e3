"""The room is alive: who is here and who is typing across two edge processes, a network that goes
silent without closing anything, and a host's changes shown to everyone at once."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx
from playwright.async_api import Locator, Page, WebSocketRoute, expect

from tests.browser import ui
from tests.browser.harness import ARTIFACTS, DESKTOP, MOBILE, People
from tests.e2e.chat import anonymous, bearer, history, join

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

# A dead network must show within about ten seconds; the margin is for a busy test machine.
NOTICED = 15_000
RECONNECTED = 45_000


def panel(page: Page) -> Locator:
    return page.get_by_role("dialog", name="People in the room")


def person(page: Page, name: str, *, online: bool) -> Locator:
    state = "true" if online else "false"
    return panel(page).locator(f'.person[data-online="{state}"]', has_text=name)


class Tunnel:
    """A switch on a page's room WebSockets: frames can stop in either direction while the connection
    itself stays open, so no close event ever reaches the page (a train in a tunnel)."""

    def __init__(self) -> None:
        self.up = True  # page → server
        self.down = True  # server → page
        self.reachable = True  # new connections reach the server at all

    def route(self, socket: WebSocketRoute) -> None:
        if not self.reachable:
            # Open in the page, and silent: nothing goes anywhere.
            return
        server = socket.connect_to_server()
        socket.on_message(lambda message: server.send(message) if self.up else None)
        server.on_message(lambda message: socket.send(message) if self.down else None)
        # Whatever the server does meanwhile, the page is not told (no close arrives in a tunnel).
        server.on_close(lambda code, reason: None)

    def enter(self) -> None:
        self.up = self.down = self.reachable = False

    def leave(self) -> None:
        self.up = self.down = self.reachable = True

    async def install(self, page: Page) -> None:
        await page.route_web_socket(re.compile(r"/ws/v1/rooms/"), self.route)


async def type_slowly(page: Page, text: str) -> None:
    """Key by key over a few seconds, as a person types (typing is announced every few seconds)."""
    await ui.composer(page).press_sequentially(text, delay=250)


async def test_people_and_typing_across_two_edge_processes(people: People, stack: Stack) -> None:
    edge_2 = await stack.asecond_edge()
    alice = await people.new(DESKTOP)
    bob = await people.new(DESKTOP, base_url=edge_2)
    code = await ui.create_room(alice.page, "Two edges room")
    alice_name = await ui.join(alice.page, "AliceHere")
    await bob.page.goto(f"/c/{code}")
    bob_name = await ui.join(bob.page, "BobbyThere")

    # Alice (edge 1) sees Bob (edge 2) arrive, in the header and in the panel.
    await expect(alice.page.get_by_role("button", name="People in the room: 2 online")).to_be_visible()
    await alice.page.get_by_role("button", name="People in the room: 2 online").click()
    await expect(panel(alice.page)).to_be_visible()
    await expect(panel(alice.page).get_by_role("heading", name="People in the room")).to_be_focused()
    await expect(person(alice.page, alice_name, online=True)).to_contain_text("(you)")
    await expect(person(alice.page, alice_name, online=True)).to_contain_text("Host")
    await expect(person(alice.page, bob_name, online=True)).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await alice.page.screenshot(path=str(ARTIFACTS / "people-1280x800.png"))

    # Each sees the other typing, named, across the two processes.
    await type_slowly(bob.page, "hello from edge two")
    await expect(alice.page.locator(".typing")).to_have_text(f"{bob_name} is typing…")
    await ui.composer(bob.page).press("Enter")
    await type_slowly(alice.page, "hi Bobby")
    await expect(bob.page.locator(".typing")).to_have_text(f"{alice_name} is typing…")
    await ui.composer(alice.page).press("Enter")
    await expect(ui.messages(bob.page)).to_have_count(2)
    await expect(alice.page.locator(".typing")).to_have_text("")

    # A third person, on a phone, opens the list as a sheet.
    carol = await people.new(MOBILE)
    await carol.page.goto(f"/c/{code}")
    carol_name = await ui.join(carol.page, "CarolPhone")
    await expect(alice.page.get_by_role("button", name="People in the room: 3 online")).to_be_visible()
    await carol.page.get_by_role("button", name="People in the room: 3 online").click()
    await expect(person(carol.page, bob_name, online=True)).to_be_visible()
    await expect(person(carol.page, carol_name, online=True)).to_contain_text("(you)")
    await carol.page.screenshot(path=str(ARTIFACTS / "people-390x844.png"))
    await carol.page.keyboard.press("Escape")
    await expect(panel(carol.page)).to_have_count(0)
    await expect(carol.page.get_by_role("button", name=re.compile("^People in the room"))).to_be_focused()

    # Bob closes his page: everyone sees him offline, listed after the people online.
    await bob.page.close()
    await expect(person(alice.page, bob_name, online=False)).to_be_visible()
    await expect(alice.page.get_by_role("button", name="People in the room: 2 online")).to_be_visible()
    names = await panel(alice.page).locator(".person .person-name").all_inner_texts()
    assert names[-1] == bob_name, names
    await alice.page.get_by_role("button", name="Close the list of people").click()
    await expect(panel(alice.page)).to_have_count(0)


async def test_a_silent_network_is_noticed_and_resumes_without_gaps_or_doubles(
    people: People, stack: Stack
) -> None:
    alice = await people.new(DESKTOP)
    bob = await people.new(DESKTOP)
    code = await ui.create_room(alice.page, "Tunnel room")
    await ui.join(alice.page, "AliceOutside")

    tunnel = Tunnel()
    await tunnel.install(bob.page)
    await bob.page.goto(f"/c/{code}")
    bob_name = await ui.join(bob.page, "BobbyTunnel")
    await ui.send(alice.page, "one")
    await expect(ui.messages(bob.page)).to_have_count(1)

    # Frames from the server stop first: Bob's message gets to the room, its ack does not get back.
    tunnel.down = False
    await ui.send(bob.page, "sent into the dark")
    await expect(ui.messages(alice.page).filter(has_text="sent into the dark")).to_have_count(1)
    # Then nothing gets through either way.
    tunnel.enter()
    await expect(ui.connection(bob.page)).not_to_have_attribute("data-state", "live", timeout=NOTICED)
    await expect(ui.connection(bob.page)).to_contain_text("Connection lost")
    # Unacknowledged, it waits to be sent again; it no longer claims to be sending.
    await expect(ui.pending(bob.page).filter(has_text="sent into the dark")).to_contain_text(
        "Waiting to send…"
    )

    for text in ("two", "three", "four"):
        await ui.send(alice.page, text)
    await ui.send(bob.page, "typed in the tunnel")
    await expect(ui.pending(bob.page).filter(has_text="typed in the tunnel")).to_contain_text(
        "Waiting to send…"
    )
    await expect(ui.connection(bob.page)).not_to_have_attribute("data-state", "live")

    # The network comes back.
    tunnel.leave()
    await expect(ui.connection(bob.page)).to_have_attribute("data-state", "live", timeout=RECONNECTED)
    await expect(ui.messages(bob.page)).to_have_count(6, timeout=RECONNECTED)
    await expect(ui.pending(bob.page)).to_have_count(0)
    expected = ["one", "sent into the dark", "two", "three", "four", "typed in the tunnel"]
    shown = await ui.shown(bob.page)
    assert [seq for seq, _sender, _text in shown] == list(range(1, 7))
    assert sorted(text for _seq, _sender, text in shown) == sorted(expected)
    # Each person's own messages kept their order, and Alice sees the very same conversation.
    bobs = [text for _seq, sender, text in shown if sender == bob_name]
    assert bobs == ["sent into the dark", "typed in the tunnel"]
    await expect(ui.messages(alice.page)).to_have_count(6)
    assert await ui.shown(alice.page) == shown

    # The room stored each message once, even the one whose ack was lost and was sent again.
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=10, headers={"X-Forwarded-For": "10.250.1.1"}
    ) as http:
        reader = await join(http, code, "ReaderTunnel")
        stored = await history(http, code, reader["room_token"])
    assert [(m["seq"], m["sender"]["username"], m["text"]) for m in stored] == shown


async def test_the_host_changes_and_closes_the_room_while_people_watch(people: People, stack: Stack) -> None:
    edge_2 = await stack.asecond_edge()
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=10, headers={"X-Forwarded-For": "10.250.2.1"}
    ) as http:
        host = await anonymous(http)
        created = await http.post(
            "/api/v1/rooms",
            json={"name": "Before the change", "description": "Old words", "theme": "purple-dream"},
            headers=bearer(host),
        )
        assert created.status_code == 201, created.text
        code = created.json()["code"]

        near = await people.new(DESKTOP)
        far = await people.new(MOBILE, base_url=edge_2)
        tunnel = Tunnel()
        await tunnel.install(near.page)
        for watcher, name in ((near, "WatcherNear"), (far, "WatcherFar")):
            await watcher.page.goto(f"/c/{code}")
            await ui.join(watcher.page, name)
            await expect(watcher.page.get_by_role("heading", name="Before the change")).to_be_visible()
            await expect(watcher.page.locator("html")).to_have_attribute("data-theme", "purple-dream")

        # The near one is in a tunnel while the host changes the room: the change is lost on the way
        # to them, and shows as soon as they are connected again.
        tunnel.enter()
        await expect(ui.connection(near.page)).not_to_have_attribute("data-state", "live", timeout=NOTICED)
        changed = await http.patch(
            f"/api/v1/rooms/{code}",
            json={"name": "After the change", "description": "New words", "theme": "dark-mode"},
            headers=bearer(host),
        )
        assert changed.status_code == 200, changed.text
        await expect(far.page.get_by_role("heading", name="After the change")).to_be_visible()
        await expect(near.page.get_by_role("heading", name="Before the change")).to_be_visible()
        tunnel.leave()
        await expect(ui.connection(near.page)).to_have_attribute("data-state", "live", timeout=RECONNECTED)
        for watcher in (near, far):
            page = watcher.page
            await expect(page.get_by_role("heading", name="After the change")).to_be_visible()
            await expect(page.locator("html")).to_have_attribute("data-theme", "dark-mode")
            await expect(page.locator('meta[name="theme-color"]')).to_have_attribute("content", "#18181b")
            await expect(page.get_by_text("New words")).to_be_visible()

        closed = await http.post(f"/api/v1/rooms/{code}/close", headers=bearer(host))
        assert closed.status_code == 200, closed.text
        for watcher in (near, far):
            page = watcher.page
            await expect(page.get_by_text("The host closed this room.")).to_be_visible()
            await expect(ui.composer(page)).to_be_disabled()

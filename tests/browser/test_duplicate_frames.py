"""The client shows each message once and in seq order whatever path brings it: a frame the network
delivers twice, a history page that overlaps frames already shown, a live frame that arrives after
the page that held the same message. The edge never sends a duplicate itself, so the room socket runs
through a route that doubles or holds back the server's real frames, and the history requests through
one that can hold their answers back.

Doubles must not only stay off the screen: a message already shown is not news, so it must not count
in the tab title again nor notify again."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from playwright.async_api import Page, Route, WebSocketRoute, expect

from tests.browser import ui
from tests.browser.harness import DESKTOP, People, Person
from tests.browser.test_everyday import BACKGROUND, RECORD_NOTIFICATIONS, visit

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

ROOM_SOCKET = re.compile(r"/ws/v1/rooms/")
HISTORY = re.compile(r"/api/v1/rooms/[^/]+/messages\?")


async def background_reader(person: Person, stack: Stack) -> None:
    """Notifications allowed and recorded, and a switch that puts the page in the background."""
    await person.context.add_init_script(BACKGROUND)
    await person.context.add_init_script(RECORD_NOTIFICATIONS)
    await person.context.grant_permissions(["notifications"], origin=stack.base_url)


async def turn_on_notifications(page: Page) -> None:
    await page.get_by_role("button", name="Notifications for new messages").click()
    await expect(page.get_by_text("You'll be notified of new messages")).to_be_visible()


async def notified(page: Page) -> list[str]:
    """The bodies of the notifications the page has shown, oldest first."""
    return [note["body"] for note in await page.evaluate("window.__notifications")]


def seq_of(raw: str | bytes) -> int | None:
    """The seq of a message frame, None for any other frame."""
    frame = json.loads(raw)
    return frame["seq"] if frame.get("type") == "message" else None


class Doubler:
    """Every frame the server writes reaches the page twice, back to back."""

    def __init__(self) -> None:
        self.message_frames = 0

    def route(self, socket: WebSocketRoute) -> None:
        server = socket.connect_to_server()

        def down(raw: str | bytes) -> None:
            if seq_of(raw) is not None:
                self.message_frames += 1
            socket.send(raw)
            socket.send(raw)

        server.on_message(down)


class Holdback:
    """Message frames whose seq is in `hold` wait until `release()`; every other frame goes through."""

    def __init__(self) -> None:
        self.hold: set[int] = set()
        self.held: list[int] = []
        self._release: list[Callable[[], None]] = []

    def route(self, socket: WebSocketRoute) -> None:
        server = socket.connect_to_server()

        def down(raw: str | bytes) -> None:
            seq = seq_of(raw)
            if seq in self.hold:
                self.held.append(seq)
                self._release.append(lambda: socket.send(raw))
                return
            socket.send(raw)

        server.on_message(down)

    def release(self) -> None:
        for send in self._release:
            send()
        self._release.clear()


class HistoryGate:
    """Records the history pages the page asks for (by `before_seq`); pages for a `before_seq` in
    `gates` are answered only once that gate opens."""

    def __init__(self) -> None:
        self.asked: list[int | None] = []
        self.gates: dict[int, asyncio.Event] = {}

    async def route(self, route: Route) -> None:
        if route.request.method != "GET":
            await route.fallback()
            return
        found = re.search(r"[?&]before_seq=(\d+)", route.request.url)
        before = int(found.group(1)) if found else None
        self.asked.append(before)
        if before is not None and before in self.gates:
            await self.gates[before].wait()
        await route.continue_()

    async def asked_for(self, before_seq: int) -> None:
        await until(lambda: before_seq in self.asked, f"a history page before seq {before_seq}")


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


async def settled(page: Page) -> None:
    """Let the page finish what it was handed (a response body, queued frames) before looking."""
    await page.evaluate(
        "() => new Promise((done) => setTimeout(() => requestAnimationFrame(() => done(null)), 200))"
    )


async def shown_once_in_order(page: Page, expected: list[str]) -> None:
    await expect(ui.messages(page)).to_have_count(len(expected))
    on_screen = await ui.shown(page)
    assert [(seq, text) for seq, _sender, text in on_screen] == list(enumerate(expected, start=1))


async def test_every_frame_delivered_twice_shows_each_message_once(people: People, stack: Stack) -> None:
    host = await people.new(DESKTOP)
    guest = await people.new(DESKTOP)
    await background_reader(guest, stack)
    doubler = Doubler()
    await guest.page.route_web_socket(ROOM_SOCKET, doubler.route)

    code = await ui.create_room(host.page, "Echo room")
    await ui.join(host.page, "EchoHost")
    await visit(guest, code, "EchoGuest")
    await turn_on_notifications(guest.page)
    await expect(guest.page).to_have_title("Echo room · ChatPop")

    await ui.send(host.page, "one")
    await expect(ui.messages(guest.page)).to_have_count(1)
    await ui.send_acknowledged(guest.page, "two")
    await ui.send(host.page, "three")
    await shown_once_in_order(guest.page, ["one", "two", "three"])
    # The guest's own message was acknowledged (twice) and is no longer pending.
    await expect(ui.pending(guest.page)).to_have_count(0)

    await guest.page.evaluate("window.__setHidden(true)")
    await ui.send(host.page, "four")
    await ui.send(host.page, "five")
    await expect(ui.messages(guest.page)).to_have_count(5)
    # The guest's own message comes after both copies of "five" on the same socket: once it is
    # shown, every double before it has been handled.
    await ui.send(guest.page, "six")
    await shown_once_in_order(guest.page, ["one", "two", "three", "four", "five", "six"])
    await expect(ui.pending(guest.page)).to_have_count(0)
    assert await notified(guest.page) == ["four", "five"]
    await expect(guest.page).to_have_title("(2) Echo room · ChatPop")

    # The route really did double the room's frames (six messages, each written twice).
    assert doubler.message_frames >= 6
    await guest.page.evaluate("window.__setHidden(false)")
    await expect(guest.page).to_have_title("Echo room · ChatPop")


async def test_a_history_page_overlapping_live_frames_shows_each_message_once_in_order(
    people: People, stack: Stack
) -> None:
    host = await people.new(DESKTOP)
    guest = await people.new(DESKTOP)
    await background_reader(guest, stack)
    frames = Holdback()
    pages = HistoryGate()
    await guest.page.route_web_socket(ROOM_SOCKET, frames.route)
    await guest.page.route(HISTORY, pages.route)

    code = await ui.create_room(host.page, "Overlap room")
    await ui.join(host.page, "OverlapHost")
    await ui.send(host.page, "one")
    await visit(guest, code, "OverlapGuest")
    await turn_on_notifications(guest.page)
    await shown_once_in_order(guest.page, ["one"])

    # Live frames over a history page: 3 and 4 are held back, 5 arrives beyond the hole, and the
    # client fetches the hole as a history page. Then the held frames come after all.
    frames.hold = {3, 4}
    for text in ("two", "three", "four", "five"):
        await ui.send(host.page, text)
    await pages.asked_for(5)
    await shown_once_in_order(guest.page, ["one", "two", "three", "four", "five"])
    assert frames.held == [3, 4]

    await guest.page.evaluate("window.__setHidden(true)")
    frames.release()
    # "six" follows the released frames on the same socket: once it is shown, they were handled.
    await ui.send(host.page, "six")
    await shown_once_in_order(guest.page, ["one", "two", "three", "four", "five", "six"])
    # Only "six" is news: "three" and "four" were on screen already.
    assert await notified(guest.page) == ["six"]
    await expect(guest.page).to_have_title("(1) Overlap room · ChatPop")
    await guest.page.evaluate("window.__setHidden(false)")
    await expect(guest.page).to_have_title("Overlap room · ChatPop")

    # A history page over live frames: 7 is held back, 8 arrives beyond the hole, the page asked for
    # is held back too; 7 arrives live first, then the page with 7 in it.
    frames.hold = {7}
    pages.gates[8] = asyncio.Event()
    await ui.send(host.page, "seven")
    await ui.send(host.page, "eight")
    await pages.asked_for(8)
    await expect(ui.messages(guest.page)).to_have_count(7)
    frames.release()
    await shown_once_in_order(guest.page, ["one", "two", "three", "four", "five", "six", "seven", "eight"])
    async with guest.page.expect_response(lambda response: "before_seq=8" in response.url) as answer:
        pages.gates[8].set()
    await (await answer.value).finished()
    await settled(guest.page)
    await shown_once_in_order(guest.page, ["one", "two", "three", "four", "five", "six", "seven", "eight"])
    assert frames.held == [3, 4, 7]
    assert await notified(guest.page) == ["six"]

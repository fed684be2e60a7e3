"""Reactions and deleting messages in the web client, as people see them on every screen: live, for
someone who joins later (history), for someone whose connection dropped meanwhile (resume), through a
hole in the live stream (a gap filled over REST), and against what the room stores (a fresh
snapshot equals the old one plus the live changes).

Reactions and deletions are entries of the room's log with seqs of their own, so a client resumes
after the last entry it saw, whatever its kind; one of a kind it does not know still counts."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import httpx
from playwright.async_api import Locator, Page, Request, WebSocketRoute, expect

from tests.browser import ui
from tests.browser.harness import ARTIFACTS, DESKTOP, MOBILE, People
from tests.browser.test_chat import assert_labelled, png_size
from tests.browser.test_everyday import visit
from tests.e2e.chat import bearer, join

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

THUMBS = "\U0001f44d"
HEART = "\u2764\ufe0f"
LAUGH = "\U0001f602"
WOW = "\U0001f62e"
ROOM_SOCKET = re.compile(r"/ws/v1/rooms/")
HISTORY = re.compile(r"/api/v1/rooms/[^/]+/messages\?")

# seq → emoji → [count, is it mine]: the reactions a page shows under each message.
REACTIONS_SHOWN = """els => Object.fromEntries(els.map(el => [el.dataset.seq, Object.fromEntries(
  [...el.querySelectorAll('.reaction')].map(r => [r.dataset.emoji, [
    Number(r.querySelector('.reaction-count').textContent),
    r.getAttribute('aria-pressed') === 'true',
  ]]))]))"""


def message(page: Page, seq: int) -> Locator:
    return page.locator(f"article.msg[data-seq='{seq}']")


def chip(page: Page, seq: int, emoji: str) -> Locator:
    return message(page, seq).locator(f".reaction[data-emoji='{emoji}']")


async def say(page: Page, text: str, seq: int) -> None:
    """Send `text` and wait until the room has it as message `seq` (so the next send comes after)."""
    await ui.send(page, text)
    await expect(message(page, seq).locator(".msg-text")).to_have_text(text)


async def react(page: Page, seq: int, emoji: str) -> None:
    """Open the message's picker and choose `emoji` (which takes it off when it is already on)."""
    target = message(page, seq)
    await target.hover()
    await target.get_by_role("button", name=re.compile(r"^Add a reaction")).click()
    picker = target.get_by_role("toolbar", name="Choose a reaction")
    await expect(picker).to_be_visible()
    await picker.locator(f"button[data-emoji='{emoji}']").click()
    await expect(picker).to_have_count(0)


async def expect_chip(page: Page, seq: int, emoji: str, count: int, mine: bool) -> None:
    shown = chip(page, seq, emoji)
    await expect(shown.locator(".reaction-count")).to_have_text(str(count))
    await expect(shown).to_have_attribute("aria-pressed", "true" if mine else "false")
    await expect(shown).not_to_have_attribute("aria-busy", "true")


async def reactions_shown(page: Page) -> dict[int, dict[str, tuple[int, bool]]]:
    raw = await ui.messages(page).evaluate_all(REACTIONS_SHOWN)
    return {int(seq): {e: (int(c), bool(m)) for e, (c, m) in shown.items()} for seq, shown in raw.items()}


def counts(shown: dict[int, dict[str, tuple[int, bool]]]) -> dict[int, dict[str, int]]:
    return {seq: {emoji: count for emoji, (count, _mine) in r.items()} for seq, r in shown.items()}


def mine(shown: dict[int, dict[str, tuple[int, bool]]]) -> dict[int, set[str]]:
    return {seq: {emoji for emoji, (_count, m) in r.items() if m} for seq, r in shown.items()}


class Switch:
    """A person's room socket through a switch the test controls (a train entering a tunnel); it can
    also rewrite the server's frames on their way to the page."""

    def __init__(self, rewrite: Any = None) -> None:
        self.reachable = True
        self.sockets: list[WebSocketRoute] = []
        self.rewrite = rewrite

    async def route(self, socket: WebSocketRoute) -> None:
        if not self.reachable:
            await socket.close(code=4000, reason="unreachable")
            return
        server = socket.connect_to_server()
        self.sockets.append(socket)
        if self.rewrite is not None:
            server.on_message(lambda raw: self._down(socket, raw))

    def _down(self, socket: WebSocketRoute, raw: str | bytes) -> None:
        frame = self.rewrite(json.loads(raw))
        if frame is not None:
            socket.send(json.dumps(frame))

    async def cut(self, page: Page) -> None:
        self.reachable = False
        await self.sockets[-1].close(code=4000, reason="tunnel")
        await expect(ui.connection(page)).not_to_have_attribute("data-state", "live")

    async def restore(self, page: Page) -> None:
        self.reachable = True
        await page.evaluate("window.dispatchEvent(new Event('online'))")
        await expect(ui.connection(page)).to_have_attribute("data-state", "live", timeout=30_000)


def after_seq(url: str) -> int:
    match = re.search(r"[?&]after_seq=(\d+)", url)
    assert match is not None, url
    return int(match.group(1))


async def stored_state(stack: Stack, code: str, address: str) -> dict[int, dict[str, Any]]:
    """seq → (text, deleted, deleted_by_host, reactions) as a newcomer reads the room over REST."""
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=10, headers={"X-Forwarded-For": address}
    ) as http:
        reader = await join(http, code, "RestReader")
        response = await http.get(
            f"/api/v1/rooms/{code}/messages", params={"limit": 100}, headers=bearer(reader["room_token"])
        )
        assert response.status_code == 200, response.text
        return {
            m["seq"]: {
                "text": m["text"],
                "deleted": m["deleted"],
                "by_host": m["deleted_by_host"],
                "reactions": m["reactions"],
            }
            for m in response.json()["messages"]
        }


# --- reactions -----------------------------------------------------------------------------------


async def test_reactions_show_live_and_the_same_after_a_resume_and_for_a_newcomer(
    people: People, stack: Stack
) -> None:
    host = await people.new(MOBILE)
    code = await ui.create_room(host.page, "Pizza poll")
    await ui.join(host.page, "HostPizza")
    guest = await people.new(DESKTOP)
    await visit(guest, code, "GuestPizza")

    # Carol's connection will drop while the others react.
    carol = await people.new(DESKTOP)
    carol_switch = Switch()
    await carol.page.route_web_socket(ROOM_SOCKET, carol_switch.route)
    await visit(carol, code, "CarolPizza")

    await say(host.page, "Pizza tonight?", 1)
    await say(guest.page, "Yes please", 2)
    for person in (host, guest, carol):
        await expect(ui.messages(person.page)).to_have_count(2)
    # Nothing to count yet: no reaction bar at all.
    await expect(host.page.locator(".reactions")).to_have_count(0)
    await carol_switch.cut(carol.page)

    # The guest picks 👍 from the picker: counted and highlighted at once, and on the host's screen.
    await react(guest.page, 1, THUMBS)
    await expect_chip(guest.page, 1, THUMBS, 1, mine=True)
    await expect_chip(host.page, 1, THUMBS, 1, mine=False)
    # The host taps the guest's 👍 to add theirs, then adds ❤️ and, on the guest's message, 😂.
    await chip(host.page, 1, THUMBS).click()
    await expect_chip(host.page, 1, THUMBS, 2, mine=True)
    await react(host.page, 1, HEART)
    await react(host.page, 2, LAUGH)
    await expect_chip(guest.page, 1, THUMBS, 2, mine=True)
    await expect_chip(guest.page, 1, HEART, 1, mine=False)
    await expect_chip(guest.page, 2, LAUGH, 1, mine=False)
    # The guest changes their mind: tapping their own 👍 takes it off, everywhere.
    await chip(guest.page, 1, THUMBS).click()
    await expect_chip(guest.page, 1, THUMBS, 1, mine=False)
    await expect_chip(host.page, 1, THUMBS, 1, mine=True)
    # A 😮 on and off again leaves nothing behind.
    await react(guest.page, 2, WOW)
    await expect_chip(host.page, 2, WOW, 1, mine=False)
    await react(guest.page, 2, WOW)
    await expect(chip(host.page, 2, WOW)).to_have_count(0)
    await expect(chip(guest.page, 2, WOW)).to_have_count(0)

    expected = {1: {THUMBS: 1, HEART: 1}, 2: {LAUGH: 1}}
    on_host = await reactions_shown(host.page)
    on_guest = await reactions_shown(guest.page)
    assert counts(on_host) == counts(on_guest) == expected
    assert mine(on_host) == {1: {THUMBS, HEART}, 2: {LAUGH}}
    assert mine(on_guest) == {1: set(), 2: set()}
    # 2 messages and 7 reaction changes: 9 entries in the room's log.
    last_entry = 9

    # Carol comes back: her socket resumes after the last entry she saw (message 2) and gets the
    # changes she missed, in order, with nothing read again over REST.
    history_reads: list[str] = []

    def on_request(request: Request) -> None:
        if HISTORY.search(request.url):
            history_reads.append(request.url)

    carol.page.on("request", on_request)
    await carol_switch.restore(carol.page)
    assert after_seq(carol_switch.sockets[-1].url) == 2
    await expect_chip(carol.page, 1, HEART, 1, mine=False)
    await expect_chip(carol.page, 2, LAUGH, 1, mine=False)
    await expect(chip(carol.page, 2, WOW)).to_have_count(0)
    assert counts(await reactions_shown(carol.page)) == expected
    assert history_reads == []
    # Her position now counts the reactions too: the next reconnect resumes after the last entry.
    await carol_switch.cut(carol.page)
    await carol_switch.restore(carol.page)
    assert after_seq(carol_switch.sockets[-1].url) == last_entry
    assert history_reads == []

    # Dave joins now: the history page folds every change into the messages' state.
    dave = await people.new(MOBILE)
    await visit(dave, code, "DavePizza")
    await expect_chip(dave.page, 1, THUMBS, 1, mine=False)
    await expect_chip(dave.page, 1, HEART, 1, mine=False)
    assert counts(await reactions_shown(dave.page)) == expected
    # The host, reading again (a reload), keeps their own reactions highlighted.
    await host.page.reload()
    await expect(ui.connection(host.page)).to_have_attribute("data-state", "live")
    await expect_chip(host.page, 1, THUMBS, 1, mine=True)
    assert await reactions_shown(host.page) == on_host
    # And what every screen shows is what the room stores.
    stored = await stored_state(stack, code, "10.249.1.1")
    assert {seq: m["reactions"] for seq, m in stored.items()} == expected

    # People who react on a screen reader hear who reacted with what.
    await expect(chip(dave.page, 1, THUMBS)).to_have_accessible_name("thumbs up: 1 person")
    await expect(chip(host.page, 1, THUMBS)).to_have_accessible_name("thumbs up: 1 person, including you")
    await assert_labelled(host.page)
    await assert_labelled(guest.page)

    # The picker works from the keyboard: arrows move, Enter picks, Escape closes it and gives the
    # focus back.
    opener = message(guest.page, 2).get_by_role("button", name=re.compile(r"^Add a reaction"))
    await message(guest.page, 2).hover()
    await opener.focus()
    await guest.page.keyboard.press("Enter")
    picker = message(guest.page, 2).get_by_role("toolbar", name="Choose a reaction")
    await expect(picker.locator(f"button[data-emoji='{THUMBS}']")).to_be_focused()
    await guest.page.keyboard.press("Escape")
    await expect(picker).to_have_count(0)
    await expect(opener).to_be_focused()
    await guest.page.keyboard.press("Enter")
    await guest.page.keyboard.press("ArrowRight")
    await expect(picker.locator(f"button[data-emoji='{HEART}']")).to_be_focused()
    await guest.page.keyboard.press("Enter")
    await expect_chip(host.page, 2, HEART, 1, mine=False)

    # On a phone a long press on the message opens the picker too.
    bubble = message(dave.page, 2).locator(".msg-text")
    await bubble.dispatch_event("pointerdown", {"pointerType": "touch", "isPrimary": True, "bubbles": True})
    await expect(message(dave.page, 2).get_by_role("toolbar", name="Choose a reaction")).to_be_visible()
    await bubble.dispatch_event("pointerup", {"pointerType": "touch", "isPrimary": True, "bubbles": True})
    await message(dave.page, 2).get_by_role("toolbar").locator(f"button[data-emoji='{HEART}']").click()
    await expect_chip(host.page, 2, HEART, 2, mine=False)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    mobile_shot = ARTIFACTS / "reactions-mobile-390x844.png"
    desktop_shot = ARTIFACTS / "reactions-desktop-1280x800.png"
    await message(host.page, 1).get_by_role("button", name=re.compile(r"^Add a reaction")).click()
    await expect(message(host.page, 1).get_by_role("toolbar")).to_be_visible()
    await host.page.screenshot(path=str(mobile_shot))
    await guest.page.screenshot(path=str(desktop_shot))
    assert png_size(mobile_shot) == (390 * 2, 844 * 2)
    assert png_size(desktop_shot) == (1280, 800)


async def test_a_refused_reaction_is_taken_back_and_says_why(people: People) -> None:
    person = await people.new(MOBILE)
    await ui.create_room(person.page, "Too keen", theme="ocean-blue")
    await ui.join(person.page, "KeenReactor")
    await say(person.page, "React to this", 1)

    async def too_fast(route: Any) -> None:
        body = {"error": {"code": "rate_limited", "message": "Too many reactions.", "retry_after": 12}}
        await route.fulfill(status=429, content_type="application/json", body=json.dumps(body))

    await person.page.route(re.compile(r"/messages/\d+/reactions$"), too_fast)
    await react(person.page, 1, THUMBS)
    await expect(person.page.get_by_role("alert").filter(has_text="reacting too fast")).to_contain_text(
        "in 12 seconds"
    )
    await expect(chip(person.page, 1, THUMBS)).to_have_count(0)

    await person.page.unroute(re.compile(r"/messages/\d+/reactions$"))
    await react(person.page, 1, THUMBS)
    await expect_chip(person.page, 1, THUMBS, 1, mine=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await person.page.screenshot(path=str(ARTIFACTS / "reactions-ocean-blue-390x844.png"))


async def test_entries_missed_in_a_hole_are_filled_and_unknown_kinds_still_count(people: People) -> None:
    host = await people.new(DESKTOP)
    code = await ui.create_room(host.page, "Holes")
    await ui.join(host.page, "HostHoles")
    await say(host.page, "one", 1)
    await say(host.page, "two", 2)

    # Erin's network loses one reaction frame; every reaction frame after it comes as a kind of
    # entry her client has never heard of (as a frame from a newer server would).
    dropped: list[int] = []
    renamed: list[int] = []

    def rewrite(frame: dict[str, Any]) -> dict[str, Any] | None:
        if frame.get("type") != "reaction":
            return frame
        if not dropped:
            dropped.append(frame["seq"])
            return None
        if frame["emoji"] == LAUGH:
            renamed.append(frame["seq"])
            return {"type": "kind_from_the_future", "seq": frame["seq"], "target_seq": frame["target_seq"]}
        return frame

    erin = await people.new(DESKTOP)
    erin_switch = Switch(rewrite)
    await erin.page.route_web_socket(ROOM_SOCKET, erin_switch.route)
    history_reads: list[str] = []
    erin.page.on("request", lambda r: history_reads.append(r.url) if HISTORY.search(r.url) else None)
    await visit(erin, code, "ErinHoles")
    await expect(ui.messages(erin.page)).to_have_count(2)
    reads_at_join = len(history_reads)

    await react(host.page, 1, THUMBS)  # seq 3: lost on the way to Erin
    await react(host.page, 2, HEART)  # seq 4: beyond a hole, so Erin reads the hole over REST
    await expect_chip(erin.page, 2, HEART, 1, mine=False)
    # The hole held a change, not a message: it may have been to an older message, whose state is
    # read again too.
    await expect_chip(erin.page, 1, THUMBS, 1, mine=False)
    assert dropped == [3]
    fills = history_reads[reads_at_join:]
    assert len(fills) == 2 and "before_seq=4" in fills[0] and "before_seq=2" in fills[1], fills

    # A kind Erin's client does not know (seq 5) shows nothing but is accounted for: no hole, no read.
    await react(host.page, 1, LAUGH)
    await say(host.page, "three", 6)
    await expect(ui.messages(erin.page)).to_have_count(3)
    assert renamed == [5]
    assert len(history_reads) == reads_at_join + 2
    await erin_switch.cut(erin.page)
    await erin_switch.restore(erin.page)
    assert after_seq(erin_switch.sockets[-1].url) == 6
    await expect(chip(erin.page, 1, LAUGH)).to_have_count(0)
    assert len(history_reads) == reads_at_join + 2


# --- deletion ------------------------------------------------------------------------------------


async def test_deleting_a_message_removes_it_for_everyone_and_the_host_deletes_any(
    people: People, stack: Stack
) -> None:
    host = await people.new(MOBILE)
    code = await ui.create_room(host.page, "Careful now", theme="dark-mode")
    host_name = await ui.join(host.page, "HostCareful")
    guest = await people.new(DESKTOP)
    guest_name = await visit(guest, code, "GuestCareful")
    # Frank was offline through all of it and resumes at the end.
    frank = await people.new(DESKTOP)
    frank_switch = Switch()
    await frank.page.route_web_socket(ROOM_SOCKET, frank_switch.route)
    await visit(frank, code, "FrankCareful")

    await say(guest.page, "my number is 555-0199", 1)
    await message(host.page, 1).get_by_role("button", name=f"Reply to {guest_name}").click()
    await say(host.page, "Please don't post numbers", 2)  # a reply to 1
    await say(guest.page, "buy cheap watches", 3)
    await say(host.page, "Welcome all", 4)
    for person in (host, guest, frank):
        await expect(ui.messages(person.page)).to_have_count(4)
    await react(host.page, 1, HEART)  # 5
    await expect_chip(guest.page, 1, HEART, 1, mine=False)
    await frank_switch.cut(frank.page)

    # Delete shows on one's own messages only, and on every message for the host.
    await expect(message(guest.page, 1).get_by_role("button", name="Delete your message")).to_have_count(1)
    await expect(message(guest.page, 2).get_by_role("button", name=re.compile("^Delete"))).to_have_count(0)
    await expect(message(guest.page, 4).get_by_role("button", name=re.compile("^Delete"))).to_have_count(0)
    await expect(
        message(host.page, 3).get_by_role("button", name=f"Delete {guest_name}'s message")
    ).to_have_count(1)

    # It asks first; "Cancel" keeps the message.
    await message(guest.page, 1).hover()
    await message(guest.page, 1).get_by_role("button", name="Delete your message").click()
    dialog = guest.page.get_by_role("dialog", name="Delete your message?")
    await expect(dialog).to_contain_text("my number is 555-0199")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_have_count(0)
    await expect(message(guest.page, 1)).to_contain_text("my number is 555-0199")

    # The guest deletes their own message: its text and reactions go on every screen, its place stays,
    # and the reply to it quotes "deleted".
    await message(guest.page, 1).hover()
    await message(guest.page, 1).get_by_role("button", name="Delete your message").click()
    await dialog.get_by_role("button", name="Delete message").click()
    await expect(dialog).to_have_count(0)
    for person in (host, guest):
        deleted = message(person.page, 1)
        await expect(deleted).to_have_attribute("data-deleted", "true")
        await expect(deleted.locator(".msg-text")).to_have_text("Message deleted")
        await expect(deleted.locator(".reaction")).to_have_count(0)
        await expect(deleted.get_by_role("button")).to_have_count(0)
        await expect(person.page.get_by_text("555-0199")).to_have_count(0)
        await expect(message(person.page, 2).locator(".quote-text")).to_have_text("deleted")
        await expect(ui.messages(person.page)).to_have_count(4)

    # The host deletes the guest's spam: "Deleted by the host" everywhere.
    await message(host.page, 3).get_by_role("button", name=f"Delete {guest_name}'s message").click()
    host_dialog = host.page.get_by_role("dialog", name=f"Delete {guest_name}'s message?")
    await expect(host_dialog).to_contain_text("Deleted by the host")
    await host_dialog.get_by_role("button", name="Delete message").click()
    for person in (host, guest):
        await expect(message(person.page, 3).locator(".msg-text")).to_have_text("Deleted by the host")
        await expect(person.page.get_by_text("cheap watches")).to_have_count(0)
    # The host may also take back their own words (shown as their own deletion, not a moderation).
    await message(host.page, 4).get_by_role("button", name="Delete your message").click()
    await (
        host.page.get_by_role("dialog", name="Delete your message?")
        .get_by_role("button", name="Delete message")
        .click()
    )
    await expect(message(guest.page, 4).locator(".msg-text")).to_have_text("Message deleted")
    # The pinned bar no longer shows the host's deleted message; the reply the host wrote stays.
    await expect(guest.page.get_by_role("region", name="Pinned messages")).to_contain_text(
        "Please don't post numbers"
    )

    expected = [
        (1, guest_name, "Message deleted"),
        (2, host_name, "Please don't post numbers"),
        (3, guest_name, "Deleted by the host"),
        (4, host_name, "Message deleted"),
    ]
    assert await ui.shown(host.page) == await ui.shown(guest.page) == expected

    # Frank resumes: the deletions he missed apply, in their places.
    await frank_switch.restore(frank.page)
    await expect(message(frank.page, 3).locator(".msg-text")).to_have_text("Deleted by the host")
    await expect(message(frank.page, 1).locator(".reaction")).to_have_count(0)
    await expect(message(frank.page, 2).locator(".quote-text")).to_have_text("deleted")
    assert await ui.shown(frank.page) == expected
    # A newcomer's history says the same, and so does the room's store.
    gina = await people.new(MOBILE)
    await visit(gina, code, "GinaCareful")
    await expect(ui.messages(gina.page)).to_have_count(4)
    await expect(message(gina.page, 2).locator(".quote-text")).to_have_text("deleted")
    assert await ui.shown(gina.page) == expected
    stored = await stored_state(stack, code, "10.249.2.1")
    assert [
        (seq, m["deleted"], m["by_host"], m["text"], m["reactions"]) for seq, m in sorted(stored.items())
    ] == [
        (1, True, False, "", {}),
        (2, False, False, "Please don't post numbers", {}),
        (3, True, True, "", {}),
        (4, True, False, "", {}),
    ]

    await assert_labelled(host.page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    mobile_shot = ARTIFACTS / "deleted-mobile-390x844.png"
    desktop_shot = ARTIFACTS / "deleted-desktop-1280x800.png"
    await host.page.screenshot(path=str(mobile_shot))
    await guest.page.screenshot(path=str(desktop_shot))
    assert png_size(mobile_shot) == (390 * 2, 844 * 2)
    assert png_size(desktop_shot) == (1280, 800)


async def test_a_host_message_deleted_while_someone_replies_to_it(people: People) -> None:
    host = await people.new(DESKTOP)
    code = await ui.create_room(host.page, "Quick change")
    host_name = await ui.join(host.page, "HostQuick")
    guest = await people.new(MOBILE)
    await visit(guest, code, "GuestQuick")
    await say(host.page, "Meeting at 6", 1)
    await expect(ui.messages(guest.page)).to_have_count(1)

    # The guest starts a reply; the host deletes the message meanwhile: the reply bar says so, and
    # the reply, once sent, quotes "deleted".
    await message(guest.page, 1).get_by_role("button", name=f"Reply to {host_name}").click()
    await expect(guest.page.locator(".replying")).to_contain_text("Meeting at 6")
    await message(host.page, 1).hover()
    await message(host.page, 1).get_by_role("button", name="Delete your message").click()
    await host.page.get_by_role("dialog").get_by_role("button", name="Delete message").click()
    await expect(guest.page.locator(".replying")).to_contain_text("deleted")
    await expect(guest.page.locator(".replying")).not_to_contain_text("Meeting at 6")
    await expect(guest.page.get_by_role("region", name="Pinned messages")).to_have_count(0)
    await ui.send(guest.page, "What time then?")
    for person in (host, guest):
        reply = person.page.locator("article.msg", has_text="What time then?")
        await expect(reply.locator(".quote-text")).to_have_text("deleted")

"""The host's and everyone's safety tools in the web client, as people see them: a ban ends the banned
person's room at once (and only theirs), reports hide a message until the host restores it, the host's
pins and sticky message reach newcomers and reconnecting guests, and a personal mute hides a person's
messages until it is lifted."""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING

import httpx
from playwright.async_api import Locator, Page, expect

from tests.admin_cli import admin_cli
from tests.browser import ui
from tests.browser.harness import ARTIFACTS, DESKTOP, MOBILE, People
from tests.browser.test_chat import assert_labelled
from tests.browser.test_everyday import visit
from tests.browser.test_reactions_and_deletion import ROOM_SOCKET, Switch, say

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

ADMIN_PASSWORD = "a browser admin passphrase"


def message(page: Page, seq: int) -> Locator:
    return page.locator(f"article.msg[data-seq='{seq}']")


async def message_action(page: Page, seq: int, action: str) -> None:
    """Open the message's "more" list and choose `action` (its visible label)."""
    target = message(page, seq)
    await target.hover()
    await target.get_by_role("button", name=re.compile(r"^More actions on")).click()
    await target.locator(".more-list").get_by_role("button", name=re.compile(f"^{re.escape(action)}")).click()


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name))


async def test_a_banned_guest_sees_the_banned_screen_at_once_while_the_host_stays_live(
    people: People, stack: Stack
) -> None:
    host = await people.new(DESKTOP)
    code = await ui.create_room(host.page, "Book club")
    await ui.join(host.page, "HostBooks")
    guest = await people.new(MOBILE)
    guest_name = await visit(guest, code, "Troll")
    other = await people.new(DESKTOP)
    await visit(other, code, "Reader")

    await say(guest.page, "buy cheap watches", 1)
    await expect(message(host.page, 1)).to_be_visible()

    # The host bans the guest from the message's menu, choosing a tier and a reason.
    await message_action(host.page, 1, f"Ban {guest_name}")
    dialog = host.page.get_by_role("dialog", name=f"Ban {guest_name}?")
    await expect(dialog).to_be_visible()
    await assert_labelled(host.page)
    await dialog.get_by_label(re.compile("^This device and network")).check()
    await dialog.get_by_label("Reason (only you see it)").fill("spam")
    await screenshot(host.page, "moderation-ban-dialog-1280.png")
    started = time.monotonic()
    await dialog.get_by_role("button", name=f"Ban {guest_name}").click()

    # The banned browser shows the banned screen within a second, and stays there (no reconnecting).
    ended = guest.page.get_by_role("heading", name="You were removed from this room")
    await expect(ended).to_be_visible(timeout=3_000)
    assert time.monotonic() - started < 1.5
    await screenshot(guest.page, "moderation-banned-390.png")
    sockets: list[str] = []
    guest.page.on("websocket", lambda ws: sockets.append(ws.url))
    await guest.page.wait_for_timeout(2_000)
    assert sockets == []
    await expect(ended).to_be_visible()

    # The others stay live: a short note, and the guest's message stays.
    for person in (host, other):
        await expect(person.page.locator(".room-note")).to_have_text(
            f"{guest_name} was removed from the room"
        )
        await expect(message(person.page, 1).locator(".msg-text")).to_have_text("buy cheap watches")
        await expect(ui.connection(person.page)).to_have_attribute("data-state", "live")
    await say(host.page, "Back to the book", 3)
    await expect(message(other.page, 3)).to_be_visible()

    # Reloading the banned page shows the same screen (REST answers 403 banned).
    await guest.page.reload()
    await expect(guest.page.get_by_role("heading", name="You were removed from this room")).to_be_visible()

    # The host's list of bans lifts it.
    await host.page.get_by_role("button", name="Moderation").click()
    panel = host.page.get_by_role("dialog", name="Moderation")
    await expect(panel.get_by_text(guest_name, exact=True)).to_be_visible()
    await screenshot(host.page, "moderation-panel-1280.png")
    await panel.get_by_role("button", name=f"Unban {guest_name}").click()
    await expect(panel.get_by_text("Nobody is banned.")).to_be_visible()


async def test_three_reports_hide_a_message_and_the_host_restores_it_from_the_queue(
    people: People, stack: Stack
) -> None:
    host = await people.new(DESKTOP)
    code = await ui.create_room(host.page, "Garden talk")
    await ui.join(host.page, "HostGarden")
    author = await people.new(DESKTOP)
    author_name = await visit(author, code, "Weeds")
    reporters = []
    for name in ("Rose", "Tulip", "Daisy"):
        person = await people.new(MOBILE)
        await visit(person, code, name)
        reporters.append(person)

    await say(author.page, "Dandelions are flowers too", 1)
    for index, person in enumerate(reporters):
        await expect(message(person.page, 1)).to_be_visible()
        await message_action(person.page, 1, "Report")
        dialog = person.page.get_by_role("dialog", name=f"Report {author_name}'s message")
        if index == 0:
            await assert_labelled(person.page)
            await screenshot(person.page, "moderation-report-390.png")
        await dialog.get_by_label("Spam").check()
        await dialog.get_by_label("Anything to add? (optional)").fill(f"report {index}")
        await dialog.get_by_role("button", name="Report", exact=True).click()
        await expect(dialog).to_have_count(0)
        if index == 0:
            # One report per message: the menu no longer offers it.
            await message(person.page, 1).hover()
            await message(person.page, 1).get_by_role("button", name=re.compile(r"^More actions on")).click()
            await expect(
                message(person.page, 1).get_by_role("button", name=f"Mute {author_name}")
            ).to_be_visible()
            await expect(
                message(person.page, 1).get_by_role("button", name=re.compile("^Report"))
            ).to_have_count(0)
            await person.page.keyboard.press("Escape")

    # Hidden for everyone but the host, who still sees the text, marked.
    for person in reporters:
        await expect(message(person.page, 1).locator(".msg-text")).to_have_text("Hidden pending review")
    await expect(message(host.page, 1)).to_have_attribute("data-hidden", "true")
    await expect(message(host.page, 1).locator(".msg-text")).to_have_text("Dandelions are flowers too")
    await screenshot(reporters[0].page, "moderation-hidden-390.png")

    # The host's queue lists it with its reasons; Restore brings it back for everyone.
    await host.page.get_by_role("button", name="Moderation").click()
    panel = host.page.get_by_role("dialog", name="Moderation")
    item = panel.locator(".mod-item[data-seq='1']")
    await expect(item).to_contain_text("Dandelions are flowers too")
    await expect(item.locator(".mod-reasons li")).to_have_count(3)
    await item.get_by_role("button", name="Restore").click()
    await expect(panel.get_by_text("No reports waiting.")).to_be_visible()
    await panel.get_by_role("button", name="Close").click()
    for person in reporters:
        await expect(message(person.page, 1).locator(".msg-text")).to_have_text("Dandelions are flowers too")
    await expect(message(host.page, 1)).not_to_have_attribute("data-hidden", "true")


async def test_pins_and_the_sticky_message_reach_a_newcomer_and_a_reconnecting_guest(
    people: People, stack: Stack
) -> None:
    host = await people.new(DESKTOP)
    code = await ui.create_room(host.page, "Launch party")
    await ui.join(host.page, "HostLaunch")
    guest = await people.new(MOBILE)
    switch = Switch()
    await guest.page.route_web_socket(ROOM_SOCKET, switch.route)
    guest_name = await visit(guest, code, "Early")
    await say(guest.page, "Doors open at eight", 1)
    await say(host.page, "Hello all", 2)
    await expect(message(guest.page, 2)).to_be_visible()
    await switch.cut(guest.page)

    # While the guest is away the host pins the guest's message and sets a sticky text.
    await message_action(host.page, 1, "Pin")
    pins = host.page.get_by_role("region", name="Pinned messages")
    await expect(pins.locator(".pinned-item[data-kind='pin']")).to_contain_text("Doors open at eight")
    await host.page.get_by_role("button", name="Moderation").click()
    panel = host.page.get_by_role("dialog", name="Moderation")
    await panel.get_by_label("Shown to everyone above the chat").fill("Dress code: sparkly")
    await panel.get_by_role("button", name="Set sticky message").click()
    await panel.get_by_role("button", name="Close").click()
    sticky = host.page.get_by_role("note", name="Message from the host")
    await expect(sticky).to_contain_text("Dress code: sparkly")

    # The reconnecting guest gets both from the resume.
    await switch.restore(guest.page)
    await expect(guest.page.get_by_role("note", name="Message from the host")).to_contain_text(
        "Dress code: sparkly"
    )
    guest_pins = guest.page.get_by_role("region", name="Pinned messages")
    await expect(guest_pins.locator(".pinned-item").first).to_contain_text("Doors open at eight")
    await expect(guest_pins.locator(".pinned-item").first).to_contain_text(guest_name)
    await screenshot(guest.page, "moderation-pins-390.png")

    # A newcomer gets both from the newest history page; host pins sit above the host's latest message.
    newcomer = await people.new(DESKTOP)
    await visit(newcomer, code, "Late")
    await expect(newcomer.page.get_by_role("note", name="Message from the host")).to_contain_text(
        "Dress code: sparkly"
    )
    items = newcomer.page.get_by_role("region", name="Pinned messages").locator(".pinned-item")
    await expect(items.nth(0)).to_contain_text("Doors open at eight")
    await expect(items.nth(1)).to_contain_text("Hello all")
    await screenshot(newcomer.page, "moderation-pins-1280.png")

    # Unpinning and clearing reach everyone live.
    await message_action(host.page, 1, "Unpin")
    await host.page.get_by_role("button", name="Moderation").click()
    await host.page.get_by_role("dialog", name="Moderation").get_by_role("button", name="Clear").click()
    for person in (host, guest, newcomer):
        await expect(person.page.locator(".pinned-item[data-kind='pin']")).to_have_count(0)
        await expect(person.page.get_by_role("note", name="Message from the host")).to_have_count(0)


async def test_mute_hides_a_persons_messages_and_unmute_brings_them_back(
    people: People, stack: Stack
) -> None:
    host = await people.new(DESKTOP)
    code = await ui.create_room(host.page, "Quiet corner")
    await ui.join(host.page, "HostQuiet")
    loud = await people.new(DESKTOP)
    loud_name = await visit(loud, code, "Loud")
    me = await people.new(MOBILE)
    await visit(me, code, "Calm")

    await say(loud.page, "FIRST!!!", 1)
    await say(host.page, "Welcome", 2)
    await expect(message(me.page, 1)).to_be_visible()

    await message_action(me.page, 1, f"Mute {loud_name}")
    await expect(message(me.page, 1)).to_have_count(0)
    await expect(message(me.page, 2)).to_be_visible()
    # Live messages from them stay hidden; later ones from others still come (their seqs counted).
    await say(loud.page, "SECOND!!!", 3)
    await say(host.page, "Let's begin", 4)
    await expect(message(me.page, 4)).to_be_visible()
    await expect(message(me.page, 3)).to_have_count(0)
    # A reload keeps them hidden (history leaves them out).
    await me.page.reload()
    await expect(message(me.page, 4)).to_be_visible()
    await expect(me.page.get_by_text("FIRST!!!")).to_have_count(0)
    await expect(me.page.get_by_text("SECOND!!!")).to_have_count(0)

    # The list of muted people unmutes, and their messages come back.
    await me.page.get_by_role("button", name="Muted people").click()
    panel = me.page.get_by_role("dialog", name="Muted people")
    await expect(panel.get_by_text(loud_name, exact=True)).to_be_visible()
    await screenshot(me.page, "moderation-muted-390.png")
    await panel.get_by_role("button", name=f"Unmute {loud_name}").click()
    await expect(panel.get_by_text("You haven't muted anyone.")).to_be_visible()
    await panel.get_by_role("button", name="Close").click()
    await expect(message(me.page, 1).locator(".msg-text")).to_have_text("FIRST!!!")
    await expect(message(me.page, 3).locator(".msg-text")).to_have_text("SECOND!!!")
    assert [seq for seq, _who, _text in await ui.shown(me.page)] == [1, 2, 3, 4]


async def test_the_admin_page_takes_a_room_down_and_others_see_admins_only(
    people: People, stack: Stack
) -> None:
    email = f"admin-{uuid.uuid4().hex[:12]}@example.com"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        registered = await http.post(
            "/api/v1/auth/register", json={"email": email, "password": ADMIN_PASSWORD}
        )
        assert registered.status_code == 201, registered.text
    granted = await admin_cli(stack.database_url, "grant", email)
    assert granted.status == 0, granted.err

    # Someone without the role gets a polite "admins only".
    stranger = await people.new(MOBILE)
    await stranger.page.goto("/admin")
    await expect(stranger.page.get_by_role("heading", name="For admins only")).to_be_visible()

    host = await people.new(MOBILE)
    code = await ui.create_room(host.page, "Shady deals")
    await ui.join(host.page, "HostShady")

    admin = await people.new(DESKTOP)
    await admin.page.goto("/login?next=%2Fadmin")
    await admin.page.get_by_label("Email").fill(email)
    await admin.page.get_by_label("Password").fill(ADMIN_PASSWORD)
    await admin.page.get_by_role("button", name="Log in").click()
    await expect(admin.page.get_by_role("heading", name="Admin", exact=True)).to_be_visible()
    await expect(admin.page.get_by_role("table", name="Audit log")).to_contain_text("identity.admin_granted")
    await assert_labelled(admin.page)

    section = admin.page.get_by_role("region", name="Rooms taken down")
    await section.get_by_label("Room code").fill(code)
    await section.get_by_label("Reason").fill("scam")
    await section.get_by_role("button", name="Take down").click()
    await expect(section.locator(".mod-item")).to_contain_text("Shady deals")
    await screenshot(admin.page, "moderation-admin-1280.png")

    # The host's room ends with the taken-down screen, at once and for good.
    await expect(host.page.get_by_role("heading", name="This room was taken down")).to_be_visible(
        timeout=5_000
    )
    await screenshot(host.page, "moderation-taken-down-390.png")

    await section.get_by_role("button", name="Restore Shady deals").click()
    await expect(section.get_by_text("No rooms are taken down.")).to_be_visible()

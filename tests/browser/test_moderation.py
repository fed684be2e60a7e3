"""The host's and everyone's safety tools in the web client, as people see them: a ban ends the banned
person's room at once (and only theirs), reports hide a message until the host restores it, the host's
pins and sticky message reach newcomers and reconnecting guests, a personal mute hides a person's
messages until it is lifted, the host's reports queue pages past its newest 50 (and reads well in the
dark theme), and admins find their page from the header."""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING

import httpx
from playwright.async_api import Locator, Page, expect

from tests.admin_cli import grant_admin
from tests.browser import ui
from tests.browser.harness import ARTIFACTS, DESKTOP, MOBILE, People
from tests.browser.test_chat import assert_labelled
from tests.browser.test_everyday import visit
from tests.browser.test_reactions_and_deletion import ROOM_SOCKET, Switch, say
from tests.e2e.chat import bearer

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


# The WCAG contrast ratio of an element's text against the background it is drawn on (the first
# ancestor with an opaque background), as the browser computed them.
CONTRAST = """el => {
  const rgb = (value) => value.match(/[\\d.]+/g).map(Number);
  const opaque = (node) => {
    for (; node; node = node.parentElement) {
      const [r, g, b, a = 1] = rgb(getComputedStyle(node).backgroundColor);
      if (a >= 0.99) return [r, g, b];
    }
    return [255, 255, 255];
  };
  const luminance = ([r, g, b]) => {
    const [R, G, B] = [r, g, b].map((c) => {
      c /= 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * R + 0.7152 * G + 0.0722 * B;
  };
  const text = luminance(rgb(getComputedStyle(el).color));
  const back = luminance(opaque(el));
  return (Math.max(text, back) + 0.05) / (Math.min(text, back) + 0.05);
}"""


async def assert_readable(locator: Locator, what: str) -> None:
    """Every element matched reads at WCAG AA (4.5:1) against what it is drawn on."""
    ratios = await locator.evaluate_all(f"els => els.map({CONTRAST})")
    assert ratios, f"no {what} on screen"
    assert min(ratios) >= 4.5, f"{what}: contrast {min(ratios):.2f} < 4.5"


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
    await grant_admin(stack, email)

    # Someone without the role gets a polite "admins only", and no link to the page: signed out, or
    # signed in with an account that is no admin.
    stranger = await people.new(MOBILE)
    await stranger.page.goto("/admin")
    await expect(stranger.page.get_by_role("heading", name="For admins only")).to_be_visible()
    member_email = f"member-{uuid.uuid4().hex[:12]}@example.com"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        member = await http.post(
            "/api/v1/auth/register", json={"email": member_email, "password": ADMIN_PASSWORD}
        )
        assert member.status_code == 201, member.text
    await stranger.page.goto("/login")
    await stranger.page.get_by_label("Email").fill(member_email)
    await stranger.page.get_by_label("Password").fill(ADMIN_PASSWORD)
    async with stranger.page.expect_response("**/api/v1/auth/me") as asked:
        await stranger.page.get_by_role("button", name="Log in").click()
    assert (await (await asked.value).json())["is_admin"] is False
    await expect(stranger.page.get_by_role("button", name=re.compile("^Log out"))).to_be_visible()
    await expect(stranger.page.get_by_role("link", name="Admin", exact=True)).to_have_count(0)

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

    # From any page, the header leads an admin back to it.
    await admin.page.goto("/")
    header_link = admin.page.locator(".app-header").get_by_role("link", name="Admin", exact=True)
    await expect(header_link).to_be_visible()
    await screenshot(admin.page, "moderation-admin-link-1280.png")
    await header_link.click()
    await expect(admin.page).to_have_url(re.compile(r"/admin$"))
    await expect(admin.page.get_by_role("heading", name="Admin", exact=True)).to_be_visible()

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


async def test_the_hosts_reports_queue_pages_past_fifty_in_the_dark_theme(
    people: People, stack: Stack
) -> None:
    host = await people.new(DESKTOP)
    code = await ui.create_room(host.page, "Night owls", theme="dark-mode")
    await ui.join(host.page, "HostOwl")
    await expect(host.page.locator("html")).to_have_attribute("data-scheme", "dark")

    # 55 messages from five people, each reported once by one of five others (reports count toward a
    # person's send limit, so nobody goes past it).
    network = {"X-Forwarded-For": f"10.251.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10, headers=network) as http:

        async def member(name: str) -> str:
            session = await http.post("/api/v1/auth/anonymous")
            assert session.status_code == 201, session.text
            joined = await http.post(
                f"/api/v1/rooms/{code}/join",
                json={"username": name},
                headers=bearer(session.json()["access_token"]),
            )
            assert joined.status_code == 200, joined.text
            return str(joined.json()["room_token"])

        senders = [await member(f"NightOwl{n}") for n in range(5)]
        reporters = [await member(f"WatchOwl{n}") for n in range(5)]
        seqs: list[int] = []
        for round_ in range(11):
            for n, token in enumerate(senders):
                sent = await http.post(
                    f"/api/v1/rooms/{code}/messages",
                    json={"client_msg_id": uuid.uuid4().hex, "text": f"hoot {round_ * 5 + n + 1}"},
                    headers=bearer(token),
                )
                assert sent.status_code == 201, sent.text
                seqs.append(sent.json()["message"]["seq"])
        for index, seq in enumerate(seqs):
            reported = await http.post(
                f"/api/v1/rooms/{code}/messages/{seq}/reports",
                json={"reason": "spam", "text": f"about {seq}"},
                headers=bearer(reporters[index % 5]),
            )
            assert reported.status_code == 200 and reported.json()["created"], reported.text

    await host.page.get_by_role("button", name="Moderation").click()
    panel = host.page.get_by_role("dialog", name="Moderation")
    items = panel.locator(".mod-item[data-seq]")
    # The newest 50 reported messages, newest first; the older ones are a click away.
    await expect(items).to_have_count(50)
    assert await items.first.get_attribute("data-seq") == str(seqs[-1])
    assert await items.last.get_attribute("data-seq") == str(seqs[5])
    older = panel.get_by_role("button", name="Load older reports")
    await expect(older).to_be_visible()
    await screenshot(host.page, "moderation-reports-dark-1280.png")

    await older.click()
    await expect(items).to_have_count(55)
    await expect(older).to_have_count(0)
    assert [int(seq or 0) for seq in await items.evaluate_all("els => els.map(el => el.dataset.seq)")] == (
        sorted(seqs, reverse=True)
    )
    oldest = panel.locator(f".mod-item[data-seq='{seqs[0]}']")
    await oldest.scroll_into_view_if_needed()
    await expect(oldest).to_contain_text("hoot 1")
    await expect(oldest.locator(".mod-reasons")).to_contain_text("Spam · WatchOwl0: about")
    await screenshot(host.page, "moderation-reports-older-dark-1280.png")

    # Dark panel, light text: what the host reads there stands out from what it is drawn on.
    assert await panel.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(24, 24, 27)"
    await assert_readable(oldest.locator("strong, blockquote, .mod-reasons li"), "reported messages")
    await assert_readable(panel.locator(".mod-report-text, .mod-when, .mod-none"), "muted notes")
    await assert_readable(panel.locator(".mod-actions button"), "the queue's buttons")
    # Delete says what it does in the dark type's danger colour; Dismiss does not (the pointer kept
    # off both, where "Load older reports" was clicked).
    await host.page.mouse.move(1, 1)
    colours = {
        name: await oldest.get_by_role("button", name=name).evaluate("el => getComputedStyle(el).color")
        for name in ("Delete", "Dismiss")
    }
    assert colours == {"Delete": "rgb(252, 165, 165)", "Dismiss": "rgb(250, 250, 250)"}, colours
    await assert_readable(panel.locator("h3, label"), "the panel's headings")

    # Dismissing an older one takes it off the list; the rest of what was loaded stays.
    await oldest.get_by_role("button", name="Dismiss").click()
    await expect(items).to_have_count(54)
    await expect(panel.locator(f".mod-item[data-seq='{seqs[0]}']")).to_have_count(0)
    await panel.get_by_role("button", name="Close").click()

    # The "more" list and the report dialog read as well in the dark.
    guest = await people.new(MOBILE)
    await visit(guest, code, "NightGuest")
    await message(guest.page, seqs[-1]).scroll_into_view_if_needed()
    await message(guest.page, seqs[-1]).hover()
    await message(guest.page, seqs[-1]).get_by_role("button", name=re.compile(r"^More actions on")).click()
    menu = message(guest.page, seqs[-1]).locator(".more-list")
    await expect(menu).to_be_visible()
    # On the last message of a phone's screen the list still shows whole: every action can be seen
    # and tapped where it is drawn (nothing cut off by the screen's edge or the message list).
    reachable = await menu.locator(".more-item").evaluate_all(
        """els => els.map(el => {
            const r = el.getBoundingClientRect();
            return el.contains(document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2))
                && el.contains(document.elementFromPoint(r.left + 2, r.bottom - 2))
                && el.contains(document.elementFromPoint(r.right - 2, r.top + 2));
        })"""
    )
    assert reachable and all(reachable), reachable
    await assert_readable(menu.locator(".more-item"), "the message's actions")
    await screenshot(guest.page, "moderation-more-dark-390.png")
    await menu.get_by_role("button", name=re.compile("^Report")).click()
    dialog = guest.page.get_by_role("dialog", name=re.compile("^Report .*'s message"))
    await expect(dialog).to_be_visible()
    await assert_readable(dialog.locator("label, p, legend, button"), "the report dialog")
    await expect(dialog.locator("fieldset")).to_have_css("border-top-color", "rgb(82, 82, 91)")
    await screenshot(guest.page, "moderation-report-dark-390.png")

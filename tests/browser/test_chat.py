"""Creating, joining and chatting in the web client, as people do it, in Chromium."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from playwright.async_api import Page, expect

from tests.browser import ui
from tests.browser.harness import ARTIFACTS, DESKTOP, MOBILE, People

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

# Every control a person can reach must have a name a screen reader can say.
UNLABELLED_CONTROLS = """() => {
  const named = (el) => {
    if (el.getAttribute('aria-label')?.trim()) return true;
    const by = el.getAttribute('aria-labelledby');
    if (by && by.split(/\\s+/).some((id) => document.getElementById(id)?.textContent.trim())) return true;
    if (el.labels && [...el.labels].some((l) => l.textContent.trim())) return true;
    if (['BUTTON', 'A'].includes(el.tagName) && el.textContent.trim()) return true;
    return Boolean(el.getAttribute('title')?.trim());
  };
  return [...document.querySelectorAll('input, select, textarea, button, a[href], [role=button]')]
    .filter((el) => el.type !== 'hidden' && el.getClientRects().length && !named(el))
    .map((el) => el.outerHTML.slice(0, 120));
}"""


def png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


async def assert_labelled(page: Page) -> None:
    assert await page.evaluate(UNLABELLED_CONTROLS) == []


async def test_two_people_create_join_and_chat(people: People, stack: Stack) -> None:
    host = await people.new(MOBILE)
    await host.page.goto("/")
    await assert_labelled(host.page)
    code = await ui.create_room(host.page, "Friday night", description="Anything goes")
    await expect(host.page.get_by_role("dialog", name="Join Friday night")).to_contain_text("Anything goes")
    await assert_labelled(host.page)
    host_name = await ui.join(host.page, "HostAlice")

    guest = await people.new(DESKTOP)
    await guest.page.goto(f"/c/{code}")
    guest_name = await ui.join(guest.page, "GuestBobby")
    assert guest_name != host_name

    await ui.send_acknowledged(host.page, "Welcome, everyone!")
    await ui.send(guest.page, "Hi <b>host</b> & all")
    expected = [(1, host_name, "Welcome, everyone!"), (2, guest_name, "Hi <b>host</b> & all")]
    for person in (host, guest):
        await expect(ui.messages(person.page)).to_have_count(2)
        assert await ui.shown(person.page) == expected
    # Text stays text: nothing a message says becomes markup.
    await expect(guest.page.locator(".msg-text b")).to_have_count(0)

    # The host's message is marked and sits pinned above the conversation.
    welcome = guest.page.locator("article.msg[data-seq='1']")
    await expect(welcome).to_have_class(re.compile(r"\bhost\b"))
    await expect(welcome.locator(".badge.host")).to_have_text("Host")
    await expect(guest.page.get_by_role("region", name="Pinned messages")).to_contain_text(
        "Welcome, everyone!"
    )

    # A reply quotes its message; tapping the quote takes you there.
    await (
        host.page.locator("article.msg[data-seq='2']")
        .get_by_role("button", name=f"Reply to {guest_name}")
        .click()
    )
    await expect(host.page.locator(".replying")).to_contain_text(guest_name)
    await ui.send(host.page, "Glad you came")
    reply = guest.page.locator("article.msg[data-seq='3']")
    await expect(reply.locator(".quote")).to_contain_text("Hi <b>host</b> & all")
    await reply.locator(".quote").click()
    await expect(guest.page.locator("article.msg[data-seq='2']")).to_be_focused()

    # Share: the link is copied for pasting anywhere.
    await guest.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.base_url)
    await guest.page.get_by_role("button", name="Copy link to this room").click()
    await expect(guest.page.get_by_text("Link copied")).to_be_visible()
    assert await guest.page.evaluate("navigator.clipboard.readText()") == f"{stack.base_url}/c/{code}"

    await assert_labelled(host.page)
    await expect(host.page.locator("article.msg[data-seq='3']")).to_be_in_viewport()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    mobile_shot = ARTIFACTS / "chat-mobile-390x844.png"
    desktop_shot = ARTIFACTS / "chat-desktop-1280x800.png"
    await host.page.screenshot(path=str(mobile_shot))
    await guest.page.screenshot(path=str(desktop_shot))
    assert png_size(mobile_shot) == (390 * 2, 844 * 2)
    assert png_size(desktop_shot) == (1280, 800)

    # An on-screen keyboard shrinks the visible area: the composer stays above it, the newest message
    # stays in sight, and nothing else moves the page.
    await ui.composer(host.page).focus()
    await host.page.set_viewport_size({"width": 390, "height": 480})
    await expect(ui.composer(host.page)).to_be_in_viewport()
    await expect(host.page.locator("article.msg[data-seq='3']")).to_be_in_viewport()
    composer_box = await host.page.locator("form.composer").bounding_box()
    assert composer_box is not None and composer_box["y"] + composer_box["height"] <= 480.5
    assert await host.page.evaluate("window.scrollY") == 0


async def test_private_room_rejects_a_wrong_code_and_admits_the_right_one(people: People) -> None:
    host = await people.new(DESKTOP)
    code = await ui.create_room(host.page, "Secret club", access_code="open sesame")
    # The host needs no code for their own room.
    await expect(host.page.get_by_role("dialog").get_by_label("Access code", exact=True)).to_have_count(0)
    await ui.join(host.page, "HostCarol")

    guest = await people.new(MOBILE)
    await guest.page.goto(f"/c/{code}")
    dialog = guest.page.get_by_role("dialog", name="Join Secret club")
    await ui.choose_username(guest.page, "GuestDave")
    code_field = dialog.get_by_label("Access code", exact=True)
    await code_field.fill("wrong guess")
    await code_field.press("Enter")
    await expect(dialog.get_by_role("alert")).to_contain_text(re.compile("access code", re.I))
    await expect(code_field).to_be_focused()
    await expect(dialog).to_be_visible()

    # Keyboard only: type the right code where the focus already is, press Enter.
    await code_field.fill("")
    await guest.page.keyboard.type("open sesame")
    await guest.page.keyboard.press("Enter")
    await expect(dialog).to_have_count(0)
    await expect(ui.connection(guest.page)).to_have_attribute("data-state", "live")
    await ui.send(guest.page, "I'm in")
    await expect(host.page.locator("article.msg", has_text="I'm in")).to_be_visible()


async def test_rejected_and_too_fast_messages_say_why(people: People) -> None:
    person = await people.new(DESKTOP)
    await ui.create_room(person.page, "Rules room")
    await ui.join(person.page, "RuleKeeper")
    send_button = person.page.get_by_role("button", name="Send")

    # Too long is caught before sending.
    await ui.composer(person.page).fill("x" * 4001)
    await expect(person.page.locator("#composer-counter")).to_have_text("1 character too long")
    await expect(send_button).to_be_disabled()

    # What the server refuses is marked as not sent, with its reason, and can be removed.
    await ui.send(person.page, "ring the \u0007 bell")
    refused = person.page.locator("article.msg.failed")
    await expect(refused).to_contain_text("control characters")
    await expect(refused.get_by_role("button", name="Try again")).to_be_visible()
    await refused.get_by_role("button", name="Delete").click()
    await expect(refused).to_have_count(0)

    # Past the send limit (12 at once here): a notice, then everything goes out in order, once.
    for number in range(15):
        await ui.send(person.page, f"quick {number}")
    await expect(person.page.get_by_role("alert").filter(has_text="too fast")).to_be_visible()
    await expect(ui.messages(person.page)).to_have_count(15, timeout=20_000)
    await expect(ui.pending(person.page)).to_have_count(0)
    assert [text for _seq, _sender, text in await ui.shown(person.page)] == [f"quick {n}" for n in range(15)]
    assert [seq for seq, _sender, _text in await ui.shown(person.page)] == list(range(1, 16))

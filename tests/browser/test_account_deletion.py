"""Deleting an account and erasing a room, in the web client: the account page's dialog (what goes and
what stays, the password, the typed word, the server's refusal), the people still in a room seeing the
deleted account's messages renamed, or deleted, live (quotes and pins too) exactly as a fresh load
shows them, the account's other device signed out; and a host closing a room with "delete
everything", which every member's page then shows as deleted."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from tests.browser import ui
from tests.browser.harness import ARTIFACTS, DESKTOP, MOBILE, People

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

PASSWORD = "correct horse battery"
DELETED = "Your account was deleted."
ERASED = "This room was closed and its history deleted"
NEUTRAL = re.compile(r"^deleted_[A-Za-z0-9]+$")
_LETTERS = "bdghjmnpqrvwxz"
# theme → dark type?
THEMES = {"purple-dream": False, "ocean-blue": False, "dark-mode": True}
# WCAG relative luminance of a computed CSS colour ("rgb(r, g, b)" or "rgba(...)").
LUMINANCE = """(el, property) => {
  const [r, g, b] = getComputedStyle(el)[property].match(/[\\d.]+/g).slice(0, 3).map(Number);
  const channel = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
}"""


def _name(prefix: str) -> str:
    """A username nobody has: the prefix and consonants that never spell a refused word."""
    return prefix + "_" + "".join(_LETTERS[b % len(_LETTERS)] for b in uuid.uuid4().bytes[:8])


def message(page: Page, seq: int) -> Locator:
    return page.locator(f"article.msg[data-seq='{seq}']")


async def _register(stack: Stack, reserved: str) -> str:
    email = f"leaver-{uuid.uuid4().hex[:10]}@example.com"
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        response = await http.post(
            "/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "reserved_username": reserved},
        )
    assert response.status_code == 201, response.text
    return email


async def _log_in(page: Page, email: str, reserved: str) -> None:
    await page.goto("/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_text(f"Signed in as {reserved}")).to_be_visible()


async def _enter_as_account(page: Page, code: str, reserved: str) -> None:
    """Open the room signed in: the first time the join dialog offers the reserved name."""
    await page.goto(f"/c/{code}")
    dialog = page.get_by_role("dialog")
    join_button = dialog.get_by_role("button", name="Join chat")
    live = ui.connection(page).and_(page.locator("[data-state='live']"))
    await expect(join_button.or_(live)).to_be_visible()
    if await join_button.count():
        await expect(dialog).to_contain_text(reserved)
        await join_button.click()
    await expect(ui.connection(page)).to_have_attribute("data-state", "live")


async def _message_action(page: Page, seq: int, action: str) -> None:
    target = message(page, seq)
    await target.hover()
    await target.get_by_role("button", name=re.compile(r"^More actions on")).click()
    await target.locator(".more-list").get_by_role("button", name=re.compile(f"^{re.escape(action)}")).click()


async def _shoot_in_every_theme(page: Page, dialog: Locator, name: str) -> None:
    """The open dialog in each theme (pages other than a room use the default one; the dialog follows
    whatever type the page has), readable in each; the dark one checked for a dark type."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for theme, dark in THEMES.items():
        await page.evaluate(
            """([theme, dark]) => {
                 document.documentElement.dataset.theme = theme;
                 document.documentElement.dataset.scheme = dark ? "dark" : "light";
               }""",
            [theme, dark],
        )
        background = await dialog.evaluate(LUMINANCE, "backgroundColor")
        text = await dialog.evaluate(LUMINANCE, "color")
        if dark:
            assert background < 0.05 and text > 0.8, (theme, background, text)
        else:
            assert background > 0.9 and text < 0.05, (theme, background, text)
        assert (max(background, text) + 0.05) / (min(background, text) + 0.05) >= 4.5
        await page.screenshot(path=str(ARTIFACTS / f"{name}-{theme}-390x844.png"))
    await page.evaluate(
        """() => {
             document.documentElement.dataset.theme = "purple-dream";
             document.documentElement.dataset.scheme = "light";
           }"""
    )


@pytest.mark.parametrize("erase", [False, True], ids=["keep-messages", "erase-messages"])
async def test_a_deleted_account_is_renamed_or_erased_live_for_the_room(
    people: People, stack: Stack, erase: bool
) -> None:
    reserved = _name("Gone")
    email = await _register(stack, reserved)

    host = await people.new(DESKTOP)
    code = await ui.create_room(host.page, "Farewell lounge")
    await ui.join(host.page, "LoungeHost")

    leaver = await people.new(MOBILE)
    await _log_in(leaver.page, email, reserved)
    await _enter_as_account(leaver.page, code, reserved)
    await ui.send(leaver.page, "first words")
    await ui.send(leaver.page, "second words")
    await expect(ui.messages(host.page)).to_have_count(2)

    # The host quotes the first and pins the second: both carry the name too.
    await message(host.page, 1).get_by_role("button", name=f"Reply to {reserved}").click()
    await ui.send(host.page, "host replies")
    await expect(message(host.page, 3).locator(".quote-sender")).to_have_text(reserved)
    await _message_action(host.page, 2, "Pin")
    pinned = host.page.get_by_role("region", name="Pinned messages")
    await expect(pinned).to_contain_text("second words")
    await expect(pinned).to_contain_text(reserved)
    await expect(message(host.page, 1).locator(".badge.verified")).to_be_visible()

    # The same account on another device, in the room: its socket is told when the account goes.
    laptop = await people.new(DESKTOP) if not erase else None
    if laptop is not None:
        await _log_in(laptop.page, email, reserved)
        await _enter_as_account(laptop.page, code, reserved)
        await expect(ui.messages(laptop.page)).to_have_count(3)

    # The account page: what happens, said before anything is asked.
    page = leaver.page
    await page.goto("/account")
    await page.get_by_role("button", name="Delete account…").click()
    dialog = page.get_by_role("dialog", name="Delete your account?")
    await expect(dialog).to_contain_text("This cannot be undone.")
    await expect(dialog).to_contain_text(f"and {reserved} is free for anyone to take")
    await expect(dialog).to_contain_text("Your messages stay in the rooms under a neutral name")
    await expect(dialog).to_contain_text("Rooms you host are closed")
    erase_box = dialog.get_by_label("Also erase my messages")
    if erase:
        await erase_box.check()
        await expect(dialog).to_contain_text("Every message you sent, in every room, is deleted.")
    # Nothing goes before the password and the word are there.
    await dialog.get_by_role("button", name="Delete my account").click()
    await expect(dialog.get_by_text("Enter your password.")).to_be_visible()
    await expect(dialog.get_by_text("Type DELETE, in capitals, to confirm.")).to_be_visible()
    password = dialog.get_by_label("Your password")
    await password.fill("not my password")
    await expect(dialog.get_by_text("Enter your password.")).to_have_count(0)
    await dialog.get_by_label("Type DELETE to confirm").fill("DELETE")
    if not erase:
        await _shoot_in_every_theme(page, dialog, "delete-account-dialog")
    await dialog.get_by_role("button", name="Delete my account").click()
    # The server's refusal, under the field it is about.
    await expect(dialog.get_by_text("The password is not right.")).to_be_visible()
    await expect(password).to_have_attribute("aria-invalid", "true")
    if erase:
        await page.screenshot(path=str(ARTIFACTS / "delete-account-dialog-refused-390x844.png"))
    await password.fill(PASSWORD)
    await dialog.get_by_role("button", name="Delete my account").click()

    # Signed out and home, told why.
    await expect(page).to_have_url(re.compile(r"^https?://[^/]+/$"))
    await expect(page.get_by_role("status").filter(has_text=DELETED)).to_be_visible()
    await expect(page.get_by_text(f"Signed in as {reserved}")).to_have_count(0)
    assert await page.evaluate("localStorage.getItem('chatpop.account')") is None

    # The room, live: the messages read under a neutral name, or are deleted.
    first, second = message(host.page, 1), message(host.page, 2)
    if erase:
        for gone in (first, second):
            await expect(gone).to_have_attribute("data-deleted", "true")
            await expect(gone.locator(".msg-text")).to_have_text("Message deleted")
        await expect(message(host.page, 3).locator(".quote-text")).to_have_text("deleted")
        await expect(host.page.get_by_text("second words")).to_have_count(0)
    else:
        await expect(first.locator(".msg-text")).to_have_text("first words")
        await expect(pinned).to_contain_text("second words")
    await expect(first.locator(".sender")).to_have_text(NEUTRAL)
    neutral = (await first.locator(".sender").inner_text()).strip()
    await expect(second.locator(".sender")).to_have_text(neutral)
    await expect(first.locator(".badge.verified")).to_have_count(0)
    await expect(message(host.page, 3).locator(".quote-sender")).to_have_text(neutral)
    if not erase:
        await expect(pinned).to_contain_text(neutral)
    await expect(host.page.locator("body")).not_to_contain_text(reserved)
    await expect(message(host.page, 3).locator(".msg-text")).to_have_text("host replies")
    await host.page.screenshot(
        path=str(ARTIFACTS / f"account-deleted-{'erased' if erase else 'renamed'}-desktop-1280x800.png")
    )

    # What the frame left on screen is what a fresh load shows.
    live_view = await ui.shown(host.page)
    live_pins = await pinned.all_inner_texts() if not erase else []
    await host.page.reload()
    await expect(ui.connection(host.page)).to_have_attribute("data-state", "live")
    await expect(ui.messages(host.page)).to_have_count(3)
    await expect(message(host.page, 3).locator(".quote-sender")).to_have_text(neutral)
    assert await ui.shown(host.page) == live_view
    if not erase:
        assert await pinned.all_inner_texts() == live_pins

    # The other device's own socket heard it: signed out there too, and told.
    if laptop is not None:
        await expect(laptop.page).to_have_url(re.compile(r"^https?://[^/]+/$"))
        await expect(laptop.page.get_by_role("status").filter(has_text=DELETED)).to_be_visible()
        await expect(laptop.page.get_by_text(f"Signed in as {reserved}")).to_have_count(0)


async def test_closing_with_delete_everything_shows_every_member_the_room_erased(people: People) -> None:
    host = await people.new(DESKTOP)
    code = await ui.create_room(host.page, "Vanishing club", theme="dark-mode")
    await ui.join(host.page, "VanishHost")
    member = await people.new(MOBILE)
    await member.page.goto(f"/c/{code}")
    await ui.join(member.page, "Member01")
    await ui.send(member.page, "soon gone")
    await expect(ui.messages(host.page)).to_have_count(1)

    await host.page.get_by_role("button", name="Room settings").click()
    await host.page.get_by_role("button", name="Close room…").click()
    confirm = host.page.get_by_role("dialog", name="Close Vanishing club for good?")
    await expect(confirm.get_by_role("button", name="Close room for good")).to_be_visible()
    await confirm.get_by_label("Delete everything (cannot be undone)").check()
    await expect(confirm).to_contain_text("deleted for good, for everyone")
    close = confirm.get_by_role("button", name="Close and delete everything")
    typed = confirm.get_by_label(re.compile(r"^Type the room's name"))
    # Not closed on a wrong name.
    await typed.fill("Vanishing")
    await close.click()
    await expect(confirm.get_by_text("exactly as it is written")).to_be_visible()
    await expect(typed).to_have_attribute("aria-invalid", "true")
    await typed.fill("Vanishing club")
    await expect(confirm.get_by_text("exactly as it is written")).to_have_count(0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await host.page.screenshot(path=str(ARTIFACTS / "close-delete-everything-dark-desktop-1280x800.png"))
    await close.click()

    # Everyone still there sees it at once, with nothing left to read.
    for page in (host.page, member.page):
        await expect(page.get_by_role("heading", name=ERASED)).to_be_visible()
        await expect(ui.messages(page)).to_have_count(0)
    await member.page.screenshot(path=str(ARTIFACTS / "room-erased-live-mobile-390x844.png"))

    # The link, opened again or by anyone: the same.
    await member.page.reload()
    await expect(member.page.get_by_role("heading", name=ERASED)).to_be_visible()
    await expect(member.page.get_by_text("soon gone")).to_have_count(0)
    newcomer = await people.new(MOBILE)
    await newcomer.page.goto(f"/c/{code}")
    await expect(newcomer.page.get_by_role("heading", name=ERASED)).to_be_visible()
    await expect(newcomer.page.get_by_role("dialog")).to_have_count(0)
    await newcomer.page.screenshot(path=str(ARTIFACTS / "room-erased-link-mobile-390x844.png"))

"""What a person does in the web client, as small steps the browser tests share."""

from __future__ import annotations

import re

from playwright.async_api import Locator, Page, expect

ROOM_URL = re.compile(r"/c/([A-Z0-9]{8})$")


def composer(page: Page) -> Locator:
    return page.get_by_role("textbox", name="Message")


def messages(page: Page) -> Locator:
    """Messages the room has acknowledged (each carries its seq)."""
    return page.locator("article.msg[data-seq]")


def pending(page: Page) -> Locator:
    return page.locator("article.msg.pending")


def connection(page: Page) -> Locator:
    return page.locator(".connection")


async def create_room(
    page: Page,
    name: str,
    *,
    description: str = "",
    access_code: str | None = None,
    theme: str | None = None,
) -> str:
    """Fill in the create form from the home page; returns the new room's code."""
    await page.goto("/")
    await page.get_by_role("link", name="Create a ChatPop").click()
    await page.get_by_label("Name", exact=True).fill(name)
    if description:
        await page.get_by_label("Description").fill(description)
    if access_code is not None:
        await page.get_by_label("Private: the link and an access code").check()
        await page.get_by_label("Access code", exact=True).fill(access_code)
    if theme is not None:
        await page.locator(f'input[name="theme"][value="{theme}"]').check()
    await page.get_by_role("button", name="Create ChatPop").click()
    await expect(page).to_have_url(ROOM_URL)
    match = ROOM_URL.search(page.url)
    assert match is not None
    return match.group(1)


async def choose_username(page: Page, wanted: str) -> str:
    """In the join dialog: type `wanted` where the edge has no dice, else take the rolled name."""
    dialog = page.get_by_role("dialog")
    typed = dialog.locator("#join-username")
    rolled = dialog.locator("#dice-name")
    await expect(typed.or_(rolled.filter(has_text=re.compile(r"^[A-Za-z0-9_]{5,15}$")))).to_be_visible()
    if await typed.count():
        await typed.fill(wanted)
        return wanted
    return (await rolled.inner_text()).strip()


async def join(page: Page, wanted: str, *, access_code: str | None = None) -> str:
    """Join from the room page's dialog; returns the username the room shows for this person."""
    name = await choose_username(page, wanted)
    if access_code is not None:
        await page.get_by_role("dialog").get_by_label("Access code", exact=True).fill(access_code)
    await page.get_by_role("button", name="Join chat").click()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await expect(connection(page)).to_have_attribute("data-state", "live")
    return name


async def send(page: Page, text: str) -> None:
    box = composer(page)
    await box.fill(text)
    await box.press("Enter")
    await expect(box).to_have_value("")


async def send_acknowledged(page: Page, text: str) -> None:
    """Sends and waits for the acknowledgement: the message has its seq before anything sent after
    this, by anyone, can take one."""
    await send(page, text)
    await expect(pending(page)).to_have_count(0)


async def shown(page: Page) -> list[tuple[int, str, str]]:
    """(seq, sender, text) of every acknowledged message on screen, top to bottom."""
    rows = await messages(page).evaluate_all(
        """els => els.map(el => [Number(el.dataset.seq),
                                 el.querySelector('.sender').textContent,
                                 el.querySelector('.msg-text').textContent])"""
    )
    return [(int(seq), str(sender), str(text)) for seq, sender, text in rows]

"""Site-wide bans from the admin page, as people see them: an admin bans a network, then a room's
participant, with the page's form; each banned person's open room ends at once with "You were banned
from ChatPop" and stays ended, while the host chats on; the admin lifts a ban from the list."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import httpx
from playwright.async_api import Page, expect

from tests.admin_cli import grant_admin
from tests.browser import ui
from tests.browser.harness import DESKTOP, MOBILE, People
from tests.browser.test_chat import assert_labelled
from tests.browser.test_everyday import visit
from tests.browser.test_moderation import screenshot
from tests.browser.test_reactions_and_deletion import say

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

ADMIN_PASSWORD = "a browser admin passphrase for bans"
BANNED = "You were banned from ChatPop"


async def participant_id(page: Page, code: str) -> str:
    """The participant this browser joined the room as (its saved room session)."""
    raw = await page.evaluate(
        """code => Object.entries(localStorage)
            .find(([key]) => key.startsWith("chatpop.room.") && key.endsWith("." + code))?.[1]""",
        code,
    )
    assert raw, "no saved room session"
    return str(json.loads(raw)["participant"]["id"])


async def test_an_admin_bans_a_network_and_a_participant_from_the_admin_page(
    people: People, stack: Stack
) -> None:
    email = f"siteban-admin-{uuid.uuid4().hex[:12]}@example.com"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        registered = await http.post(
            "/api/v1/auth/register", json={"email": email, "password": ADMIN_PASSWORD}
        )
        assert registered.status_code == 201, registered.text
    await grant_admin(stack, email)

    host = await people.new(DESKTOP)
    code = await ui.create_room(host.page, "Open mic")
    await ui.join(host.page, "HostMic")
    bot = await people.new(MOBILE)
    await visit(bot, code, "BotLike")
    troll = await people.new(MOBILE)
    await visit(troll, code, "TrollLike")
    await say(troll.page, "first!", 1)

    admin = await people.new(DESKTOP)
    await admin.page.goto("/login?next=%2Fadmin")
    await admin.page.get_by_label("Email").fill(email)
    await admin.page.get_by_label("Password").fill(ADMIN_PASSWORD)
    await admin.page.get_by_role("button", name="Log in").click()
    section = admin.page.get_by_role("region", name="Site-wide bans")
    await expect(section).to_be_visible()
    form = section.get_by_role("form", name="Ban from ChatPop")

    # A network: everyone who joined from it is out at once.
    await form.get_by_label("Ban by").select_option("ip")
    await assert_labelled(admin.page)
    await form.get_by_label("IP address").fill(bot.address)
    await form.get_by_label("Reason").fill("bot network")
    await form.get_by_role("button", name="Ban from ChatPop").click()
    await expect(section.get_by_role("status")).to_have_text("That network is banned from ChatPop.")
    await expect(section.locator(".mod-item").filter(has_text="bot network")).to_have_count(1)
    await expect(bot.page.get_by_role("heading", name=BANNED)).to_be_visible(timeout=5_000)
    await screenshot(bot.page, "site-banned-390.png")

    # A room's participant: the identity behind it, in every room.
    await form.get_by_label("Ban by").select_option("participant")
    await form.get_by_label("Room code").fill(code)
    await form.get_by_label("Participant id").fill(await participant_id(troll.page, code))
    await form.get_by_label("Reason").fill("trolling")
    await form.get_by_role("button", name="Ban from ChatPop").click()
    await expect(section.get_by_role("status")).to_contain_text("is banned from ChatPop.")
    await expect(troll.page.get_by_role("heading", name=BANNED)).to_be_visible(timeout=5_000)
    await screenshot(admin.page, "site-bans-admin-1280.png")

    # The banned stay ended, also after a reload; the host chats on.
    await troll.page.reload()
    await expect(troll.page.get_by_role("heading", name=BANNED)).to_be_visible()
    await expect(ui.connection(host.page)).to_have_attribute("data-state", "live")
    await say(host.page, "Next act, please", 2)

    # Lifting a ban takes it off the list.
    await section.get_by_role("button", name="Lift the ban: bot network").click()
    await expect(section.get_by_role("status")).to_have_text("Ban lifted.")
    await expect(section.locator(".mod-item").filter(has_text="bot network")).to_have_count(0)
    await expect(section.locator(".mod-item").filter(has_text="trolling")).to_have_count(1)

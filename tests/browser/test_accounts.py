"""Sign up, log in and log out in the web client; a reserved username carries its verified badge."""

from __future__ import annotations

import uuid

from playwright.async_api import expect

from tests.browser import ui
from tests.browser.harness import DESKTOP, People


async def test_sign_up_join_verified_log_out_and_log_in_again(people: People) -> None:
    person = await people.new(DESKTOP)
    page = person.page
    email = f"vic-{uuid.uuid4().hex[:10]}@example.com"
    reserved = f"Vic_{uuid.uuid4().hex[:6]}"

    await page.goto("/")
    await page.get_by_role("link", name="Sign up").click()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_label("Reserved username").fill(reserved)
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_text(f"Signed in as {reserved}")).to_be_visible()

    code = await ui.create_room(page, "Verified lounge")
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text(reserved)
    await dialog.get_by_role("button", name="Join chat").click()
    await expect(ui.connection(page)).to_have_attribute("data-state", "live")
    await ui.send(page, "It's really me")
    mine = page.locator("article.msg[data-seq='1']")
    await expect(mine.locator(".sender")).to_have_text(reserved)
    await expect(mine.locator(".badge.verified")).to_be_visible()

    await page.get_by_role("button", name=f"Log out {reserved}").click()
    # Signed out, this device is its own anonymous self again: it has to join anew.
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("link", name="Log in").click()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_role("button", name="Log in").click()
    # Back in the room as the account, which had joined already: straight into the chat.
    await expect(page).to_have_url(f"{page.url.split('/login')[0]}/c/{code}")
    await expect(ui.connection(page)).to_have_attribute("data-state", "live")
    await expect(page.locator("article.msg[data-seq='1']")).to_contain_text("It's really me")

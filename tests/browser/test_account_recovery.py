"""Accounts that can be recovered and managed, in the web client: a forgotten password reset through
the link a real SMTP server received, the account page (password, reserved username, log out), and
the log-in and sign-up pages that never leave a signed-in person on a log-in form."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

import httpx
from playwright.async_api import Page, expect

from tests.browser import ui
from tests.browser.harness import ARTIFACTS, DESKTOP, MOBILE, People
from tests.mailbox import Mailbox

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"
SENT = "If an account uses this address, we sent it a link to reset the password. Check your inbox."
_LETTERS = "bdghjmnpqrvwxz"


def _email(who: str) -> str:
    return f"{who}-{uuid.uuid4().hex[:10]}@example.com"


def _name(prefix: str) -> str:
    """A username nobody has: the prefix and consonants that never spell a refused word."""
    return prefix + "_" + "".join(_LETTERS[b % len(_LETTERS)] for b in uuid.uuid4().bytes[:8])


async def _register(stack: Stack, email: str, reserved: str | None = None) -> None:
    body = {"email": email, "password": PASSWORD, **({"reserved_username": reserved} if reserved else {})}
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        response = await http.post("/api/v1/auth/register", json=body)
    assert response.status_code == 201, response.text


async def _log_in(page: Page, email: str, password: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Log in").click()


async def test_a_forgotten_password_is_reset_through_the_mailed_link(
    people: People, stack: Stack, mailbox: Mailbox
) -> None:
    email = _email("forgot")
    await _register(stack, email)
    phone = await people.new(MOBILE)
    page = phone.page

    await page.goto("/login")
    await page.get_by_role("link", name="Forgot your password?").click()
    await expect(page).to_have_url(re.compile(r"/forgot-password"))
    await page.get_by_label("Email").fill("not an address")
    await page.get_by_role("button", name="Mail me a link").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "Enter a valid email address, like name@example.com."
    )
    await page.get_by_label("Email").fill(email)
    # The error goes as soon as the field is edited.
    await expect(page.get_by_role("alert")).to_have_count(0)
    await page.get_by_role("button", name="Mail me a link").click()
    await expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    await expect(page.get_by_role("status")).to_have_text(SENT)

    # Someone asking for an address without an account reads exactly the same.
    stranger = await people.new(DESKTOP)
    await stranger.page.goto("/forgot-password")
    await stranger.page.get_by_label("Email").fill(_email("nobody"))
    await stranger.page.get_by_role("button", name="Mail me a link").click()
    await expect(stranger.page.get_by_role("status")).to_have_text(SENT)

    mail = await mailbox.wait_for(email)
    assert mail.message["Subject"] == "Reset your ChatPop password"
    link = mail.reset_link()

    # The link opens the reset page (seen on a laptop too, before it is used).
    await stranger.page.goto(link)
    await expect(stranger.page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    await stranger.page.screenshot(path=str(ARTIFACTS / "reset-password-desktop-1280x800.png"))
    await page.goto(link)
    await expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()

    new_password = page.get_by_label("New password", exact=True)
    again = page.get_by_label("New password again")
    await new_password.fill("short")
    await again.fill("something else")
    await page.get_by_role("button", name="Set new password").click()
    await expect(page.get_by_text("Use at least 8 characters.")).to_be_visible()
    await expect(page.get_by_text("The two passwords do not match.")).to_be_visible()
    await expect(new_password).to_have_attribute("aria-invalid", "true")
    await page.screenshot(path=str(ARTIFACTS / "reset-password-mobile-390x844.png"))
    # Fixing one field clears its error and leaves the other's.
    await new_password.fill(NEW_PASSWORD)
    await expect(page.get_by_text("Use at least 8 characters.")).to_have_count(0)
    await expect(page.get_by_text("The two passwords do not match.")).to_be_visible()
    await again.fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Set new password").click()

    # Signed in and sent home.
    await expect(page).to_have_url(re.compile(r"^https?://[^/]+/$"))
    await expect(
        page.get_by_role("link", name=re.compile(f"Signed in as {re.escape(email)}"))
    ).to_be_visible()

    # The link worked once.
    await stranger.page.get_by_label("New password", exact=True).fill("yet another passphrase")
    await stranger.page.get_by_label("New password again").fill("yet another passphrase")
    await stranger.page.get_by_role("button", name="Set new password").click()
    await expect(stranger.page.get_by_role("alert")).to_have_text(
        "This reset link was already used. Ask for a new one if you still need it."
    )
    await expect(stranger.page.get_by_role("link", name="Ask for a new link")).to_be_visible()

    # The old password no longer works; the new one does.
    await page.get_by_role("button", name=f"Log out {email}").click()
    await page.goto("/login")
    await _log_in(page, email, PASSWORD)
    await expect(page.get_by_role("alert")).to_have_text("The email or password is incorrect.")
    await page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    await expect(page.get_by_role("alert")).to_have_count(0)
    await page.get_by_role("button", name="Log in").click()
    await expect(
        page.get_by_role("link", name=re.compile(f"Signed in as {re.escape(email)}"))
    ).to_be_visible()


async def test_the_account_page_changes_the_password_and_the_reserved_username(
    people: People, stack: Stack
) -> None:
    email = _email("acct")
    first_name, second_name = _name("Acc"), _name("Renam")
    await _register(stack, email, first_name)
    laptop = await people.new(DESKTOP)
    phone = await people.new(MOBILE)
    page = laptop.page

    for device in (laptop, phone):
        await device.page.goto("/login")
        await _log_in(device.page, email, PASSWORD)
        await expect(device.page.get_by_text(f"Signed in as {first_name}")).to_be_visible()

    # A message sent under the reserved name carries the badge, then and later.
    code = await ui.create_room(page, "Name change")
    await page.get_by_role("dialog").get_by_role("button", name="Join chat").click()
    await expect(ui.connection(page)).to_have_attribute("data-state", "live")
    await ui.send(page, "Sent with my badge")
    first = page.locator("article.msg[data-seq='1']")
    await expect(first.locator(".badge.verified")).to_be_visible()

    await page.goto("/")
    await page.get_by_role("link", name=f"Signed in as {first_name}: your account").click()
    await expect(page).to_have_url(re.compile(r"/account$"))
    await expect(page.get_by_role("heading", name="Your account", level=1)).to_be_visible()
    await expect(page.get_by_text(email, exact=True)).to_be_visible()
    await expect(page.locator(".account-current")).to_contain_text(first_name)
    await page.screenshot(path=str(ARTIFACTS / "account-desktop-1280x800.png"), full_page=True)
    await phone.page.goto("/account")
    await expect(phone.page.get_by_role("heading", name="Your account", level=1)).to_be_visible()
    await phone.page.screenshot(path=str(ARTIFACTS / "account-mobile-390x844.png"))

    # The reserved username: checked while typed, then changed.
    username = page.get_by_label("New reserved username")
    await username.fill("no")
    await page.get_by_role("button", name="Change username").click()
    await expect(page.get_by_role("alert").or_(page.locator("#account-username-note"))).to_contain_text(
        "5 to 15 characters"
    )
    await username.fill(second_name)
    await expect(page.locator("#account-username-note")).to_have_text("✓ Available")
    await page.get_by_role("button", name="Change username").click()
    await expect(page.get_by_role("status")).to_have_text(f"Your reserved username is now {second_name}.")
    await expect(page.get_by_text(f"Signed in as {second_name}")).to_be_visible()
    await expect(page.locator(".account-current")).to_contain_text(second_name)
    # Once a day at most, said in words.
    await username.fill(_name("Third"))
    await page.get_by_role("button", name="Change username").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "You changed your reserved username recently. You can change it again in 24 hours."
    )
    # The given-up name is held back from everyone else.
    stranger = await people.new(DESKTOP)
    await stranger.page.goto("/signup")
    await stranger.page.get_by_label("Reserved username").fill(first_name)
    await expect(stranger.page.locator("#signup-username-note")).to_contain_text("held back")

    # The message sent earlier keeps the badge it was sent with.
    await page.goto(f"/c/{code}")
    await expect(page.locator("article.msg[data-seq='1'] .badge.verified")).to_be_visible()

    # The password: the current one is checked, the error goes when the field is edited.
    await page.goto("/account")
    current = page.get_by_label("Current password")
    await current.fill("not my password")
    await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_label("New password again").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Change password").click()
    await expect(page.get_by_role("alert")).to_have_text("Your current password is not right.")
    await current.fill(PASSWORD)
    await expect(page.get_by_role("alert")).to_have_count(0)
    await page.get_by_role("button", name="Change password").click()
    await expect(page.get_by_role("status")).to_have_text(
        "Your password was changed. Every other device was signed out."
    )
    # This device stays signed in, with the new token pair, across a reload.
    await page.reload()
    await expect(page.get_by_text(f"Signed in as {second_name}")).to_be_visible()

    # The phone's session is over: once its short-lived access token is due (forced here), it cannot
    # renew it and finds itself signed out.
    await phone.page.evaluate(
        """() => {
          const saved = JSON.parse(localStorage.getItem("chatpop.account"));
          saved.access_expires_at = 0;
          localStorage.setItem("chatpop.account", JSON.stringify(saved));
        }"""
    )
    await phone.page.goto("/")
    await phone.page.get_by_role("link", name="Create a ChatPop").click()
    await phone.page.get_by_label("Name", exact=True).fill("Still me?")
    await phone.page.get_by_role("button", name="Create ChatPop").click()
    await expect(phone.page.get_by_role("link", name="Log in")).to_be_visible()

    # Log out from the account page.
    await page.get_by_role("button", name="Log out", exact=True).click()
    await expect(page).to_have_url(re.compile(r"^https?://[^/]+/$"))
    await expect(page.get_by_role("link", name="Log in")).to_be_visible()


async def test_signing_in_from_the_header_on_the_log_in_page_leads_on_not_back(
    people: People, stack: Stack
) -> None:
    email = _email("header")
    person = await people.new(DESKTOP)
    page = person.page
    await page.goto("/login?next=%2Fcreate")
    # The header's links carry this page's destination, not the log-in page itself.
    await expect(page.locator("header").get_by_role("link", name="Sign up")).to_have_attribute(
        "href", "/signup?next=%2Fcreate"
    )
    await page.locator("header").get_by_role("link", name="Sign up").click()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("short")
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_text("Use at least 8 characters.")).to_be_visible()
    await page.get_by_label("Password").fill(PASSWORD)
    await expect(page.get_by_text("Use at least 8 characters.")).to_have_count(0)
    await page.get_by_role("button", name="Sign up").click()
    await expect(page).to_have_url(re.compile(r"/create$"))

    # Signed in, the log-in and sign-up pages send the person on to where they lead.
    await page.goto("/login?next=%2Faccount")
    await expect(page).to_have_url(re.compile(r"/account$"))
    await page.goto("/signup")
    await expect(page).to_have_url(re.compile(r"^https?://[^/]+/$"))

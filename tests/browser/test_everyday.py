"""Everyday use of the web client, as people meet it: a group on one Wi-Fi, the host's settings and
slow mode, "your rooms" on the home page, links, the character counter, the tab title, browser
notifications, and pages and errors that read like a person wrote them."""

from __future__ import annotations

import os
import re
import uuid
from typing import TYPE_CHECKING

import httpx
from playwright.async_api import Page, expect

from tests.browser import ui
from tests.browser.harness import ARTIFACTS, DESKTOP, MOBILE, People, Person
from tests.browser.test_chat import assert_labelled

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

# Lets a test put the page "in the background" (document.visibilityState), as switching tabs would.
BACKGROUND = """
(() => {
  let hidden = false;
  const state = () => (hidden ? "hidden" : "visible");
  Object.defineProperty(Document.prototype, "visibilityState", { get: state });
  Object.defineProperty(Document.prototype, "hidden", { get: () => hidden });
  window.__setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event("visibilitychange"));
  };
})();
"""

# Keeps a record of the notifications the page shows (they still go to the real Notification API).
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  window.__notifications = [];
  function Recording(title, options) {
    window.__notifications.push({ title, body: options && options.body, tag: options && options.tag });
    return new Real(title, options);
  }
  Object.defineProperty(Recording, "permission", { get: () => Real.permission });
  Recording.requestPermission = (...args) => Real.requestPermission(...args);
  window.Notification = Recording;
})();
"""


def network() -> str:
    """An address of its own for this test: several people share it, as on one Wi-Fi."""
    return f"172.{16 + os.getpid() % 16}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


async def open_settings(page: Page) -> None:
    await page.get_by_role("button", name="Room settings").click()
    await expect(page.get_by_role("dialog", name="Room settings")).to_be_visible()


async def save_settings(page: Page) -> None:
    dialog = page.get_by_role("dialog", name="Room settings")
    await dialog.get_by_role("button", name="Save settings").click()
    await expect(dialog).to_have_count(0)
    await expect(page.get_by_text("Settings saved.")).to_be_visible()


async def visit(person: Person, code: str, name: str, **join: str) -> str:
    await person.page.goto(f"/c/{code}")
    return await ui.join(person.page, name, **join)


# --- a group on one network ------------------------------------------------------------------


async def test_thirty_people_on_one_network_join_and_chat(people: People) -> None:
    wifi = network()
    host = await people.new(DESKTOP, address=wifi)
    code = await ui.create_room(host.page, "Pub quiz")
    host_name = await ui.join(host.page, "QuizMaster")
    await ui.send(host.page, "Welcome, teams!")

    # 29 more people on the same network, one after another, each with a phone or a laptop.
    for number in range(29):
        person = await people.new(MOBILE if number % 2 else DESKTOP, address=wifi)
        await visit(person, code, f"Team_{number:02d}")
        await ui.send(person.page, f"Team {number} is here")
        await expect(ui.messages(person.page).filter(has_text=f"Team {number} is here")).to_have_count(1)
        if number < 25:
            # Keep a handful of screens open; the others have made their point.
            await person.context.close()

    await expect(ui.messages(host.page)).to_have_count(30)
    shown = await ui.shown(host.page)
    assert [seq for seq, _sender, _text in shown] == list(range(1, 31))
    assert shown[0] == (1, host_name, "Welcome, teams!")
    assert {text for _seq, _sender, text in shown[1:]} == {f"Team {n} is here" for n in range(29)}
    # The last to arrive sees everyone else's messages too.
    last = people.opened[-1]
    await expect(ui.messages(last.page)).to_have_count(30)


async def test_the_host_limits_a_network_and_the_dialog_says_signing_in_lifts_it(people: People) -> None:
    wifi = network()
    host = await people.new(DESKTOP, address=wifi)
    code = await ui.create_room(host.page, "Small club")
    await ui.join(host.page, "ClubHost")
    await open_settings(host.page)
    limit = host.page.get_by_label("New people without an account, per network, per hour")
    await expect(limit).to_have_value("40")
    await limit.fill("2")
    await save_settings(host.page)

    for name in ("FirstGuest", "SecondGuest"):
        await visit(await people.new(MOBILE, address=wifi), code, name)
    third = await people.new(MOBILE, address=wifi)
    await third.page.goto(f"/c/{code}")
    await ui.choose_username(third.page, "ThirdGuest")
    await third.page.get_by_role("button", name="Join chat").click()
    dialog = third.page.get_by_role("dialog")
    await expect(dialog.get_by_role("alert")).to_contain_text(
        "2 people on your network already joined this room without an account in the last hour."
        " Sign in to join now, or try again later."
    )
    await dialog.get_by_role("link", name="create an account").click()
    await expect(third.page).to_have_url(re.compile(r"/signup\?next=%2Fc%2F" + code))


# --- host settings, slow mode and closing -----------------------------------------------------


async def test_the_host_edits_the_room_sees_its_code_and_closes_it(people: People) -> None:
    host = await people.new(DESKTOP)
    code = await ui.create_room(host.page, "Book club", access_code="open-sesame")
    await ui.join(host.page, "BookHost")
    await ui.send(host.page, "First chapter tonight")

    # Keyboard only: the settings button, the dialog's fields, Escape to leave.
    settings_button = host.page.get_by_role("button", name="Room settings")
    await settings_button.focus()
    await host.page.keyboard.press("Enter")
    dialog = host.page.get_by_role("dialog", name="Room settings")
    await expect(dialog).to_be_visible()
    await assert_labelled(host.page)
    await host.page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)

    await open_settings(host.page)
    await dialog.get_by_role("button", name="Show the code").click()
    await expect(dialog.get_by_test_id("access-code")).to_have_text("open-sesame")
    await host.page.screenshot(path=str(ARTIFACTS / "room-settings-desktop-1280x800.png"))
    await dialog.get_by_label("Name", exact=True).fill("")
    await dialog.get_by_role("button", name="Save settings").click()
    await expect(dialog.get_by_text("Give the room a name.")).to_be_visible()
    await dialog.get_by_label("Name", exact=True).fill("Night readers")
    # The error goes as soon as the field is fixed.
    await expect(dialog.get_by_text("Give the room a name.")).to_have_count(0)
    await dialog.get_by_label("Description").fill("One chapter a week")
    await dialog.locator('input[name="settings-theme"][value="dark-mode"]').check()
    await dialog.get_by_label("New access code").fill("turn-the-page")
    await save_settings(host.page)
    await expect(host.page.get_by_role("heading", level=1)).to_have_text("Night readers")
    assert await host.page.evaluate("document.documentElement.dataset.theme") == "dark-mode"

    # The new code opens the room; the old one does not.
    guest = await people.new(MOBILE)
    await guest.page.goto(f"/c/{code}")
    await expect(guest.page.get_by_role("dialog", name="Join Night readers")).to_contain_text(
        "One chapter a week"
    )
    await ui.choose_username(guest.page, "NightGuest")
    guest_dialog = guest.page.get_by_role("dialog")
    await guest_dialog.get_by_label("Access code", exact=True).fill("open-sesame")
    await guest_dialog.get_by_role("button", name="Join chat").click()
    await expect(guest_dialog.get_by_text("That access code is not right.")).to_be_visible()
    await guest_dialog.get_by_label("Access code", exact=True).fill("turn-the-page")
    # The code's error goes away as soon as it is edited.
    await expect(guest_dialog.get_by_text("That access code is not right.")).to_have_count(0)
    await guest_dialog.get_by_role("button", name="Join chat").click()
    await expect(ui.connection(guest.page)).to_have_attribute("data-state", "live")
    assert await guest.page.evaluate("document.documentElement.dataset.theme") == "dark-mode"
    await guest.page.screenshot(path=str(ARTIFACTS / "chat-dark-mobile-390x844.png"))

    # Closing asks once more, then the room takes no more messages; history stays readable.
    await open_settings(host.page)
    await host.page.get_by_role("button", name="Close room…").click()
    confirm = host.page.get_by_role("dialog", name="Close Night readers for good?")
    await expect(confirm).to_contain_text("cannot be opened again")
    await confirm.get_by_role("button", name="Keep it open").click()
    # Back to the settings, the room still open.
    await expect(confirm).to_have_count(0)
    await expect(dialog).to_be_visible()
    await host.page.get_by_role("button", name="Close room…").click()
    await confirm.get_by_role("button", name="Close room for good").click()
    await expect(host.page.get_by_text("The host closed this room.")).to_be_visible()
    await expect(ui.composer(host.page)).to_be_disabled()

    await guest.page.reload()
    await expect(guest.page.get_by_text("The host closed this room.")).to_be_visible()
    await expect(ui.composer(guest.page)).to_be_disabled()
    await expect(ui.messages(guest.page)).to_contain_text(["First chapter tonight"])
    newcomer = await people.new(DESKTOP)
    await newcomer.page.goto(f"/c/{code}")
    await expect(newcomer.page.get_by_role("heading", name="Night readers is closed")).to_be_visible()


async def test_slow_mode_spaces_out_messages_but_never_the_host(people: People) -> None:
    host = await people.new(MOBILE)
    code = await ui.create_room(host.page, "Town hall")
    await ui.join(host.page, "TownHost")
    await open_settings(host.page)
    await host.page.get_by_label("Slow mode").select_option(label="10 seconds")
    await host.page.screenshot(path=str(ARTIFACTS / "room-settings-mobile-390x844.png"))
    await save_settings(host.page)

    guest = await people.new(MOBILE)
    await visit(guest, code, "Citizen")
    await expect(guest.page.get_by_text("Slow mode: one message every 10 seconds.")).to_be_visible()
    await ui.send(guest.page, "A first question")
    await expect(ui.messages(guest.page)).to_have_count(1)
    await ui.send(guest.page, "And a second one")
    # Held back, said so, and sent by itself once the wait is over.
    await expect(guest.page.get_by_role("alert")).to_contain_text("Slow mode is on. Your message goes out in")
    await expect(ui.pending(guest.page)).to_contain_text("And a second one")
    for number in range(3):
        await ui.send(host.page, f"Answer {number}")
    await expect(ui.messages(host.page)).to_have_count(4)
    await expect(ui.messages(guest.page).filter(has_text="And a second one")).to_have_count(1, timeout=20_000)
    await expect(ui.pending(guest.page)).to_have_count(0)


# --- your rooms --------------------------------------------------------------------------------


async def test_your_rooms_after_a_reload_with_unread_counts(people: People) -> None:
    me = await people.new(MOBILE)
    friend = await people.new(DESKTOP)
    mine = await ui.create_room(me.page, "Alpha hosted")
    await ui.join(me.page, "AlphaMe")
    theirs = await ui.create_room(friend.page, "Beta lounge")
    await ui.join(friend.page, "BetaFriend")
    await visit(me, theirs, "BetaMe")
    await ui.send(friend.page, "Glad you came")
    await expect(ui.messages(me.page)).to_have_count(1)

    await me.page.goto("/")
    rooms = me.page.get_by_role("list", name="Rooms on this device")
    await expect(rooms.get_by_role("listitem")).to_have_count(2)
    await expect(rooms.get_by_role("listitem").nth(0)).to_contain_text("Beta lounge")
    await expect(rooms.get_by_role("listitem").nth(1)).to_contain_text("Alpha hosted")
    await expect(rooms.locator(f"[data-code='{mine}']")).to_contain_text("You host it")

    # While I am away, the friend writes three messages: they show as unread, after a reload too.
    for number in range(3):
        await ui.send(friend.page, f"Update {number}")
    await me.page.reload()
    beta = rooms.locator(f"[data-code='{theirs}']")
    await expect(beta).to_have_attribute("data-unread", "3")
    await expect(beta.get_by_role("link")).to_have_accessible_name("Beta lounge, 3 unread messages")
    await me.page.screenshot(path=str(ARTIFACTS / "home-your-rooms-mobile-390x844.png"))

    # Reading them clears the count.
    await beta.get_by_role("link").click()
    await expect(ui.messages(me.page)).to_have_count(4)
    await me.page.wait_for_timeout(2_000)
    await me.page.goto("/")
    await expect(rooms.locator(f"[data-code='{theirs}']")).to_have_attribute("data-unread", "0")


async def test_an_accounts_rooms_follow_it_to_another_device(people: People, stack: Stack) -> None:
    email = f"rooms-{uuid.uuid4().hex[:10]}@example.com"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        registered = await http.post(
            "/api/v1/auth/register", json={"email": email, "password": "correct horse battery"}
        )
        assert registered.status_code == 201, registered.text

    laptop = await people.new(DESKTOP)
    phone = await people.new(MOBILE)
    for device in (laptop, phone):
        await device.page.goto("/login")
        await device.page.get_by_label("Email").fill(email)
        await device.page.get_by_label("Password").fill("correct horse battery")
        await device.page.get_by_role("button", name="Log in").click()
        await expect(device.page).to_have_url(re.compile(r"/$"))
    code = await ui.create_room(laptop.page, "Gamma studio")

    await phone.page.reload()
    listed = phone.page.get_by_role("list", name="Rooms of your account")
    await expect(listed.locator(f"[data-code='{code}']")).to_contain_text("Gamma studio")
    await expect(listed.locator(f"[data-code='{code}']")).to_contain_text("You host it")
    await laptop.page.goto("/")
    await expect(laptop.page.get_by_role("list", name="Rooms of your account")).to_contain_text(
        "Gamma studio"
    )
    await laptop.page.screenshot(path=str(ARTIFACTS / "home-your-rooms-desktop-1280x800.png"))


# --- messages: links, the counter, the tab title, notifications ----------------------------------


async def test_links_are_clickable_and_safe_and_the_counter_says_how_much_is_too_long(people: People) -> None:
    host = await people.new(DESKTOP)
    guest = await people.new(MOBILE)
    code = await ui.create_room(host.page, "Links room")
    await ui.join(host.page, "LinkHost")
    await visit(guest, code, "LinkGuest")
    await ui.send(
        host.page,
        "Read https://example.com/guide?part=1. Not javascript:alert(1), but (www.chatpop.test/faq)!",
    )
    text = guest.page.locator("article.msg[data-seq='1'] .msg-text")
    await expect(text).to_have_text(
        "Read https://example.com/guide?part=1. Not javascript:alert(1), but (www.chatpop.test/faq)!"
    )
    links = text.get_by_role("link")
    await expect(links).to_have_count(2)
    await expect(links.nth(0)).to_have_attribute("href", "https://example.com/guide?part=1")
    await expect(links.nth(1)).to_have_attribute("href", "https://www.chatpop.test/faq")
    for index in range(2):
        await expect(links.nth(index)).to_have_attribute("rel", "noopener noreferrer nofollow")
        await expect(links.nth(index)).to_have_attribute("target", "_blank")

    box = ui.composer(guest.page)
    await box.fill("x" * 3_990)
    await expect(guest.page.locator("#composer-counter")).to_have_text("10 characters left")
    await box.fill("x" * 4_037)
    await expect(guest.page.locator("#composer-counter")).to_have_text("37 characters too long")
    await expect(guest.page.get_by_role("button", name="Send")).to_be_disabled()
    await box.fill("short again")
    await expect(guest.page.locator("#composer-counter")).to_have_count(0)


async def test_the_tab_counts_unread_messages_and_notifies_while_in_the_background(
    people: People, stack: Stack
) -> None:
    host = await people.new(DESKTOP)
    guest = await people.new(DESKTOP)
    await guest.context.add_init_script(BACKGROUND)
    await guest.context.add_init_script(RECORD_NOTIFICATIONS)
    await guest.context.grant_permissions(["notifications"], origin=stack.base_url)
    code = await ui.create_room(host.page, "Quiet room")
    host_name = await ui.join(host.page, "QuietHost")
    await visit(guest, code, "QuietGuest")
    await expect(guest.page).to_have_title("Quiet room · ChatPop")

    await guest.page.get_by_role("button", name="Notifications for new messages").click()
    await expect(guest.page.get_by_text("You'll be notified of new messages")).to_be_visible()
    await expect(guest.page.get_by_role("button", name="Notifications for new messages")).to_have_attribute(
        "aria-pressed", "true"
    )

    # In the foreground nothing is counted or notified.
    await ui.send(host.page, "Seen right away")
    await expect(ui.messages(guest.page)).to_have_count(1)
    assert await guest.page.evaluate("window.__notifications.length") == 0

    await guest.page.evaluate("window.__setHidden(true)")
    await ui.send(host.page, "While you were away")
    await ui.send(host.page, "And one more")
    await expect(guest.page).to_have_title("(2) Quiet room · ChatPop")
    notes = await guest.page.evaluate("window.__notifications")
    assert [note["title"] for note in notes] == [f"{host_name} in Quiet room"] * 2
    assert [note["body"] for note in notes] == ["While you were away", "And one more"]
    assert {note["tag"] for note in notes} == {f"chatpop-{code}"}

    await guest.page.evaluate("window.__setHidden(false)")
    await expect(guest.page).to_have_title("Quiet room · ChatPop")


# --- pages and errors for people -----------------------------------------------------------------


async def test_unknown_addresses_and_form_errors_read_like_a_person_wrote_them(people: People) -> None:
    person = await people.new(MOBILE)
    response = await person.page.goto("/no/such/page")
    assert response is not None and response.status == 404
    await expect(person.page.get_by_role("heading", name="Page not found")).to_be_visible()
    await person.page.get_by_role("link", name="Go to the home page").click()
    await expect(person.page.get_by_role("heading", name="ChatPop")).to_be_visible()

    await person.page.goto("/create")
    await person.page.get_by_role("button", name="Create ChatPop").click()
    name_error = person.page.get_by_text("Give your ChatPop a name.")
    await expect(name_error).to_be_visible()
    await person.page.get_by_label("Name", exact=True).fill("N")
    await expect(name_error).to_have_count(0)

    # Emoji draw in colour on every platform: the font stack ends with the emoji fonts.
    font = await person.page.evaluate("getComputedStyle(document.body).fontFamily")
    assert font.endswith('"Noto Color Emoji"')
    assert '"Apple Color Emoji"' in font and '"Segoe UI Emoji"' in font

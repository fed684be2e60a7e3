"""The Back Room (paid seats) in the web client, in test mode (no Stripe keys: no money moves, a test
card pays), as people see it: a host with an account sets up payouts and opens a Back Room with one
seat from the room's settings; a participant on a phone buys the seat and enters; the host and the
holder chat there, apart from the main room; a latecomer who paid for the same seat a moment later is
refunded in full and told that the seats ran out, and then sees the Back Room "Full" with no seat to
buy; the host removes the holder's seat (with a refund), the holder sees at once that their seat was
removed and their payments say it was refunded, and the seat is on sale again."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from playwright.async_api import Locator, Page, expect

from tests.browser import ui
from tests.browser.harness import DESKTOP, MOBILE, People
from tests.browser.test_chat import assert_labelled
from tests.browser.test_everyday import visit
from tests.browser.test_moderation import assert_readable, screenshot
from tests.browser.test_paid_pins_and_tips import pay_with_test_card, sign_up_host

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

BACK_ROOM_URL = re.compile(r"/c/([A-Z0-9]{8})/back-room$")


def card(page: Page) -> Locator:
    return page.get_by_role("region", name="Back Room", exact=True)


async def test_a_host_opens_a_back_room_a_fan_buys_the_only_seat_they_chat_and_the_host_removes_it(
    people: People, stack: Stack
) -> None:
    host = await people.new(DESKTOP)
    host_name = await sign_up_host(host)

    # Before payouts, the create form says a Back Room needs them.
    await host.page.goto("/create")
    fields = host.page.get_by_role("group", name="Back Room (paid seats)")
    await expect(fields.get_by_role("note")).to_contain_text("set up payouts")
    await expect(fields.get_by_label("Open a Back Room")).to_be_disabled()

    await host.page.goto("/payouts")
    await host.page.get_by_role("button", name="Set up payouts").click()
    await host.page.get_by_role("button", name="Complete test onboarding").click()
    await expect(host.page.locator(".payout-words")).to_have_attribute("data-can-receive", "true")

    code = await ui.create_room(host.page, "After party", theme="dark-mode")
    join = host.page.get_by_role("dialog")
    await expect(join).to_contain_text(host_name)
    await join.get_by_role("button", name="Join chat").click()
    await expect(ui.connection(host.page)).to_have_attribute("data-state", "live")
    await ui.send(host.page, "Welcome to the main room")
    await expect(card(host.page)).to_have_count(0)

    # The host opens a Back Room with one seat at $5.00 from the room's settings.
    await host.page.get_by_role("button", name="Room settings").click()
    settings = host.page.get_by_role("dialog", name="Room settings")
    back = settings.get_by_role("group", name="Back Room (paid seats)")
    await expect(back).to_contain_text("Test mode — no real money")
    await back.get_by_label("Open a Back Room").check()
    await back.get_by_label(re.compile(r"^Seat price")).fill("5")
    await back.get_by_label("Seats", exact=True).fill("0")
    await settings.get_by_role("button", name="Save settings").click()
    await expect(back.get_by_role("alert")).to_contain_text("Choose a number of seats from 1")
    await back.get_by_label("Seats", exact=True).fill("1")
    await assert_labelled(host.page)
    await screenshot(host.page, "back-room-settings-1280.png")
    await settings.get_by_role("button", name="Save settings").click()
    await expect(settings).to_have_count(0)
    await expect(card(host.page)).to_contain_text("$5.00 a seat")
    await expect(card(host.page)).to_contain_text("1 of 1 seat left")
    await expect(card(host.page)).to_contain_text("0 seats taken")
    await expect(card(host.page).get_by_role("link", name="Enter the Back Room")).to_be_visible()

    # A fan on a phone and a latecomer on a laptop both see the card and go for the only seat: both
    # orders open while it is free.
    fan = await people.new(MOBILE)
    fan_name = await visit(fan, code, "SeatFan")
    late = await people.new(DESKTOP)
    await visit(late, code, "LateComer")
    await expect(card(fan.page)).to_contain_text("$5.00 a seat")
    await expect(card(fan.page)).to_contain_text("1 of 1 seat left")
    await screenshot(fan.page, "back-room-card-390.png")
    await card(fan.page).get_by_role("button", name="Buy a seat").click()
    dialog = fan.page.get_by_role("dialog", name="Buy a Back Room seat")
    await expect(dialog.get_by_role("note")).to_have_text("Test mode — no real money")
    await assert_labelled(fan.page)
    await screenshot(fan.page, "back-room-buy-390.png")
    await dialog.get_by_role("button", name="Buy a seat for $5.00").click()
    await expect(dialog.get_by_text("To pay: $5.00")).to_be_visible()
    await card(late.page).get_by_role("button", name="Buy a seat").click()
    second = late.page.get_by_role("dialog", name="Buy a Back Room seat")
    await second.get_by_role("button", name="Buy a seat for $5.00").click()
    await expect(second.get_by_text("To pay: $5.00")).to_be_visible()

    # The fan pays first and gets the seat; the latecomer's payment finds no seat left and is
    # refunded in full, and told why.
    await pay_with_test_card(dialog, "Your seat is yours: welcome to the Back Room.")
    await second.get_by_role("button", name="Pay (test card)").click()
    await expect(second.locator(".checkout")).to_have_attribute("data-order-state", "refunded")
    await expect(second.locator(".order-state")).to_have_text(
        "The last seat in the Back Room was taken before your payment arrived."
        " You have been refunded in full."
    )
    await screenshot(late.page, "back-room-seats-ran-out-1280.png")
    await second.locator(".checkout").get_by_role("button", name="Close").click()

    # The main room's card says Full for everyone at once; the host sees the seat taken.
    await expect(card(host.page)).to_contain_text("Full")
    await expect(card(host.page)).to_contain_text("1 seat taken")

    await dialog.get_by_role("link", name="Enter the Back Room").click()
    await expect(fan.page).to_have_url(BACK_ROOM_URL)
    await expect(fan.page.get_by_role("heading", level=1)).to_have_text("Back Room · After party")
    await expect(ui.connection(fan.page)).to_have_attribute("data-state", "live")
    # The Back Room starts empty: the main room's messages stay there.
    await expect(ui.messages(fan.page).filter(has_text="Welcome to the main room")).to_have_count(0)

    await card(host.page).get_by_role("link", name="Enter the Back Room").click()
    await expect(host.page).to_have_url(BACK_ROOM_URL)
    await expect(ui.connection(host.page)).to_have_attribute("data-state", "live")

    # The host and the holder chat in the Back Room, live both ways.
    await ui.send(host.page, "Thanks for coming backstage")
    await expect(ui.messages(fan.page).filter(has_text="Thanks for coming backstage")).to_have_count(1)
    await ui.send(fan.page, "Happy to be here")
    await expect(ui.messages(host.page).filter(has_text="Happy to be here")).to_have_count(1)
    from_host = ui.messages(fan.page).filter(has_text="Thanks for coming backstage")
    await expect(from_host.locator(".badge.host")).to_be_visible()
    await screenshot(fan.page, "back-room-chat-390.png")
    await assert_readable(fan.page.locator(".back-room-strip p"), "the Back Room strip")

    # The latecomer finds the Back Room full: nothing to buy, no way in.
    await expect(card(late.page)).to_contain_text("Full")
    await expect(card(late.page).get_by_role("button", name="Buy a seat")).to_have_count(0)
    await expect(card(late.page).get_by_role("link", name="Enter the Back Room")).to_have_count(0)
    await screenshot(late.page, "back-room-full-1280.png")
    shown = late.page.locator(".back-room-card h2, .back-room-card-facts")
    await assert_readable(shown, "the Back Room card")

    # The host's member list: the host and the holder; the host removes the seat with a refund.
    await host.page.get_by_role("button", name="Back Room members").click()
    members = host.page.get_by_role("dialog", name="Back Room members")
    rows = members.get_by_role("list", name="Members").locator("li")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text(host_name)
    await expect(rows.nth(1)).to_contain_text(fan_name)
    await screenshot(host.page, "back-room-members-1280.png")
    await rows.nth(1).get_by_role("button", name=f"Remove {fan_name}'s seat").click()
    await expect(rows.nth(1).get_by_label("Refund their seat in full")).to_be_checked()
    await rows.nth(1).get_by_role("button", name="Remove and refund").click()
    await expect(rows).to_have_count(2)
    await expect(members.get_by_text("Nobody has bought a seat yet.")).to_be_visible()

    # The holder sees at once that their seat was removed, with the way back to the main room.
    await expect(fan.page.get_by_role("heading", name="Your seat was removed")).to_be_visible()
    await expect(fan.page.get_by_role("link", name="Back to After party")).to_be_visible()
    await screenshot(fan.page, "back-room-removed-390.png")

    # The fan's payments say the seat was refunded.
    await fan.page.goto("/payments")
    row = fan.page.get_by_role("list", name="Payments").locator("li").first
    await expect(row).to_contain_text("Back Room seat")
    await expect(row).to_contain_text("$5.00")
    await expect(row.locator(".order-badge")).to_have_text("Refunded")

    # The seat is on sale again for everyone in the main room.
    await expect(card(late.page)).to_contain_text("1 of 1 seat left")
    await expect(card(late.page).get_by_role("button", name="Buy a seat")).to_be_visible()

    # The host leaves the Back Room for the main room.
    await members.get_by_role("button", name="Close").click()
    await host.page.get_by_role("button", name=re.compile(r"^Leave the Back Room")).click()
    await expect(host.page).to_have_url(re.compile(rf"/c/{code}$"))
    await expect(card(host.page)).to_contain_text("0 seats taken")


async def buy_seat(page: Page, price: str) -> None:
    await card(page).get_by_role("button", name="Buy a seat").click()
    dialog = page.get_by_role("dialog", name="Buy a Back Room seat")
    await dialog.get_by_role("button", name=f"Buy a seat for {price}").click()
    await pay_with_test_card(dialog, "Your seat is yours: welcome to the Back Room.")
    await dialog.locator(".checkout").get_by_role("button", name="Done").click()
    await expect(dialog).to_have_count(0)


async def test_a_back_room_opened_when_creating_a_room_keeps_its_limit_above_the_seats_taken(
    people: People, stack: Stack
) -> None:
    host = await people.new(MOBILE)
    await sign_up_host(host)
    await host.page.goto("/payouts")
    await host.page.get_by_role("button", name="Set up payouts").click()
    await host.page.get_by_role("button", name="Complete test onboarding").click()
    await expect(host.page.locator(".payout-words")).to_have_attribute("data-can-receive", "true")

    # The create form opens the Back Room with the room, in the light theme.
    await host.page.goto("/create")
    await host.page.get_by_label("Name", exact=True).fill("Book launch")
    fields = host.page.get_by_role("group", name="Back Room (paid seats)")
    await fields.get_by_label("Open a Back Room").check()
    await fields.get_by_label(re.compile(r"^Seat price")).fill("0.20")
    await fields.get_by_label("Seats", exact=True).fill("3")
    await host.page.get_by_role("button", name="Create ChatPop").click()
    await expect(fields.get_by_role("alert")).to_have_text("A seat costs from $0.50 to $1,000.00.")
    await fields.get_by_label(re.compile(r"^Seat price")).fill("2.50")
    await screenshot(host.page, "back-room-create-390.png")
    await host.page.get_by_role("button", name="Create ChatPop").click()
    await expect(host.page).to_have_url(ui.ROOM_URL)
    code = ui.ROOM_URL.search(host.page.url).group(1)  # type: ignore[union-attr]
    await host.page.get_by_role("dialog").get_by_role("button", name="Join chat").click()
    await expect(ui.connection(host.page)).to_have_attribute("data-state", "live")
    await expect(card(host.page)).to_contain_text("$2.50 a seat")
    await expect(card(host.page)).to_contain_text("3 of 3 seats left")

    # Two fans take a seat each; everyone's card counts them down live.
    first = await people.new(MOBILE)
    first_name = await visit(first, code, "FirstFan")
    second = await people.new(DESKTOP)
    second_name = await visit(second, code, "SecondFan")
    await buy_seat(first.page, "$2.50")
    await expect(card(second.page)).to_contain_text("2 of 3 seats left")
    await buy_seat(second.page, "$2.50")
    for person in (host, first, second):
        await expect(card(person.page)).to_contain_text("1 of 3 seats left")
    await expect(card(first.page)).to_contain_text("You have a seat")
    await expect(card(first.page).get_by_role("link", name="Enter the Back Room")).to_be_visible()
    await expect(card(host.page)).to_contain_text("2 seats taken")
    await screenshot(first.page, "back-room-card-seated-390.png")
    facts = first.page.locator(".back-room-card h2, .back-room-card-facts")
    await assert_readable(facts, "the Back Room card")

    # The seat limit refuses to go below the two seats taken.
    await host.page.get_by_role("button", name="Room settings").click()
    settings = host.page.get_by_role("dialog", name="Room settings")
    back = settings.get_by_role("group", name="Back Room (paid seats)")
    await expect(back).to_contain_text("2 seats taken now.")
    await back.get_by_label("Seats", exact=True).fill("1")
    await settings.get_by_role("button", name="Save settings").click()
    await expect(back.get_by_role("alert")).to_have_text("2 seats are taken: the limit can't go below that.")
    await back.get_by_label("Seats", exact=True).fill("2")
    await settings.get_by_role("button", name="Save settings").click()
    await expect(settings).to_have_count(0)
    for person in (host, first, second):
        await expect(card(person.page)).to_contain_text("Full")

    # In the Back Room the host sees both holders, and removes one for abuse, without a refund.
    await card(second.page).get_by_role("link", name="Enter the Back Room").click()
    await expect(ui.connection(second.page)).to_have_attribute("data-state", "live")
    await card(host.page).get_by_role("link", name="Enter the Back Room").click()
    await expect(ui.connection(host.page)).to_have_attribute("data-state", "live")
    await assert_readable(host.page.locator(".back-room-strip p"), "the Back Room strip")
    await host.page.get_by_role("button", name="Back Room members").click()
    members = host.page.get_by_role("dialog", name="Back Room members")
    rows = members.get_by_role("list", name="Members").locator("li")
    await expect(rows).to_have_count(3)
    await expect(rows.nth(1)).to_contain_text(first_name)
    await expect(rows.nth(2)).to_contain_text(second_name)
    await rows.nth(2).get_by_role("button", name=f"Remove {second_name}'s seat").click()
    await rows.nth(2).get_by_label("No refund (for abuse)").check()
    await screenshot(host.page, "back-room-remove-390.png")
    await rows.nth(2).get_by_role("button", name="Remove without refund").click()
    await expect(rows).to_have_count(2)
    await expect(host.page.get_by_role("status").filter(has_text="without a refund")).to_be_visible()
    await expect(second.page.get_by_role("heading", name="Your seat was removed")).to_be_visible()

    # Their payment stands; coming back to the Back Room's address still says the seat was removed.
    await second.page.goto("/payments")
    row = second.page.get_by_role("list", name="Payments").locator("li").first
    await expect(row.locator(".order-badge")).to_have_text("Seat taken")
    await second.page.goto(f"/c/{code}/back-room")
    await expect(second.page.get_by_role("heading", name="Your seat was removed")).to_be_visible()
    await expect(second.page.get_by_role("link", name="Back to Book launch")).to_be_visible()

    # The seat is free again; someone who never had one is told the Back Room is for seat holders.
    outsider = await people.new(MOBILE)
    await visit(outsider, code, "Outsider")
    await expect(card(outsider.page)).to_contain_text("1 of 2 seats left")
    await outsider.page.goto(f"/c/{code}/back-room")
    await expect(outsider.page.get_by_role("heading", name="You don't have a seat")).to_be_visible()
    await screenshot(outsider.page, "back-room-no-seat-390.png")

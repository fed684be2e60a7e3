"""Paid pins and tips in the web client, in test mode (no Stripe keys: no money moves, a test card
pays), as people see them: a host with an account sets up payouts, a participant pins a message and
everyone sees it with a countdown, a second participant outbids and the first pin moves below, the top
holder extends, a tip shows in the room, the host's earnings add up; of two outbids at the same moment
the second to pay is refunded and told why, the host removes a pin at once, and a pin drops when its
time runs out with no reload. With Stripe (the fake Stripe API, and a stand-in for Stripe.js at
Stripe's address): onboarding at Stripe's hosted page, and a pin paid through Stripe.js after a
declined card."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.async_api import Browser, Locator, Page, Route, expect

from tests.browser import ui
from tests.browser.harness import ARTIFACTS, DESKTOP, MOBILE, WORKER_ARTIFACTS, People, Person
from tests.browser.test_chat import assert_labelled
from tests.browser.test_everyday import visit
from tests.browser.test_moderation import assert_readable, message, message_action, screenshot
from tests.browser.test_reactions_and_deletion import say
from tests.e2e.conftest import own_database, running_stack

if TYPE_CHECKING:
    from chatpop_common.devstack import Postgres, Redis
    from tests.e2e.conftest import Stack
    from tests.fakestripe import FakeStripeServer

COUNTDOWN = re.compile(r"^\d{1,2}:\d\d(:\d\d)?$")


def paid_pins(page: Page) -> Locator:
    return page.get_by_role("region", name="Paid pins").locator("li.paid-pin")


def top_pin(page: Page) -> Locator:
    return page.get_by_role("region", name="Paid pins").locator("li.paid-pin[data-top='true']")


async def sign_up_host(person: Person) -> str:
    """A host with an account (rooms of anonymous hosts sell nothing); returns the reserved name."""
    page = person.page
    name = f"Stage_{uuid.uuid4().hex[:6]}"
    await page.goto("/")
    await page.get_by_role("link", name="Sign up").click()
    await page.get_by_label("Email").fill(f"{name.lower()}@example.com")
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_label("Reserved username").fill(name)
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()
    return name


async def pay_with_test_card(dialog: Locator, done: str) -> None:
    await dialog.get_by_role("button", name="Pay (test card)").click()
    await expect(dialog.locator(".order-state")).to_have_text(done)
    await expect(dialog.locator(".checkout")).to_have_attribute("data-order-state", "fulfilled")


async def test_a_host_onboards_people_pin_outbid_extend_and_tip_and_the_host_earns(
    people: People, stack: Stack
) -> None:
    host = await people.new(DESKTOP)
    host_name = await sign_up_host(host)

    # Payouts: the test onboarding stands in for Stripe's, and the account can sell afterwards.
    await host.page.goto("/payouts")
    await expect(host.page.get_by_role("heading", name="Payouts")).to_be_visible()
    await expect(host.page.get_by_role("note").filter(has_text="Test mode")).to_contain_text("no real money")
    await expect(host.page.get_by_text("You have not set up payouts yet.")).to_be_visible()
    await host.page.get_by_role("button", name="Set up payouts").click()
    await expect(host.page).to_have_url(re.compile(r"/payouts/test-onboarding"))
    await screenshot(host.page, "money-test-onboarding-1280.png")
    await host.page.get_by_role("button", name="Complete test onboarding").click()
    await expect(host.page).to_have_url(re.compile(r"/payouts\?returned=1$"))
    await expect(host.page.locator(".payout-words")).to_have_attribute("data-can-receive", "true")
    await screenshot(host.page, "money-payouts-1280.png")

    # The host's room, in the dark theme; the host neither tips nor pays to pin in it.
    code = await ui.create_room(host.page, "Super fans", theme="dark-mode")
    join = host.page.get_by_role("dialog")
    await expect(join).to_contain_text(host_name)
    await join.get_by_role("button", name="Join chat").click()
    await expect(ui.connection(host.page)).to_have_attribute("data-state", "live")
    await say(host.page, "Welcome to the show", 1)
    await expect(host.page.get_by_role("button", name="Tip the host")).to_have_count(0)
    # The room's settings say it sells, and lead to the host's money pages.
    await host.page.get_by_role("button", name="Room settings").click()
    settings = host.page.get_by_role("dialog", name="Room settings")
    money_settings = settings.get_by_role("region", name="Tips and paid pins")
    await expect(money_settings).to_contain_text("On: people can tip you and pay to pin messages (test mode")
    await expect(money_settings.get_by_role("link", name="Earnings")).to_have_attribute("href", "/earnings")
    await settings.get_by_role("button", name="Cancel").click()

    fan = await people.new(MOBILE)
    fan_name = await visit(fan, code, "FanOne")
    rival = await people.new(DESKTOP)
    rival_name = await visit(rival, code, "FanTwo")
    await say(fan.page, "Love this stream", 2)
    await say(rival.page, "Play the encore", 3)
    for person in (host, fan, rival):
        await expect(message(person.page, 3)).to_be_visible()

    # The fan pays to pin their message: nothing is pinned yet, so the lowest tier is the base rate.
    await message_action(fan.page, 2, "Pay to pin")
    dialog = fan.page.get_by_role("dialog", name="Pin this message")
    await expect(dialog.get_by_role("note")).to_have_text("Test mode — no real money")
    await expect(dialog.locator(".outbid")).to_have_text("No message has a paid pin now: from $1.00.")
    await expect(dialog.get_by_role("radio", name=re.compile(r"^\$1\.00"))).to_be_checked()
    await assert_labelled(fan.page)
    await screenshot(fan.page, "money-pin-dialog-390.png")
    await dialog.get_by_role("button", name="Pin for $1.00").click()
    await expect(dialog.get_by_text("To pay: $1.00")).to_be_visible()
    await pay_with_test_card(dialog, "The message is pinned for everyone.")
    await dialog.get_by_role("button", name="Done").click()
    await expect(dialog).to_have_count(0)

    # Everyone sees it with a countdown that runs.
    for person in (host, fan, rival):
        await expect(top_pin(person.page)).to_contain_text("Love this stream")
        await expect(top_pin(person.page)).to_contain_text(f"$1.00 from {fan_name}")
        await expect(top_pin(person.page).locator(".paid-pin-time time")).to_have_text(COUNTDOWN)
    shown = await top_pin(rival.page).locator(".paid-pin-time time").inner_text()
    await expect(top_pin(rival.page).locator(".paid-pin-time time")).not_to_have_text(shown, timeout=3_000)
    await screenshot(fan.page, "money-paid-pin-390.png")

    # The rival must outbid by a tier: $1.00 cannot win now. A declined test card says so and may be
    # tried again.
    await message_action(rival.page, 3, "Pay to pin")
    dialog = rival.page.get_by_role("dialog", name="Pin this message")
    await expect(dialog.locator(".outbid")).to_have_text(
        f"To outbid the top pin ($1.00 by {fan_name}) takes at least $2.00."
    )
    await expect(dialog.get_by_role("radio", name=re.compile(r"^\$1\.00"))).to_be_disabled()
    await expect(dialog.get_by_role("radio", name=re.compile(r"^\$2\.00"))).to_be_checked()
    await dialog.get_by_role("button", name="Pin for $2.00").click()
    await dialog.get_by_role("button", name="Decline (test card)").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("You can try again.")
    await screenshot(rival.page, "money-pin-declined-1280.png")
    await pay_with_test_card(dialog, "The message is pinned for everyone.")
    await dialog.get_by_role("button", name="Done").click()

    # The rival's pin is on top; the fan's moves below it, still live.
    for person in (host, fan, rival):
        await expect(top_pin(person.page)).to_contain_text("Play the encore")
        await expect(paid_pins(person.page)).to_have_count(2)
        below = paid_pins(person.page).nth(1)
        await expect(below).to_contain_text("Love this stream")
        await expect(below).not_to_have_attribute("data-top", "true")
    # Only the top pin's buyer may extend it; only the host may remove pins.
    await expect(top_pin(fan.page).get_by_role("button", name="Extend your pin")).to_have_count(0)
    await expect(rival.page.get_by_role("button", name=re.compile("^Remove"))).to_have_count(0)
    await expect(host.page.get_by_role("button", name=re.compile(r"^Remove .*paid pin"))).to_have_count(2)

    # The top holder extends: any tier adds its time and raises the bar.
    await top_pin(rival.page).get_by_role("button", name="Extend your pin").click()
    dialog = rival.page.get_by_role("dialog", name="Extend your pin")
    await expect(dialog.get_by_role("radio", name=re.compile(r"^\$1\.00"))).to_be_enabled()
    await expect(dialog.locator(".tier").first).to_contain_text("+10 minutes")
    await dialog.get_by_role("button", name="Extend for $1.00").click()
    await pay_with_test_card(dialog, "Your pin was extended.")
    await dialog.get_by_role("button", name="Done").click()
    for person in (host, fan, rival):
        await expect(top_pin(person.page)).to_contain_text(f"$3.00 from {rival_name}")

    # The fan tips the host with a note: everyone sees it among the messages.
    await fan.page.get_by_role("button", name="Tip the host").click()
    dialog = fan.page.get_by_role("dialog", name="Tip the host")
    await expect(dialog.get_by_role("note")).to_have_text("Test mode — no real money")
    await dialog.get_by_role("radio", name="$5.00").check()
    await dialog.get_by_label("Note").fill("Thanks for the show!")
    await assert_labelled(fan.page)
    await screenshot(fan.page, "money-tip-dialog-390.png")
    await dialog.get_by_role("button", name="Tip $5.00").click()
    await pay_with_test_card(dialog, "Thank you! Your tip is in the room.")
    await dialog.get_by_role("button", name="Done").click()
    for person, who in ((host, fan_name), (rival, fan_name), (fan, "You")):
        tip = person.page.locator(".tip-event")
        await expect(tip).to_contain_text(f"{who} tipped the host $5.00")
        await expect(tip).to_contain_text("Thanks for the show!")
    await screenshot(rival.page, "money-tip-in-room-1280.png")
    await screenshot(host.page, "money-pins-host-1280.png")
    # Readable in the dark theme.
    await assert_readable(rival.page.locator(".paid-pin-main, .tip-event-head, .tip-event-note"), "money")

    # The buyer's own payments list their states.
    await fan.page.goto("/payments")
    rows = fan.page.get_by_role("list", name="Payments").locator("li")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text("Tip")
    await expect(rows.nth(0)).to_contain_text("$5.00")
    await expect(rows.nth(0).locator(".order-badge")).to_have_text("Tip sent")
    await expect(rows.nth(0)).to_contain_text("Thanks for the show!")
    await expect(rows.nth(1)).to_contain_text("Paid pin")
    await expect(rows.nth(1).locator(".order-badge")).to_have_text("Pinned")
    await screenshot(fan.page, "money-payments-390.png")

    # The host's earnings: $4.00 of pins and a $5.00 tip, ChatPop's 10% fee out of each.
    await host.page.goto("/earnings")
    overall = host.page.get_by_role("region", name="Overall")
    await expect(overall.locator("[data-figure='gross'] dd")).to_have_text("$9.00")
    await expect(overall.locator("[data-figure='fee'] dd")).to_have_text("$0.90")
    await expect(overall.locator("[data-figure='net'] dd")).to_have_text("$8.10")
    await expect(overall.locator("[data-figure='refunded'] dd")).to_have_text("$0.00")
    gross = "[data-figure='gross'] dd"
    await expect(host.page.get_by_role("region", name="Paid pins").locator(gross)).to_have_text("$4.00")
    await expect(host.page.get_by_role("region", name="Tips").locator(gross)).to_have_text("$5.00")
    row = host.page.get_by_role("row").filter(has_text="Super fans")
    await expect(row).to_contain_text("$9.00")
    await host.page.screenshot(path=str(ARTIFACTS / "money-earnings-1280.png"), full_page=True)


async def test_a_simultaneous_outbid_is_refunded_the_host_removes_a_pin_and_pins_run_out(
    people: People, stack: Stack
) -> None:
    host = await people.new(DESKTOP)
    await sign_up_host(host)
    await host.page.goto("/payouts")
    await host.page.get_by_role("button", name="Set up payouts").click()
    await host.page.get_by_role("button", name="Complete test onboarding").click()
    await expect(host.page.locator(".payout-words")).to_have_attribute("data-can-receive", "true")
    code = await ui.create_room(host.page, "Late show")
    await host.page.get_by_role("dialog").get_by_role("button", name="Join chat").click()
    await expect(ui.connection(host.page)).to_have_attribute("data-state", "live")

    fan = await people.new(MOBILE)
    await visit(fan, code, "NightOwl")
    watcher = await people.new(DESKTOP)
    watcher_name = await visit(watcher, code, "Watcher")
    await say(fan.page, "First light", 1)
    await say(fan.page, "Second light", 2)
    await say(watcher.page, "Third light", 3)

    await message_action(fan.page, 1, "Pay to pin")
    dialog = fan.page.get_by_role("dialog", name="Pin this message")
    await dialog.get_by_role("button", name="Pin for $1.00").click()
    await pay_with_test_card(dialog, "The message is pinned for everyone.")
    await dialog.get_by_role("button", name="Done").click()

    # Two people outbid the $1.00 pin with $2.00 at the same moment: both orders open, the first to
    # pay wins, and the other is refunded in full and told why.
    await message_action(fan.page, 2, "Pay to pin")
    late = fan.page.get_by_role("dialog", name="Pin this message")
    await late.get_by_role("button", name="Pin for $2.00").click()
    await expect(late.get_by_role("button", name="Pay (test card)")).to_be_visible()
    await message_action(watcher.page, 3, "Pay to pin")
    first = watcher.page.get_by_role("dialog", name="Pin this message")
    await first.get_by_role("button", name="Pin for $2.00").click()
    await pay_with_test_card(first, "The message is pinned for everyone.")
    await first.get_by_role("button", name="Done").click()
    await expect(top_pin(fan.page)).to_contain_text(f"$2.00 from {watcher_name}")
    await late.get_by_role("button", name="Pay (test card)").click()
    await expect(late.locator(".checkout")).to_have_attribute("data-order-state", "refunded")
    await expect(late.locator(".order-state")).to_contain_text("refunded in full")
    await screenshot(fan.page, "money-pin-refunded-390.png")
    await late.locator(".modal-actions").get_by_role("button", name="Close").click()
    for person in (host, fan, watcher):
        await expect(paid_pins(person.page)).to_have_count(2)
        await expect(top_pin(person.page)).to_contain_text("Third light")
    await screenshot(watcher.page, "money-paid-pins-light-1280.png")
    await assert_readable(watcher.page.locator(".paid-pin-main"), "paid pins")

    # The host removes the top pin: it goes for everyone at once (it was paid for: no refund).
    await top_pin(host.page).get_by_role("button", name=re.compile(r"^Remove .*paid pin")).click()
    confirm = host.page.get_by_role("dialog", name=re.compile("^Remove .*paid pin"))
    await expect(confirm).to_contain_text("not refunded")
    await confirm.get_by_role("button", name="Remove pin").click()
    for person in (host, fan, watcher):
        await expect(paid_pins(person.page)).to_have_count(1)
        await expect(top_pin(person.page)).to_contain_text("First light")

    # An hour and more later (the watcher's clock jumps ahead) the pin drops off by itself.
    later = datetime.now(UTC) + timedelta(minutes=61)
    await watcher.page.clock.set_fixed_time(later)
    await expect(watcher.page.get_by_role("region", name="Paid pins")).to_have_count(0, timeout=5_000)
    await expect(top_pin(fan.page)).to_contain_text("First light")


# --- with Stripe ------------------------------------------------------------------------------------
#
# Stripe cannot be reached from here, so payments run against the fake Stripe API (tests/fakestripe)
# and Stripe.js is stood in for by a small script served at Stripe's own address: the pages load it
# under the Content-Security-Policy the edge sends with a publishable key (a violation fails the test),
# it mounts a frame from js.stripe.com as the Payment Element does, and confirms the PaymentIntent
# with its client secret at api.stripe.com (answered by the fake), as Stripe.js would.

STRIPE_JS = """(() => {
  window.Stripe = (key) => {
    let secret = "";
    return {
      elements(options) {
        secret = options.clientSecret;
        return {
          create() {
            const handlers = {};
            let frame = null;
            return {
              mount(target) {
                frame = document.createElement("iframe");
                frame.src = "https://js.stripe.com/v3/elements-inner-payment.html";
                frame.title = "Secure payment input frame";
                frame.addEventListener("load", () => handlers.ready && handlers.ready({}));
                target.appendChild(frame);
              },
              destroy() { if (frame) frame.remove(); },
              on(event, handler) { handlers[event] = handler; },
            };
          },
          submit: async () => ({}),
        };
      },
      async confirmPayment() {
        const id = secret.split("_secret_")[0];
        const body = new URLSearchParams({
          payment_method: window.stripeTestCard || "pm_card_visa", client_secret: secret,
        });
        const response = await fetch(`https://api.stripe.com/v1/payment_intents/${id}/confirm`, {
          method: "POST",
          headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/x-www-form-urlencoded" },
          body,
        });
        const answer = await response.json();
        return response.ok ? { paymentIntent: answer } : { error: answer.error };
      },
    };
  };
})();
"""
CARD_FRAME = "<!doctype html><title>Card</title><p>Card number •••• 4242</p>"


async def like_stripe(person: Person, fake_url: str) -> None:
    """Stripe.js and its frame from js.stripe.com, Stripe's API at api.stripe.com answered by the fake."""

    async def stripe_js(route: Route) -> None:
        if route.request.url.endswith(".html"):
            await route.fulfill(status=200, content_type="text/html", body=CARD_FRAME)
        else:
            await route.fulfill(status=200, content_type="text/javascript", body=STRIPE_JS)

    async def stripe_api(route: Route) -> None:
        cors = {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Allow-Methods": "GET, POST",
        }
        if route.request.method == "OPTIONS":
            await route.fulfill(status=204, headers=cors)
            return
        answer = await route.fetch(url=fake_url + route.request.url.removeprefix("https://api.stripe.com"))
        await route.fulfill(response=answer, headers={**answer.headers, **cors})

    await person.context.route("https://js.stripe.com/**", stripe_js)
    await person.context.route("https://api.stripe.com/**", stripe_api)


@pytest.fixture(scope="module")
def stripe_platform(
    database_url: str,
    redis_url: str,
    datastores: tuple[Postgres, Redis],
    web_build: Path,
    fake_stripe_server: FakeStripeServer,
) -> Iterator[Stack]:
    fake = fake_stripe_server.new_platform()
    try:
        with running_stack(
            own_database(database_url, "chatpop_web_stripe"),
            redis_url,
            datastores[1],
            log_dir=WORKER_ARTIFACTS / "logs-stripe",
            stripe=fake,
        ) as running:
            yield running
    finally:
        fake.close()


async def test_with_stripe_the_host_onboards_at_stripe_and_a_pin_is_paid_through_stripe_js(
    browser: Browser, stripe_platform: Stack, request: pytest.FixtureRequest
) -> None:
    fake = stripe_platform.stripe
    assert fake is not None
    # The site's public address (PUBLIC_URL), where Stripe sends hosts back after onboarding.
    crowd = People(browser=browser, base_url=stripe_platform.base_url.replace("127.0.0.1", "localhost"))
    try:
        host = await crowd.new(DESKTOP)
        await like_stripe(host, fake.url)
        host_name = await sign_up_host(host)
        policy = (await host.page.request.get("/payouts")).headers["content-security-policy"]
        assert "https://js.stripe.com" in policy and "https://api.stripe.com" in policy

        # Onboarding happens at Stripe (the fake's hosted page), which sends the host back.
        await host.page.goto("/payouts")
        await expect(host.page.get_by_role("note").filter(has_text="Test mode")).to_have_count(0)
        await host.page.get_by_role("button", name="Set up payouts").click()
        await host.page.get_by_role("button", name="Finish onboarding").click()
        await expect(host.page).to_have_url(re.compile(r"/payouts\?returned=1$"))
        await expect(host.page.locator(".payout-words")).to_have_attribute("data-can-receive", "true")

        code = await ui.create_room(host.page, "Stripe lounge")
        join = host.page.get_by_role("dialog")
        await expect(join).to_contain_text(host_name)
        await join.get_by_role("button", name="Join chat").click()
        await expect(ui.connection(host.page)).to_have_attribute("data-state", "live")

        fan = await crowd.new(MOBILE)
        await like_stripe(fan, fake.url)
        await visit(fan, code, "RealFan")
        await say(fan.page, "Worth every cent", 1)

        # A declined card says why and may be tried again with another; nothing is pinned meanwhile.
        await message_action(fan.page, 1, "Pay to pin")
        dialog = fan.page.get_by_role("dialog", name="Pin this message")
        await expect(dialog.get_by_role("note")).to_have_count(0)
        await dialog.get_by_role("button", name="Pin for $1.00").click()
        await expect(dialog.frame_locator("iframe").get_by_text("Card number")).to_be_visible()
        await fan.page.evaluate("window.stripeTestCard = 'pm_card_chargeDeclined'")
        await dialog.get_by_role("button", name="Pay $1.00").click()
        await expect(dialog.get_by_role("alert")).to_contain_text("declined")
        await expect(host.page.get_by_role("region", name="Paid pins")).to_have_count(0)
        await fan.page.evaluate("window.stripeTestCard = 'pm_card_visa'")
        await dialog.get_by_role("button", name="Pay $1.00").click()
        # Stripe's webhook reaches payments, which pins the message.
        await expect(dialog.locator(".order-state")).to_have_text("The message is pinned for everyone.")
        await screenshot(fan.page, "money-stripe-paid-390.png")
        await dialog.get_by_role("button", name="Done").click()
        for person in (host, fan):
            await expect(top_pin(person.page)).to_contain_text("Worth every cent")
    except BaseException:
        failures = ARTIFACTS / "failures"
        failures.mkdir(parents=True, exist_ok=True)
        for index, person in enumerate(crowd.opened):
            await person.page.screenshot(path=str(failures / f"{request.node.name}-{index}.png"))
        raise
    finally:
        problems = [problem for person in crowd.opened for problem in person.problems]
        for person in crowd.opened:
            await person.context.close()
    assert not problems, "the page reported problems:\n" + "\n".join(problems)

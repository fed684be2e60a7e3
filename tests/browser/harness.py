"""The browser tier's building blocks: where Chromium is, the two devices, people at their devices."""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from tests.artifacts import tier_artifacts, worker_artifacts

ARTIFACTS = tier_artifacts("browser")
# Logs and failure screenshots: this worker's own.
WORKER_ARTIFACTS = worker_artifacts("browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As root in a container: no sandbox; no GPU; /dev/shm may be tiny; and no calls home, which this
# machine's closed network would refuse by the dozen.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
MOBILE = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    "device_scale_factor": 2,
}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
CSP_VIOLATION = re.compile(r"Content Security Policy|Refused to (load|execute|apply|connect)", re.I)
addresses = itertools.count(1)

expect.set_options(timeout=10_000)


@dataclass
class Person:
    """One person at one device: a browser context with its own storage, and its page."""

    context: BrowserContext
    page: Page
    address: str
    problems: list[str] = field(default_factory=list)


@dataclass
class People:
    browser: Browser
    base_url: str
    opened: list[Person] = field(default_factory=list)

    async def new(
        self,
        device: dict[str, Any] = DESKTOP,
        *,
        address: str | None = None,
        base_url: str | None = None,
        **options: Any,
    ) -> Person:
        """A person at a new device; each has an address of their own unless `address` puts several
        on one network (one Wi-Fi, carrier NAT). `base_url` sends them to another edge process."""
        number = next(addresses)
        address = address or f"10.{(os.getpid() >> 8) % 250}.{number // 250}.{number % 250 + 1}"
        context = await self.browser.new_context(
            base_url=base_url or self.base_url,
            extra_http_headers={"X-Forwarded-For": address},
            locale="en-US",
            timezone_id="UTC",
            **device,
            **options,
        )
        page = await context.new_page()
        person = Person(context=context, page=page, address=address)

        def on_console(message: ConsoleMessage) -> None:
            if CSP_VIOLATION.search(message.text):
                person.problems.append(f"CSP: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: person.problems.append(f"page error: {error}"))
        self.opened.append(person)
        return person

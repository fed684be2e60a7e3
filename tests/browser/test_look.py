"""Themes: each room's theme colours the page and the browser's toolbar, and its modals follow the
theme's light or dark type."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.harness import ARTIFACTS, MOBILE, People
from tests.e2e.chat import anonymous, bearer

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

# theme → (dark type?, theme-color the browser toolbar gets)
THEMES = {
    "purple-dream": (False, "#faf5ff"),
    "ocean-blue": (False, "#f0f9ff"),
    "dark-mode": (True, "#18181b"),
}

# WCAG relative luminance of a computed CSS colour ("rgb(r, g, b)" or "rgba(...)").
LUMINANCE = """(el, property) => {
  const [r, g, b] = getComputedStyle(el)[property].match(/[\\d.]+/g).slice(0, 3).map(Number);
  const channel = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
}"""


@pytest.mark.parametrize("theme", list(THEMES))
async def test_theme_sets_toolbar_colour_and_modal_type(theme: str, people: People, stack: Stack) -> None:
    dark, toolbar = THEMES[theme]
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=10, headers={"X-Forwarded-For": f"10.252.{len(theme)}.1"}
    ) as http:
        token = await anonymous(http)
        created = await http.post(
            "/api/v1/rooms", json={"name": f"Theme {theme}", "theme": theme}, headers=bearer(token)
        )
        assert created.status_code == 201, created.text
        code = created.json()["code"]

    person = await people.new(MOBILE)
    await person.page.goto(f"/c/{code}")
    dialog = person.page.get_by_role("dialog", name=f"Join Theme {theme}")
    await expect(dialog).to_be_visible()
    await expect(person.page.locator('meta[name="theme-color"]')).to_have_attribute("content", toolbar)
    await expect(person.page.locator("html")).to_have_attribute("data-theme", theme)

    background = await dialog.evaluate(LUMINANCE, "backgroundColor")
    text = await dialog.evaluate(LUMINANCE, "color")
    if dark:
        assert background < 0.05 and text > 0.8, (background, text)
    else:
        assert background > 0.9 and text < 0.05, (background, text)
    # Readable either way: WCAG AA asks for at least 4.5:1.
    assert (max(background, text) + 0.05) / (min(background, text) + 0.05) >= 4.5
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await person.page.screenshot(path=str(ARTIFACTS / f"join-modal-{theme}.png"))

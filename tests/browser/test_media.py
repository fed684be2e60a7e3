"""Media in the web client: a photo attached on a phone (its upload's progress, Cancel, then the send),
shown to the others as a thumbnail that keeps its place and opens a viewer; a voice note recorded with
Chromium's fake microphone, played back from its signed `full` URL; a microphone refused; rooms that
allow no media offer no attach buttons, and the host's change of the allowed kinds shows at once.

This module's Chromium runs with a fake microphone and camera that need no permission prompt (the
`browser` fixture below stands in for the session's one, for these tests only)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image, ImageDraw
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from tests.browser import ui
from tests.browser.harness import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, DESKTOP, MOBILE, People, Person
from tests.browser.test_everyday import visit
from tests.browser.test_look import LUMINANCE
from tests.e2e.chat import anonymous, bearer, create_room, join

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

FAKE_MEDIA_FLAGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
PHOTO_SIZE = (1600, 1000)
# The photo's upload is slowed to this many bytes a second, so its progress can be watched (and
# cancelled) on a machine where it would otherwise take a blink.
SLOW_UPLOAD = 150_000
# Uploads are checked in a worker process: generous on a busy machine.
STORED = 60_000


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Chromium with a fake microphone (a beeping tone) and camera that ask no permission."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}", pytrace=False)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *FAKE_MEDIA_FLAGS], headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


def sunset(path: Path) -> Path:
    """A 1600x1000 JPEG of a sunset over the sea, with grain so that it weighs a megabyte or so."""
    width, height = PHOTO_SIZE
    image = Image.new("RGB", PHOTO_SIZE)
    draw = ImageDraw.Draw(image)
    horizon = height * 3 // 5
    for y in range(horizon):
        t = y / horizon
        draw.line([(0, y), (width, y)], fill=(int(70 + 185 * t), int(40 + 110 * t), int(140 - 60 * t)))
    for y in range(horizon, height):
        t = (y - horizon) / (height - horizon)
        draw.line([(0, y), (width, y)], fill=(int(30 + 20 * t), int(60 + 30 * t), int(110 + 40 * t)))
    draw.ellipse((width // 2 - 130, horizon - 150, width // 2 + 130, horizon + 110), fill=(255, 190, 80))
    grain = Image.frombytes("RGB", PHOTO_SIZE, os.urandom(width * height * 3))
    Image.blend(image, grain, 0.12).save(path, "JPEG", quality=92)
    return path


async def media_room(
    http: httpx.AsyncClient, name: str, media: dict[str, bool], **fields: Any
) -> tuple[str, str]:
    """A room created over the API by a host nobody sees; returns (code, the host's access token)."""
    host = await anonymous(http)
    room = await create_room(http, host, name=name, media=media, **fields)
    return str(room["code"]), host


async def slow_uploads(page: Page, bytes_per_second: int) -> None:
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_second},
    )


async def until(locator: Locator, predicate: str, extra: Any = None, timeout: float = STORED) -> None:
    """Wait (with a deadline) until `predicate`, a script of the element (and `extra`), holds."""
    handle = await locator.element_handle(timeout=timeout)
    await locator.page.wait_for_function(predicate, arg=[handle, extra], timeout=timeout)


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name))


async def test_a_photo_and_a_voice_note_reach_the_room(people: People, stack: Stack, tmp_path: Path) -> None:
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=20, headers={"X-Forwarded-For": "10.251.1.1"}
    ) as http:
        code, _ = await media_room(http, "Beach trip", {"photo": True, "voice": True, "video": False})
    ann = await people.new(MOBILE)
    ben = await people.new(DESKTOP)
    ann_name = await visit(ann, code, "AnnOnPhone")
    await visit(ben, code, "BenAtDesk")
    page = ann.page

    # On a phone the paperclip offers the library and the camera (no video: the room allows none).
    attach = page.get_by_role("button", name="Attach a photo")
    await attach.click()
    menu = page.get_by_role("group", name="Attach a photo")
    await expect(menu.get_by_role("button")).to_have_text(["Photo from your library", "Take a photo"])
    await expect(page.locator('input[type="file"][capture]')).to_have_attribute(
        "accept", "image/jpeg,image/png,image/webp,image/gif"
    )
    photo = sunset(tmp_path / "sunset.jpg")
    async with page.expect_file_chooser() as chooser:
        await menu.get_by_role("button", name="Photo from your library").click()
    await (await chooser.value).set_files(str(photo))
    await expect(page.locator(".attachment-item")).to_contain_text("Photo")
    await ui.composer(page).fill("Sunset from the pier")

    # The upload, slowed down: its progress shows and grows; Cancel stops it and keeps the photo.
    await slow_uploads(page, SLOW_UPLOAD)
    bar = page.get_by_role("progressbar", name="Uploading photo")
    await page.get_by_role("button", name="Send photo").click()
    await expect(bar).to_be_visible()
    first = await bar.evaluate("bar => bar.value")
    await until(bar, "([bar, first]) => bar.value > first", first, timeout=20_000)
    await screenshot(page, "media-upload-progress-390.png")
    await page.get_by_role("button", name="Cancel uploading the photo").click()
    await expect(bar).to_have_count(0)
    await expect(page.locator(".attachment-item")).to_be_visible()
    await expect(ui.composer(page)).to_have_value("Sunset from the pier")
    await expect(ui.messages(page)).to_have_count(0)

    # Sent again at full speed: the caption goes with it, the composer empties.
    await slow_uploads(page, -1)
    await page.get_by_role("button", name="Send photo").click()
    await expect(ui.composer(page)).to_have_value("", timeout=STORED)
    await expect(page.locator(".attachment-item")).to_have_count(0)
    own = ui.messages(page).filter(has_text="Sunset from the pier")
    await expect(own.locator(".media-photo img")).to_have_attribute("alt", f"Photo from {ann_name}")

    # Ben sees the thumbnail, in a place kept at the photo's proportions, and opens the viewer.
    theirs = ui.messages(ben.page).filter(has_text="Sunset from the pier")
    thumb = theirs.get_by_role("img", name=f"Photo from {ann_name}")
    await expect(thumb).to_be_visible()
    await until(thumb, "([img]) => img.complete && img.naturalWidth > 0")
    natural = await thumb.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert max(natural) <= 480, natural
    box = await theirs.locator(".media-photo").bounding_box()
    assert box is not None
    assert abs(box["width"] / box["height"] - PHOTO_SIZE[0] / PHOTO_SIZE[1]) < 0.02, box
    await screenshot(ben.page, "media-photo-message-1280.png")
    opener = theirs.get_by_role("button", name=f"Photo from {ann_name}. Open it larger")
    await opener.click()
    viewer = ben.page.get_by_role("dialog", name=f"Photo from {ann_name}")
    await expect(viewer).to_be_visible()
    full = viewer.locator('img[data-variant="full"]')
    await until(full, "([img, width]) => img.complete && img.naturalWidth === width", PHOTO_SIZE[0])
    await screenshot(ben.page, "media-photo-viewer-1280.png")
    await ben.page.keyboard.press("Escape")
    await expect(viewer).to_have_count(0)
    await expect(opener).to_be_focused()

    # Ann records a voice note (the fake microphone beeps) and sends it; Ben can play it.
    await page.get_by_role("button", name="Record a voice note").click()
    recording = page.get_by_role("group", name="Recording a voice note")
    await expect(recording).to_be_visible()
    await expect(recording.get_by_role("timer")).to_have_text("0:02", timeout=15_000)
    await screenshot(page, "media-voice-recording-390.png")
    await recording.get_by_role("button", name="Stop and send the voice note").click()
    await expect(recording).to_have_count(0)
    voice = ui.messages(ben.page).filter(has=ben.page.locator('.msg-media[data-kind="voice"]'))
    player = voice.locator("audio")
    await expect(player).to_have_attribute(
        "aria-label", re.compile(rf"^Voice note from {ann_name}"), timeout=STORED
    )
    await expect(player).to_have_attribute("preload", "metadata")
    await until(player, "([audio]) => Number.isFinite(audio.duration) && audio.duration > 0")
    served = await player.evaluate(
        """async audio => {
          const answer = await fetch(audio.src);
          await answer.arrayBuffer();
          return [answer.status, answer.headers.get("content-type")];
        }"""
    )
    assert served == [200, "audio/mp4"], served
    await expect(ui.messages(page).filter(has=page.locator('.msg-media[data-kind="voice"]'))).to_have_count(1)
    await screenshot(ben.page, "media-voice-message-1280.png")
    await screenshot(page, "media-chat-390.png")


async def test_a_refused_microphone_is_explained(people: People, stack: Stack) -> None:
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=20, headers={"X-Forwarded-For": "10.251.2.1"}
    ) as http:
        code, _ = await media_room(http, "Quiet room", {"photo": False, "voice": True, "video": False})
    person = await people.new(MOBILE)
    # As a browser answers when the person (or the site's settings) said no to the microphone.
    await person.page.add_init_script(
        """navigator.mediaDevices.getUserMedia = () =>
             Promise.reject(new DOMException("denied", "NotAllowedError"));"""
    )
    await visit(person, code, "NoMicHere")
    page = person.page
    await expect(page.get_by_role("button", name=re.compile("^Attach"))).to_have_count(0)
    await page.get_by_role("button", name="Record a voice note").click()
    await expect(page.get_by_role("alert")).to_contain_text("ChatPop may not use your microphone")
    await expect(page.get_by_role("group", name="Recording a voice note")).to_have_count(0)
    await screenshot(page, "media-microphone-refused-390.png")


async def test_rooms_offer_only_the_media_their_host_allows_and_change_live(
    people: People, stack: Stack, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=20, headers={"X-Forwarded-For": "10.251.3.1"}
    ) as http:
        code, host = await media_room(http, "Text only", {"photo": False, "voice": False, "video": False})
        person = await people.new(MOBILE)
        await visit(person, code, "Textonly")
        page = person.page
        tools = page.get_by_role("button", name=re.compile(r"^(Attach|Record a voice note)"))
        await expect(ui.composer(page)).to_be_enabled()
        await expect(tools).to_have_count(0)
        await expect(page.locator('input[type="file"]')).to_have_count(0)

        # The host allows videos: the paperclip appears at once, with the limits said.
        changed = await http.patch(
            f"/api/v1/rooms/{code}",
            json={"media": {"photo": False, "voice": False, "video": True}},
            headers=bearer(host),
        )
        assert changed.status_code == 200, changed.text
        attach = page.get_by_role("button", name="Attach a video")
        await expect(attach).to_be_visible()
        await expect(page.locator('input[type="file"]')).to_have_attribute(
            "accept", "video/mp4,video/webm,video/quicktime"
        )
        await expect(page.get_by_role("button", name="Record a voice note")).to_have_count(0)

        # A video over the limit is refused before anything is sent.
        big = tmp_path / "long.mp4"
        with big.open("wb") as file:
            file.truncate(51 * 1024 * 1024)
        async with page.expect_file_chooser() as chooser:
            await attach.click()
        await (await chooser.value).set_files(str(big))
        await expect(page.get_by_role("alert")).to_contain_text("Videos can be at most 50 MB")
        await expect(page.locator(".attachment-item")).to_have_count(0)

        # And takes them back: nothing to attach any more.
        changed = await http.patch(
            f"/api/v1/rooms/{code}",
            json={"media": {"photo": False, "voice": False, "video": False}},
            headers=bearer(host),
        )
        assert changed.status_code == 200, changed.text
        await expect(tools).to_have_count(0)


@pytest.mark.parametrize("theme", ["purple-dream", "ocean-blue", "dark-mode"])
async def test_photos_and_their_viewer_in_each_theme(
    theme: str, people: People, stack: Stack, tmp_path: Path
) -> None:
    """A photo sent over the API shows in the theme's bubbles, and its viewer takes the theme's type."""
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=60, headers={"X-Forwarded-For": f"10.251.4.{len(theme)}"}
    ) as http:
        code, _ = await media_room(
            http, f"Photos {theme}", {"photo": True, "voice": True, "video": False}, theme=theme
        )
        sender = await join(http, code, "PierPhotos")
        token = sender["room_token"]
        stored = await http.post(
            f"/api/v1/rooms/{code}/media",
            params={"kind": "photo"},
            content=sunset(tmp_path / "sunset.jpg").read_bytes(),
            headers={**bearer(token), "Content-Type": "application/octet-stream"},
        )
        assert stored.status_code == 201, stored.text
        sent = await http.post(
            f"/api/v1/rooms/{code}/messages",
            json={"client_msg_id": f"theme-{theme}", "text": "", "media_id": stored.json()["media"]["id"]},
            headers=bearer(token),
        )
        assert sent.status_code in (200, 201), sent.text
    person: Person = await people.new(MOBILE)
    await visit(person, code, "ThemeLooker")
    page = person.page
    photo = page.get_by_role("img", name="Photo from PierPhotos")
    await until(photo, "([img]) => img.complete && img.naturalWidth > 0")
    await screenshot(page, f"media-photo-{theme}-390.png")
    await page.get_by_role("button", name="Photo from PierPhotos. Open it larger").click()
    viewer = page.get_by_role("dialog", name="Photo from PierPhotos")
    await expect(viewer).to_be_visible()
    await expect(viewer.get_by_role("button", name="Close")).to_be_visible()
    background = await viewer.evaluate(LUMINANCE, "backgroundColor")
    if theme == "dark-mode":
        assert background < 0.05, background
    else:
        assert background > 0.9, background
    full = viewer.locator('img[data-variant="full"]')
    await until(full, "([img, width]) => img.complete && img.naturalWidth === width", PHOTO_SIZE[0])
    await screenshot(page, f"media-viewer-{theme}-390.png")
    await viewer.get_by_role("button", name="Close").click()
    await expect(viewer).to_have_count(0)

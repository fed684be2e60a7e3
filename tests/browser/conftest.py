"""The browser tier: the web client in Debian's Chromium, driven by Playwright, against all five
services as real processes (the e2e harness; their logs go to test-artifacts/browser/logs, or
test-artifacts/browser/<worker>/logs on pytest-xdist workers).

Each person in a test is a fresh browser context (own storage, own anonymous session) with its own
X-Forwarded-For address, which the stack trusts from 127.0.0.1, so per-address limits see distinct
people. Playwright never downloads a browser here: it drives /usr/bin/chromium (CHROMIUM overrides).
A test that fails leaves a screenshot of every page it opened in test-artifacts/browser/failures/;
uncaught page errors and Content-Security-Policy violations fail the test that caused them.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from chatpop_common.devstack import Postgres, Redis, SeaweedS3
from chatpop_common.localrun import REPO_ROOT
from tests.artifacts import tier_artifacts
from tests.browser.harness import CHROMIUM, CHROMIUM_FLAGS, WORKER_ARTIFACTS, People
from tests.e2e.conftest import Stack, running_stack
from tests.mailbox import Mailbox

_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture(scope="session", autouse=True)
def fresh_failures() -> None:
    """Failure screenshots describe this run only."""
    shutil.rmtree(WORKER_ARTIFACTS / "failures", ignore_errors=True)


@pytest.fixture(scope="session")
def web_build() -> Path:
    """The built client, rebuilt first if a source changed (a no-op when `make test` just built it).
    Workers of one run take turns (a lock file), so that one build never writes over another's."""
    if shutil.which("make") is None:
        pytest.fail("make is needed to build the web client", pytrace=False)
    lock_path = tier_artifacts("browser") / ".web-build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(
            ["make", "-s", "web"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
    index = REPO_ROOT / "services" / "edge" / "web" / "dist" / "index.html"
    if result.returncode != 0 or not index.is_file():
        pytest.fail(f"`make web` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}", pytrace=False)
    return index.parent


@pytest.fixture(scope="session")
def stack(
    database_url: str,
    redis_url: str,
    datastores: tuple[Postgres, Redis],
    web_build: Path,
    mailbox: Mailbox,
    s3_server: SeaweedS3,
) -> Iterator[Stack]:
    # A send limit people can reach in a test (the rate-limit notice), with room for the rest; the
    # anonymous limits are the platform's own, so a group on one network is tried as it will be met.
    limits = {"SEND_RATE_LIMIT": "60", "SEND_RATE_BURST": "12"}
    # Password reset mails go to a real SMTP server the tests read (tests/mailbox.py).
    mail = {"SMTP_URL": mailbox.url, "MAIL_FROM": "ChatPop <no-reply@chatpop.test>"}
    with running_stack(
        database_url,
        redis_url,
        datastores[1],
        extra_env={**limits, **mail},
        log_dir=WORKER_ARTIFACTS / "logs",
        anonymous_limits=True,
        # Photos, voice notes and videos go to the session's private S3 (SeaweedFS).
        s3=s3_server,
    ) as running:
        yield running


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: `make test` installs Debian's chromium package "
            "(or set CHROMIUM to a Chromium binary)",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def people(browser: Browser, stack: Stack, request: pytest.FixtureRequest) -> AsyncIterator[People]:
    crowd = People(browser=browser, base_url=stack.base_url)
    try:
        yield crowd
    finally:
        if request.node.stash.get(_FAILED, False):
            failures = WORKER_ARTIFACTS / "failures"
            failures.mkdir(parents=True, exist_ok=True)
            for index, person in enumerate(crowd.opened):
                try:
                    await person.page.screenshot(path=str(failures / f"{request.node.name}-{index}.png"))
                except Exception as exc:
                    print(f"no failure screenshot of person {index}: {exc}")
        problems = [problem for person in crowd.opened for problem in person.problems]
        for person in crowd.opened:
            await person.context.close()
        if problems and not request.node.stash.get(_FAILED, False):
            pytest.fail("the page reported problems:\n" + "\n".join(problems), pytrace=False)

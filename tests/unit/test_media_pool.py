"""The media check pool: checks run in fresh, limited worker processes; a full line is refused at once;
a worker past its time is killed; the event loop never waits on a check.

The stand-in checks (tests/unit/media_pool_checks.py) run in the workers like check_media would.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatpop_edge.media.inspect import Checked, Limits, MediaRejected
from chatpop_edge.media.pool import CheckerBusy, CheckTimeout, MediaChecker
from tests import media_samples as samples
from tests.unit import media_pool_checks as stand_ins

DEADLINE = 30.0


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def observed(result: Checked) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(result.content_type)
    return answer


def source(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "upload"
    path.write_text(text)
    return path


async def test_each_check_runs_in_a_fresh_idle_priority_and_capped_process(tmp_path: Path) -> None:
    checker = MediaChecker(
        Limits(max_pixels=1234),
        workers=1,
        queue=0,
        timeout=DEADLINE,
        memory_mb=1024,
        check=stand_ins.report_process,
    )
    try:
        first = observed(await checker.check("photo", source(tmp_path), tmp_path / "one"))
        second = observed(await checker.check("video", source(tmp_path), tmp_path / "two"))
    finally:
        await checker.close()
    assert first["pid"] != os.getpid() and second["pid"] != os.getpid()
    assert first["pid"] != second["pid"]
    assert first["policy"] == os.SCHED_IDLE, "checks only get CPU time the chat does not want"
    assert first["rlimit_as"] == 1024 * 1024 * 1024
    assert (first["kind"], first["source"], first["workdir"]) == (
        "photo",
        str(tmp_path / "upload"),
        str(tmp_path / "one"),
    )
    assert first["max_pixels"] == 1234
    assert second["kind"] == "video"


async def test_real_checks_come_back_accepted_or_refused(tmp_path: Path) -> None:
    checker = MediaChecker(workers=1, queue=1, timeout=DEADLINE)
    try:
        await checker.start()
        photo = samples.webp_photo(tmp_path / "p.webp")
        result = await checker.check("photo", photo, tmp_path / "ok")
        assert (result.content_type, result.width, result.height) == ("image/webp", 40, 30)
        assert {v.name for v in result.variants} == {"full", "thumb"}
        assert all(v.path.exists() and v.path.parent == tmp_path / "ok" for v in result.variants)

        page = samples.html_as_jpg(tmp_path / "page.jpg")
        with pytest.raises(MediaRejected) as caught:
            await checker.check("photo", page, tmp_path / "refused")
        assert caught.value.code == "media_unsupported"
        assert checker.in_flight == 0
    finally:
        await checker.close()


async def test_a_full_line_is_refused_at_once(tmp_path: Path) -> None:
    checker = MediaChecker(workers=1, queue=1, timeout=DEADLINE, check=stand_ins.wait_for_release)
    running = asyncio.create_task(checker.check("photo", source(tmp_path), tmp_path / "a"))
    waiting = asyncio.create_task(checker.check("photo", source(tmp_path), tmp_path / "b"))
    try:
        await until(lambda: (tmp_path / "a" / "started").exists(), "the first check to start")
        assert checker.in_flight == 2
        with pytest.raises(CheckerBusy):
            await checker.check("photo", source(tmp_path), tmp_path / "c")
        assert not (tmp_path / "c").exists()

        (tmp_path / "a").joinpath("release").touch()
        await running
        # The waiting one got the worker.
        await until(lambda: (tmp_path / "b" / "started").exists(), "the second check to start")
        (tmp_path / "b").joinpath("release").touch()
        await waiting
        assert checker.in_flight == 0
    finally:
        for directory in ("a", "b"):
            (tmp_path / directory).mkdir(exist_ok=True)
            (tmp_path / directory / "release").touch()
        await asyncio.gather(running, waiting, return_exceptions=True)
        await checker.close()


async def test_a_check_past_its_time_is_killed_and_the_pool_goes_on(tmp_path: Path) -> None:
    checker = MediaChecker(workers=1, queue=0, timeout=1.0, check=stand_ins.maybe_hang)
    try:
        with pytest.raises(CheckTimeout) as caught:
            await checker.check("video", source(tmp_path, "hang"), tmp_path / "slow")
        assert isinstance(caught.value, MediaRejected)
        assert caught.value.code == "media_invalid"
        pid = int((tmp_path / "slow" / "started").read_text())
        await until(lambda: gone(pid), "the runaway worker to be gone")

        after = observed(await checker.check("video", source(tmp_path, "answer"), tmp_path / "next"))
        assert after["pid"] != pid
        assert checker.in_flight == 0
    finally:
        await checker.close()


async def test_the_event_loop_keeps_ticking_during_a_long_check(tmp_path: Path) -> None:
    checker = MediaChecker(workers=1, queue=0, timeout=DEADLINE, check=stand_ins.spin)
    await checker.start()
    worst_lag = 0.0
    stop = asyncio.Event()

    async def tick() -> None:
        nonlocal worst_lag
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            worst_lag = max(worst_lag, time.monotonic() - before - 0.01)

    ticker = asyncio.create_task(tick())
    try:
        result = observed(await checker.check("photo", source(tmp_path, "1.5"), tmp_path / "spin"))
    finally:
        stop.set()
        await ticker
        await checker.close()
    assert result["count"] > 0
    # A correctness check (the loop was never blocked by the check), not a performance target.
    assert worst_lag < 0.5, worst_lag


@pytest.mark.parametrize(
    ("check", "memory_mb"),
    [(stand_ins.die, 1536), (stand_ins.allocate, 512), (stand_ins.explode, 1536)],
    ids=["worker-dies", "memory-cap", "unexpected-error"],
)
async def test_a_failing_worker_is_an_invalid_file(tmp_path: Path, check: Any, memory_mb: int) -> None:
    checker = MediaChecker(workers=1, queue=0, timeout=DEADLINE, memory_mb=memory_mb, check=check)
    try:
        with pytest.raises(MediaRejected) as caught:
            await checker.check("photo", source(tmp_path), tmp_path / "w")
        assert caught.value.code == "media_invalid"
        assert checker.in_flight == 0
    finally:
        await checker.close()


async def test_cancelling_a_check_kills_its_worker(tmp_path: Path) -> None:
    checker = MediaChecker(workers=1, queue=0, timeout=DEADLINE, check=stand_ins.maybe_hang)
    task = asyncio.create_task(checker.check("video", source(tmp_path, "hang"), tmp_path / "c"))
    try:
        await until(lambda: (tmp_path / "c" / "started").exists(), "the check to start")
        pid = int((tmp_path / "c" / "started").read_text())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: gone(pid), "the cancelled worker to be gone")
        assert checker.in_flight == 0
    finally:
        await checker.close()


async def test_close_stops_running_checks_and_refuses_new_ones(tmp_path: Path) -> None:
    checker = MediaChecker(workers=1, queue=1, timeout=DEADLINE, check=stand_ins.maybe_hang)
    task = asyncio.create_task(checker.check("video", source(tmp_path, "hang"), tmp_path / "c"))
    await until(lambda: (tmp_path / "c" / "started").exists(), "the check to start")
    pid = int((tmp_path / "c" / "started").read_text())
    await checker.close()
    with pytest.raises(CheckerBusy):
        await task
    await until(lambda: gone(pid), "the worker to be gone")
    with pytest.raises(CheckerBusy):
        await checker.check("video", source(tmp_path, "answer"), tmp_path / "d")

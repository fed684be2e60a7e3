"""Periodic background jobs keep their schedule through failures and stop when cancelled."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import CollectorRegistry, Counter

from chatpop_common.periodic import run_every


async def test_a_failed_run_is_counted_and_the_next_one_goes_ahead() -> None:
    registry = CollectorRegistry()
    failures = Counter("job_failures", "test", registry=registry)
    runs: list[int] = []

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise ConnectionError("database went away")

    task = asyncio.create_task(run_every(0.01, job, what="run the job", failures=failures))
    while len(runs) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert registry.get_sample_value("job_failures_total") == 1
    assert task.cancelled()


async def test_cancelling_ends_a_run_in_progress() -> None:
    started = asyncio.Event()

    async def job() -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(run_every(60, job, what="wait"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

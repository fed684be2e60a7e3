"""Media checks in worker processes, so decoding a hostile file can neither stall nor crash the edge.

Every check runs in a fresh process forked from a multiprocessing forkserver that has Pillow and PyAV
imported already (fork is cheap; nothing leaks from one upload into the next). A pool executor cannot
kill the one task that runs away without breaking every other task in flight, so each check owns its
process: on timeout that process alone is killed, and a dead worker affects only its own upload. The
worker drops to the idle scheduling class (nice 10 where there is none) and caps its address space
(RLIMIT_AS) before touching the file.

At most `workers` checks run at once and at most `queue` more wait; past that `check` raises
CheckerBusy at once (503 media_busy). The event loop only ever waits on file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import resource
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from chatpop_edge.media.inspect import Checked, Limits, MediaRejected, check_media

log = logging.getLogger(__name__)

CheckFunction = Callable[[str, Path, Path, Limits], Checked]

_NICE_INCREMENT = 10
# After its answer (or a kill) a worker exits at once; this only bounds waiting for a wedged one.
_REAP_SECONDS = 5.0


class CheckerBusy(Exception):
    """Every worker is busy and the waiting line is full: answer 503 `media_busy` (retryable)."""


class CheckTimeout(MediaRejected):
    """The check ran past its time and its worker was killed. A MediaRejected with code media_invalid
    (a file that takes this long to check is treated as hostile); the edge may map it otherwise."""

    def __init__(self, seconds: float) -> None:
        super().__init__("media_invalid", f"The file could not be checked within {seconds:g} s.")
        self.seconds = seconds

    def __reduce__(self) -> tuple[type[CheckTimeout], tuple[float]]:
        return (CheckTimeout, (self.seconds,))


def _limit_worker(memory_mb: int) -> None:
    # The chat first: on Linux the worker only gets CPU time nothing else on the machine wants
    # (SCHED_IDLE); elsewhere it is niced.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(_NICE_INCREMENT)
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _worker_main(
    conn: Connection,
    check: CheckFunction,
    kind: str,
    source: str,
    workdir: str,
    limits: Limits,
    memory_mb: int,
) -> None:
    """The body of a worker process: one check, its outcome sent back over `conn`."""
    outcome: tuple[str, object, object]
    try:
        _limit_worker(memory_mb)
        outcome = ("ok", check(kind, Path(source), Path(workdir), limits), None)
    except MediaRejected as exc:
        outcome = ("rejected", exc.code, exc.message)
    except MemoryError:
        outcome = ("rejected", "media_invalid", "The file needs more memory to check than is allowed.")
    except BaseException:
        outcome = ("error", traceback.format_exc(), None)
    try:
        conn.send(outcome)
    finally:
        conn.close()


def _warm_up() -> None:
    """Nothing: starting it makes the forkserver start and import the preloaded modules."""


async def _readable(fd: int) -> None:
    """Wait until `fd` can be read (data, EOF or a process exit on a sentinel) without blocking the loop."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


class MediaChecker:
    """Runs `check_media` in worker processes: `await checker.check(kind, source, workdir)`."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        workers: int = 1,
        queue: int = 4,
        timeout: float = 120.0,
        memory_mb: int = 1536,
        check: CheckFunction = check_media,
    ) -> None:
        if workers < 1 or queue < 0 or timeout <= 0:
            raise ValueError("MediaChecker needs workers >= 1, queue >= 0 and a positive timeout")
        self.workers = workers
        self.queue = queue
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.limits = limits or Limits()
        self._check = check
        self._context = multiprocessing.get_context("forkserver")
        # Takes effect when the forkserver starts (the first check or start()); children forked from it
        # share the imported Pillow and PyAV instead of importing them per upload.
        self._context.set_forkserver_preload(["chatpop_edge.media.pool"])
        self._slots = asyncio.Semaphore(workers)
        self._admitted = 0
        self._running: set[BaseProcess] = set()
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Checks running or waiting for a worker."""
        return self._admitted

    async def start(self) -> None:
        """Start the forkserver now (it imports Pillow and PyAV) rather than on the first upload."""
        process = self._context.Process(target=_warm_up, name="media-check-warmup", daemon=True)
        await asyncio.to_thread(process.start)
        await self._reap(process)

    async def check(self, kind: str, source: Path, workdir: Path) -> Checked:
        """Check `source` as `kind` in a worker, which writes the stored variants into `workdir`.

        Raises MediaRejected (422; CheckTimeout when the worker ran out of time and was killed) or
        CheckerBusy (503) when `workers` checks run and `queue` more wait already."""
        if self._closed or self._admitted >= self.workers + self.queue:
            raise CheckerBusy("Too many media files are being checked; try again shortly.")
        self._admitted += 1
        try:
            async with self._slots:
                if self._closed:
                    raise CheckerBusy("The media checker is shutting down.")
                return await self._run(kind, source, workdir)
        finally:
            self._admitted -= 1

    async def close(self) -> None:
        """Stop: no new checks; checks still running are killed (their callers get CheckerBusy)."""
        self._closed = True
        running = list(self._running)
        for process in running:
            if process.is_alive():
                process.kill()

    async def _run(self, kind: str, source: Path, workdir: Path) -> Checked:
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main,
            args=(sender, self._check, kind, str(source), str(workdir), self.limits, self.memory_mb),
            name=f"media-check-{kind}",
            daemon=True,
        )
        # Starting goes through the forkserver's socket (and starts the forkserver the first time):
        # done in a thread, and completed even if this call is cancelled meanwhile, so that no worker
        # is left running unwatched.
        starting = asyncio.ensure_future(asyncio.to_thread(process.start))
        try:
            await asyncio.shield(starting)
        except BaseException:
            receiver.close()
            with contextlib.suppress(Exception):
                await starting
            if process.pid is not None:
                process.kill()
                await self._reap(process)
            raise
        finally:
            sender.close()
        self._running.add(process)
        exitcode: int | None = None
        try:
            outcome = await asyncio.wait_for(self._receive(receiver), self.timeout)
        except TimeoutError:
            log.warning(
                "media check of a %s ran past %s s; worker %s killed", kind, self.timeout, process.pid
            )
            raise CheckTimeout(self.timeout) from None
        finally:
            receiver.close()
            if process.is_alive():
                process.kill()
            exitcode = await self._reap(process)
            self._running.discard(process)
        return self._result(outcome, exitcode)

    @staticmethod
    async def _receive(receiver: Connection) -> tuple[str, object, object] | None:
        await _readable(receiver.fileno())
        try:
            outcome: tuple[str, object, object] = receiver.recv()
        except (EOFError, OSError):
            return None  # the worker died without answering
        return outcome

    def _result(self, outcome: tuple[str, object, object] | None, exitcode: int | None) -> Checked:
        if outcome is None:
            if self._closed:
                raise CheckerBusy("The media checker is shutting down.")
            # Killed by the kernel (the address-space cap, a crash in a decoder): hostile or broken.
            log.warning("media check worker died without an answer (exit code %s)", exitcode)
            raise MediaRejected("media_invalid", "The file could not be processed.")
        status, first, second = outcome
        if status == "ok":
            assert isinstance(first, Checked)
            return first
        if status == "rejected":
            raise MediaRejected(str(first), str(second))
        log.error("media check failed unexpectedly in its worker:\n%s", first)
        raise MediaRejected("media_invalid", "The file could not be processed.")

    @staticmethod
    async def _reap(process: BaseProcess) -> int | None:
        """Collect an exited (or killed) worker without blocking the loop; its exit code."""
        try:
            await asyncio.wait_for(_readable(process.sentinel), _REAP_SECONDS)
        except TimeoutError:
            process.kill()
            await asyncio.wait_for(_readable(process.sentinel), _REAP_SECONDS)
        process.join(0)
        exitcode = process.exitcode
        if exitcode is not None:
            process.close()
        return exitcode

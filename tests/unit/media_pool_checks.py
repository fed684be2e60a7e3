"""Stand-ins for check_media that the pool tests run in its workers (importable there by module path).

Each has check_media's signature; what they observed about their process comes back in `content_type`
as JSON, since a Checked is all a worker can answer with.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

from chatpop_edge.media.inspect import Checked, Limits

# Bounds how long a stand-in may wait for the test to release it, should the test itself fail first.
_GIVE_UP_SECONDS = 60.0


def _answer(**observed: object) -> Checked:
    return Checked(json.dumps(observed), None, None, None, 0, [])


def report_process(kind: str, source: Path, workdir: Path, limits: Limits) -> Checked:
    """Who ran the check: pid, niceness, address-space cap, and the arguments it was given."""
    return _answer(
        pid=os.getpid(),
        nice=os.nice(0),
        policy=os.sched_getscheduler(0),
        rlimit_as=resource.getrlimit(resource.RLIMIT_AS)[0],
        kind=kind,
        source=str(source),
        workdir=str(workdir),
        max_pixels=limits.max_pixels,
    )


def wait_for_release(kind: str, source: Path, workdir: Path, limits: Limits) -> Checked:
    """Tell the test it runs (a `started` file holding its pid), then wait for a `release` file."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "started").write_text(str(os.getpid()))
    deadline = time.monotonic() + _GIVE_UP_SECONDS
    while not (workdir / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return _answer(pid=os.getpid())


def spin(kind: str, source: Path, workdir: Path, limits: Limits) -> Checked:
    """Keep a CPU busy for the number of seconds written in the source file."""
    seconds = float(source.read_text())
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        count += 1
    return _answer(pid=os.getpid(), count=count)


def maybe_hang(kind: str, source: Path, workdir: Path, limits: Limits) -> Checked:
    """When the source says "hang": write the pid, then never finish (until killed). Else answer."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "started").write_text(str(os.getpid()))
    if source.read_text() != "hang":
        return _answer(pid=os.getpid())
    while True:
        time.sleep(1)


def allocate(kind: str, source: Path, workdir: Path, limits: Limits) -> Checked:
    """Ask for 4 GiB at once (more than any address-space cap the tests set)."""
    block = bytearray(4 << 30)
    return _answer(size=len(block))


def die(kind: str, source: Path, workdir: Path, limits: Limits) -> Checked:
    """Exit without answering, as a worker killed by the kernel would."""
    os._exit(9)


def explode(kind: str, source: Path, workdir: Path, limits: Limits) -> Checked:
    raise RuntimeError("a bug in the check")

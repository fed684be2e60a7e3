"""A small supervisor for the services as child processes (`make run` and the e2e tests).

It starts named children, prefixes each output line with the child's name in a fixed-width,
coloured column (`identity  | …`), waits until each is ready (gRPC health SERVING, or HTTP 200 on
a readiness URL), and stops them in reverse start order: SIGTERM, then SIGKILL after a timeout.
A caller may also kill -9, stop, start or restart one child by name.

Given a `RestartBackoff` (`make run` gives one; the e2e harness does not, its tests restart children
themselves), `tend()` starts again every child that exited without being asked to, after a delay
that doubles with each exit in a row, as Kubernetes' CrashLoopBackOff does, and says why each time.

Children run in their own process group, so a Ctrl-C in the terminal reaches only the supervisor,
which then stops them in order instead of all at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatpop_common.settings import INVALID_SETTINGS_EXIT

_COLOURS = ("36", "33", "32", "35", "34", "91", "96", "93")
_POLL_SECONDS = 0.1
DEFAULT_TAIL_LINES = 40
# How many of a child's last lines an exit report repeats (its whole output is streamed already).
REPORT_LINES = 12


@dataclass(frozen=True)
class RestartBackoff:
    """When to start again a child that exited unasked: `initial` seconds after its first exit,
    `factor` times longer after each further exit in a row, never more than `maximum`. A child that
    had run for `reset_after` seconds when it exited starts over at `initial`."""

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 30.0
    reset_after: float = 60.0

    def delay(self, exits_in_a_row: int) -> float:
        """The wait before the next start, after `exits_in_a_row` (≥ 1) exits in a row."""
        return float(min(self.maximum, self.initial * self.factor ** max(0, exits_in_a_row - 1)))


@dataclass(frozen=True)
class GrpcHealth:
    """Ready when the standard gRPC health service at `address` reports SERVING for `service`."""

    address: str
    service: str = ""


@dataclass(frozen=True)
class HttpReady:
    """Ready when GET `url` answers 200."""

    url: str


Readiness = GrpcHealth | HttpReady | None


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one child: its name, command line, full environment and readiness check."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    ready: Readiness = None
    cwd: Path | None = None


def python_module(module: str, *args: str) -> tuple[str, ...]:
    """The command line for `python -m module` with this interpreter."""
    return (sys.executable, "-m", module, *args)


class StartupError(RuntimeError):
    """A child exited or did not become ready in time; the message carries its last output lines."""

    def __init__(
        self, name: str, reason: str, last_lines: Sequence[str], exit_code: int | None = None
    ) -> None:
        self.name = name
        self.reason = reason
        self.last_lines = list(last_lines)
        self.exit_code = exit_code
        shown = "\n".join(f"    {line}" for line in self.last_lines) or "    (no output)"
        super().__init__(f"{name} {reason}; its last output lines:\n{shown}")


@dataclass
class _Child:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    reader: threading.Thread
    tail: deque[str]
    # This process's own last lines (`tail` runs on across restarts under the same name).
    own_tail: deque[str] = field(default_factory=lambda: deque(maxlen=REPORT_LINES))
    expected_exit: bool = False
    reported_exit: bool = False
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False


@dataclass
class _Restarts:
    """One name's history under a RestartBackoff; it outlives each process started under that name."""

    exits_in_a_row: int = 0
    restarts: int = 0
    # When the next start is due (time.monotonic()), while the child waits out its backoff.
    due: float | None = None


@dataclass
class _Output:
    """Serialises writes from the reader threads and the caller."""

    stream: TextIO | None
    colour: bool
    width: int
    log_dir: Path | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    colours: dict[str, str] = field(default_factory=dict)

    def prefix(self, name: str) -> str:
        label = f"{name:<{self.width}} |"
        if not self.colour:
            return label
        colour = self.colours.setdefault(name, _COLOURS[len(self.colours) % len(_COLOURS)])
        return f"\x1b[{colour}m{label}\x1b[0m"

    def line(self, name: str, text: str, log: IO[str] | None) -> None:
        with self.lock:
            if self.stream is not None:
                self.stream.write(f"{self.prefix(name)} {text}\n")
                self.stream.flush()
            if log is not None:
                log.write(text + "\n")
                log.flush()

    def note(self, text: str) -> None:
        with self.lock:
            if self.stream is not None:
                self.stream.write(text + "\n")
                self.stream.flush()


def _wants_colour(stream: TextIO | None) -> bool:
    if stream is None or os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return bool(getattr(stream, "isatty", lambda: False)())


def _check_ready(ready: Readiness) -> bool:
    if ready is None:
        return True
    if isinstance(ready, HttpReady):
        try:
            with urllib.request.urlopen(ready.url, timeout=1) as response:  # noqa: S310 - our own URL
                return int(response.status) == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False
    with grpc.insecure_channel(ready.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=ready.service), timeout=1)
        except grpc.RpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


class Supervisor:
    """Runs named children; thread-safe enough for one caller plus its output reader threads."""

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        log_dir: Path | None = None,
        colour: bool | None = None,
        name_width: int = 9,
        tail_lines: int = DEFAULT_TAIL_LINES,
        stop_timeout: float = 15.0,
        restart: RestartBackoff | None = None,
        who: str = "supervisor",
    ) -> None:
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
        self._out = _Output(
            stream=stream,
            colour=_wants_colour(stream) if colour is None else colour,
            width=name_width,
            log_dir=log_dir,
        )
        self._tail_lines = tail_lines
        self._stop_timeout = stop_timeout
        self._backoff = restart
        self._who = who
        self._specs: dict[str, ServiceSpec] = {}
        self._children: dict[str, _Child] = {}
        self._restarts: dict[str, _Restarts] = {}
        self._order: list[str] = []

    # -- output -----------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """Print a line of the supervisor's own, never interleaved inside a child's line."""
        self._out.note(text)

    def tail(self, name: str) -> list[str]:
        """The child's most recent output lines (kept across restarts)."""
        child = self._children.get(name)
        return list(child.tail) if child is not None else []

    def _pump(self, name: str, stream: IO[bytes], tails: Sequence[deque[str]]) -> None:
        log: IO[str] | None = None
        if self._out.log_dir is not None:
            log = (self._out.log_dir / f"{name}.log").open("a", encoding="utf-8")
        try:
            for raw in iter(stream.readline, b""):
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                for tail in tails:
                    tail.append(text)
                self._out.line(name, text, log)
        finally:
            stream.close()
            if log is not None:
                log.close()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._order)

    def start(self, spec: ServiceSpec) -> None:
        """Start a child (or start it again under the same name once it has exited)."""
        current = self._children.get(spec.name)
        if current is not None and current.process.poll() is None:
            raise RuntimeError(f"{spec.name} is already running")
        tail: deque[str] = current.tail if current is not None else deque(maxlen=self._tail_lines)
        process = subprocess.Popen(
            list(spec.argv),
            env=dict(spec.env),
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert process.stdout is not None
        own_tail: deque[str] = deque(maxlen=REPORT_LINES)
        reader = threading.Thread(
            target=self._pump,
            args=(spec.name, process.stdout, (tail, own_tail)),
            name=f"output-{spec.name}",
            daemon=True,
        )
        self._specs[spec.name] = spec
        self._children[spec.name] = _Child(
            spec=spec, process=process, reader=reader, tail=tail, own_tail=own_tail
        )
        reader.start()
        self._restarts.setdefault(spec.name, _Restarts()).due = None
        if spec.name not in self._order:
            self._order.append(spec.name)

    def wait_ready(self, name: str, timeout: float) -> None:
        """Block until the child is ready; StartupError if it exits or the timeout passes first."""
        child = self._child(name)
        deadline = time.monotonic() + timeout
        while True:
            code = child.process.poll()
            if code is not None:
                child.reader.join(timeout=2)
                child.reported_exit = True
                raise StartupError(name, f"exited with {describe_exit(code)} while starting", child.tail)
            if _check_ready(child.spec.ready):
                child.ready = True
                return
            if time.monotonic() >= deadline:
                raise StartupError(name, f"was not ready after {timeout:.0f}s", child.tail)
            time.sleep(_POLL_SECONDS)

    def start_all(
        self, specs: Iterable[ServiceSpec], timeout: float, *, fail_fast: Collection[int] = ()
    ) -> None:
        """Start every child at once, then wait for each to be ready within one shared deadline.

        Without a RestartBackoff, any exit is a StartupError. With one, a child that exits is started again
        as `tend()` does, except that an exit status in `fail_fast` (a configuration error, which
        trying again cannot mend) is a StartupError at once; so is a deadline passed.
        """
        started = list(specs)
        for spec in started:
            self.start(spec)
        deadline = time.monotonic() + timeout
        if self._backoff is None:
            for spec in started:
                self.wait_ready(spec.name, max(0.0, deadline - time.monotonic()))
            return
        while True:
            self._tend(fail_fast)
            waiting = [spec.name for spec in started if not self._children[spec.name].ready]
            if not waiting:
                return
            if time.monotonic() >= deadline:
                name = waiting[0]
                history = self._restarts[name]
                reason = f"was not ready after {timeout:.0f}s"
                if history.restarts:
                    reason += f" (it was started again {history.restarts} times)"
                raise StartupError(name, reason, self._children[name].tail)
            time.sleep(_POLL_SECONDS)

    def tend(self) -> None:
        """One round of keeping children up (needs a RestartBackoff; call it every fraction of a second).

        A child that exited without being asked to is reported (how it ended, how long it ran, its
        last lines) and started again once its backoff delay has passed; a restarted child is
        reported once it is ready again. kill(), stop() and stop_all() are asked-for exits.
        """
        self._tend(())

    def _tend(self, fail_fast: Collection[int]) -> None:
        backoff = self._backoff
        if backoff is None:
            raise RuntimeError("tend() needs a Supervisor created with restart=RestartBackoff(...)")
        for name in list(self._order):
            child = self._children[name]
            history = self._restarts[name]
            code = child.process.poll()
            if code is None:
                if not child.ready and _check_ready(child.spec.ready):
                    child.ready = True
                    if history.restarts:
                        self.note(f"{self._who}: {name} is ready again (restart {history.restarts})")
                continue
            if child.expected_exit:
                continue
            now = time.monotonic()
            if not child.reported_exit:
                child.reported_exit = True
                child.reader.join(timeout=2)
                if code in fail_fast:
                    raise StartupError(
                        name, f"exited with {describe_exit(code)} while starting", child.tail, code
                    )
                ran = now - child.started_at
                if ran >= backoff.reset_after:
                    history.exits_in_a_row = 0
                history.exits_in_a_row += 1
                delay = backoff.delay(history.exits_in_a_row)
                history.due = now + delay
                self.note(self._exit_report(child, code, ran, delay, history.exits_in_a_row))
            elif history.due is not None and now >= history.due:
                history.restarts += 1
                self.note(f"{self._who}: restarting {name} (restart {history.restarts})")
                self.start(child.spec)

    def _exit_report(self, child: _Child, code: int, ran: float, delay: float, in_a_row: int) -> str:
        name = child.spec.name
        how = describe_exit(code)
        if code == INVALID_SETTINGS_EXIT:
            how += ": its settings are invalid"
        if child.ready:
            what = f"{name} stopped unexpectedly ({how}) after running {_duration(ran)}"
        else:
            what = f"{name} could not start: it exited ({how}) {_duration(ran)} after it was started"
        if in_a_row > 1:
            what += f", {in_a_row} times in a row"
        shown = "\n".join(f"    {line}" for line in child.own_tail) or "    (no output)"
        return f"{self._who}: {what}; starting it again in {_duration(delay)}. Its last lines:\n{shown}"

    def pid(self, name: str) -> int | None:
        child = self._children.get(name)
        if child is None or child.process.poll() is not None:
            return None
        return child.process.pid

    def running(self, name: str) -> bool:
        return self.pid(name) is not None

    def kill(self, name: str) -> int:
        """kill -9 the child (and its process group) at once; returns its exit status."""
        child = self._child(name)
        child.expected_exit = True
        _signal_group(child.process, signal.SIGKILL)
        code = child.process.wait()
        child.reader.join(timeout=5)
        return code

    def stop(self, name: str, timeout: float | None = None) -> int:
        """SIGTERM, then SIGKILL if the child is still there after `timeout` seconds."""
        child = self._child(name)
        child.expected_exit = True
        if child.process.poll() is None:
            _signal_group(child.process, signal.SIGTERM)
            try:
                child.process.wait(timeout=self._stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.note(f"{name} did not stop in time; sending SIGKILL")
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait()
        child.reader.join(timeout=5)
        code = child.process.returncode
        assert code is not None
        return code

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Stop the child if it still runs, start it with the same spec and wait until it is ready."""
        spec = self._child(name).spec
        if self.running(name):
            self.stop(name)
        self.start(spec)
        self.wait_ready(name, timeout)

    def stop_all(self, timeout: float | None = None) -> None:
        """Stop every child in reverse start order."""
        for name in reversed(self._order):
            child = self._children[name]
            if child.process.poll() is None:
                self.stop(name, timeout)
            else:
                child.expected_exit = True
                child.reader.join(timeout=5)

    def restarts(self, name: str) -> int:
        """How many times tend() has started the child again."""
        history = self._restarts.get(name)
        return history.restarts if history is not None else 0

    def unexpected_exits(self) -> list[tuple[str, int]]:
        """Children that exited without being asked to, each reported once."""
        found: list[tuple[str, int]] = []
        for name in self._order:
            child = self._children[name]
            code = child.process.poll()
            if code is not None and not child.expected_exit and not child.reported_exit:
                child.reported_exit = True
                child.reader.join(timeout=2)
                found.append((name, code))
        return found

    def _child(self, name: str) -> _Child:
        child = self._children.get(name)
        if child is None:
            raise KeyError(f"no child named {name!r}; known: {', '.join(self._order) or 'none'}")
        return child

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The child leads its own process group, so this also reaches anything it spawned.
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


def _duration(seconds: float) -> str:
    """`0.4 s`, `12 s`, `3 min 05 s` or `2 h 10 min`: how long a child ran or will wait."""
    if seconds < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def describe_exit(code: int) -> str:
    """`exit code 3` or `signal SIGKILL`, for messages about how a child ended."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"

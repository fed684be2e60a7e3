"""The supervisor behind `make run` and the e2e harness, with tiny child processes."""

from __future__ import annotations

import io
import itertools
import os
import re
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatpop_common.devstack import free_port
from chatpop_common.processes import (
    GrpcHealth,
    HttpReady,
    RestartBackoff,
    ServiceSpec,
    StartupError,
    Supervisor,
)

# Says hello, then waits; on SIGTERM says bye (so the stop order shows in the output) and exits 0.
POLITE = textwrap.dedent(
    """
    import signal, sys, time
    name = sys.argv[1]
    def bye(*_):
        print(f"bye {name}", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    print(f"hello from {name}", flush=True)
    while True:
        time.sleep(0.05)
    """
)
STUBBORN = textwrap.dedent(
    """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring SIGTERM", flush=True)
    while True:
        time.sleep(0.05)
    """
)
BROKEN = 'import sys; print("config broken: FOO is missing", flush=True); sys.exit(3)'
SLOW = 'import time; print("still booting", flush=True); time.sleep(60)'
HTTP_READY = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/readyz" else 404)
            self.end_headers()
        def log_message(self, *args):
            pass
    print("http up", flush=True)
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)
GRPC_SERVING = textwrap.dedent(
    """
    import sys, threading
    from concurrent import futures
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    print("grpc serving", flush=True)
    server.wait_for_termination()
    """
)


# Counts its runs in the file argv[1]; exits with argv[2] on each of the first argv[3] runs, then
# serves HTTP 200 (its readiness) on port argv[4] until stopped.
FLAKY = textwrap.dedent(
    """
    import sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    path, code, failing, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    with open(path, "a+") as counter:
        counter.write("x")
    with open(path) as counter:
        run = len(counter.read())
    print(f"run {run} at {time.monotonic():.3f}", flush=True)
    if run <= failing:
        print(f"giving up on run {run}", flush=True)
        sys.exit(code)
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
        def log_message(self, *args):
            pass
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)
QUICK = RestartBackoff(initial=0.2, factor=2.0, maximum=0.8, reset_after=1.0)


def spec(name: str, script: str, *args: str, ready: GrpcHealth | HttpReady | None = None) -> ServiceSpec:
    return ServiceSpec(name=name, argv=(sys.executable, "-c", script, *args), env={}, ready=ready)


def wait_for_line(supervisor: Supervisor, name: str, text: str) -> None:
    deadline = time.monotonic() + 30
    while not any(text in line for line in supervisor.tail(name)):
        assert time.monotonic() < deadline, f"{name} never printed {text!r}: {supervisor.tail(name)}"
        time.sleep(0.02)


@pytest.fixture
def output() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def supervisor(output: io.StringIO) -> Iterator[Supervisor]:
    with Supervisor(stream=output, colour=False, stop_timeout=5) as running:
        yield running


def test_output_lines_carry_a_fixed_width_name(supervisor: Supervisor, output: io.StringIO) -> None:
    supervisor.start(spec("rooms", POLITE, "rooms"))
    wait_for_line(supervisor, "rooms", "hello")
    supervisor.stop_all()
    assert "rooms     | hello from rooms\n" in output.getvalue()


def test_colour_wraps_the_name_only() -> None:
    stream = io.StringIO()
    with Supervisor(stream=stream, colour=True) as supervisor:
        supervisor.start(spec("edge", POLITE, "edge"))
        wait_for_line(supervisor, "edge", "hello")
    line = next(line for line in stream.getvalue().splitlines() if "hello from edge" in line)
    assert line.startswith("\x1b[")
    assert line.endswith("\x1b[0m hello from edge")


def test_stop_all_goes_in_reverse_start_order(supervisor: Supervisor, output: io.StringIO) -> None:
    for name in ("identity", "rooms", "edge"):
        supervisor.start(spec(name, POLITE, name))
    for name in ("identity", "rooms", "edge"):
        wait_for_line(supervisor, name, "hello")
    supervisor.stop_all()
    byes = [line.split("| ", 1)[1] for line in output.getvalue().splitlines() if "| bye " in line]
    assert byes == ["bye edge", "bye rooms", "bye identity"]
    assert all(not supervisor.running(name) for name in ("identity", "rooms", "edge"))


def test_a_child_ignoring_sigterm_is_killed_after_the_timeout(supervisor: Supervisor) -> None:
    supervisor.start(spec("messaging", STUBBORN))
    wait_for_line(supervisor, "messaging", "ignoring SIGTERM")
    assert supervisor.stop("messaging", timeout=0.5) == -signal.SIGKILL


def test_a_child_that_exits_while_starting_fails_with_its_last_lines(supervisor: Supervisor) -> None:
    supervisor.start(spec("payments", BROKEN, ready=HttpReady(f"http://127.0.0.1:{free_port()}/readyz")))
    with pytest.raises(StartupError) as failure:
        supervisor.wait_ready("payments", timeout=60)
    assert failure.value.name == "payments"
    assert "exit code 3" in str(failure.value)
    assert "config broken: FOO is missing" in str(failure.value)


def test_readiness_timeout_fails_with_the_last_lines(supervisor: Supervisor) -> None:
    supervisor.start(spec("identity", SLOW, ready=GrpcHealth(f"127.0.0.1:{free_port()}")))
    wait_for_line(supervisor, "identity", "still booting")
    with pytest.raises(StartupError) as failure:
        supervisor.wait_ready("identity", timeout=0.3)
    assert "was not ready" in str(failure.value)
    assert "still booting" in str(failure.value)


def test_http_readiness(supervisor: Supervisor) -> None:
    port = free_port()
    supervisor.start_all(
        [spec("edge", HTTP_READY, str(port), ready=HttpReady(f"http://127.0.0.1:{port}/readyz"))], 60
    )
    assert supervisor.running("edge")
    assert "http up" in supervisor.tail("edge")


def test_kill_and_restart_a_grpc_child_by_name(supervisor: Supervisor) -> None:
    port = free_port()
    supervisor.start_all([spec("rooms", GRPC_SERVING, str(port), ready=GrpcHealth(f"127.0.0.1:{port}"))], 60)
    first = supervisor.pid("rooms")
    assert first is not None

    assert supervisor.kill("rooms") == -signal.SIGKILL
    assert not supervisor.running("rooms")
    assert supervisor.unexpected_exits() == []

    supervisor.restart("rooms", timeout=60)
    second = supervisor.pid("rooms")
    assert second is not None
    assert second != first
    assert supervisor.tail("rooms").count("grpc serving") == 2


def test_an_unexpected_exit_is_reported_once(supervisor: Supervisor) -> None:
    supervisor.start(spec("messaging", BROKEN))
    deadline = time.monotonic() + 30
    crashed: list[tuple[str, int]] = []
    while not crashed and time.monotonic() < deadline:
        crashed = supervisor.unexpected_exits()
        time.sleep(0.02)
    assert crashed == [("messaging", 3)]
    assert supervisor.unexpected_exits() == []


def test_unknown_names_are_refused(supervisor: Supervisor) -> None:
    with pytest.raises(KeyError, match="nope"):
        supervisor.kill("nope")


def test_a_running_child_cannot_be_started_twice(supervisor: Supervisor) -> None:
    supervisor.start(spec("edge", POLITE, "edge"))
    with pytest.raises(RuntimeError, match="already running"):
        supervisor.start(spec("edge", POLITE, "edge"))


# -- restarts under a RestartBackoff (what `make run` does) --------------------------------------------


def flaky(name: str, counter: Path, *, code: int, failing: int) -> ServiceSpec:
    port = free_port()
    return spec(
        name,
        FLAKY,
        str(counter),
        str(code),
        str(failing),
        str(port),
        ready=HttpReady(f"http://127.0.0.1:{port}/"),
    )


def tend_until(supervisor: Supervisor, done: str, output: io.StringIO, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while done not in output.getvalue():
        assert time.monotonic() < deadline, f"never saw {done!r} in:\n{output.getvalue()}"
        supervisor.tend()
        time.sleep(0.02)


def run_starts(supervisor: Supervisor, name: str) -> list[float]:
    """When each run of a FLAKY child began (the children's monotonic clock is the system's)."""
    return [float(line.split(" at ")[1]) for line in supervisor.tail(name) if line.startswith("run ")]


def waits(output: io.StringIO) -> list[str]:
    return re.findall(r"starting it again in ([0-9.]+ s)", output.getvalue())


@pytest.fixture
def keeper(output: io.StringIO) -> Iterator[Supervisor]:
    with Supervisor(stream=output, colour=False, stop_timeout=5, restart=QUICK, who="make run") as running:
        yield running


def test_the_backoff_doubles_up_to_its_cap() -> None:
    backoff = RestartBackoff()
    assert [backoff.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_child_that_keeps_failing_is_started_again_ever_later(
    keeper: Supervisor, output: io.StringIO, tmp_path: Path
) -> None:
    keeper.start(flaky("messaging", tmp_path / "runs", code=1, failing=4))
    tend_until(keeper, "messaging is ready again (restart 4)", output)

    assert waits(output) == ["0.2 s", "0.4 s", "0.8 s", "0.8 s"]
    starts = run_starts(keeper, "messaging")
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    for gap, wait in zip(gaps, (0.2, 0.4, 0.8, 0.8), strict=True):
        assert wait <= gap < wait + 1.0, (gaps, output.getvalue())
    report = output.getvalue()
    assert "make run: messaging could not start: it exited (exit code 1)" in report
    assert ", 4 times in a row; starting it again in 0.8 s. Its last lines:\n    run 4 at" in report
    assert "    giving up on run 4\n" in report
    assert keeper.running("messaging")
    assert keeper.restarts("messaging") == 4


def test_a_child_that_ran_long_enough_starts_over_at_the_first_delay(
    keeper: Supervisor, output: io.StringIO, tmp_path: Path
) -> None:
    keeper.start(flaky("rooms", tmp_path / "runs", code=1, failing=2))
    tend_until(keeper, "rooms is ready again (restart 2)", output)
    assert waits(output) == ["0.2 s", "0.4 s"]

    pid = keeper.pid("rooms")
    assert pid is not None
    time.sleep(QUICK.reset_after)
    os.kill(pid, signal.SIGKILL)
    tend_until(keeper, "rooms is ready again (restart 3)", output)
    assert waits(output) == ["0.2 s", "0.4 s", "0.2 s"]
    assert "make run: rooms stopped unexpectedly (signal SIGKILL) after running" in output.getvalue()


def test_a_killed_grpc_child_comes_back_with_a_report(keeper: Supervisor, output: io.StringIO) -> None:
    port = free_port()
    keeper.start_all([spec("rooms", GRPC_SERVING, str(port), ready=GrpcHealth(f"127.0.0.1:{port}"))], 60)
    first = keeper.pid("rooms")
    assert first is not None

    os.kill(first, signal.SIGKILL)
    tend_until(keeper, "rooms is ready again", output)

    report = output.getvalue()
    assert re.search(
        r"make run: rooms stopped unexpectedly \(signal SIGKILL\) after running [0-9.]+ s; "
        r"starting it again in 0.2 s\. Its last lines:\n    grpc serving\n",
        report,
    ), report
    assert "make run: restarting rooms (restart 1)" in report
    second = keeper.pid("rooms")
    assert second is not None and second != first
    assert keeper.tail("rooms").count("grpc serving") == 2


def test_children_stopped_on_request_stay_down(keeper: Supervisor, output: io.StringIO) -> None:
    keeper.start(spec("identity", POLITE, "identity"))
    keeper.start(spec("edge", POLITE, "edge"))
    wait_for_line(keeper, "edge", "hello")
    keeper.kill("identity")
    keeper.stop("edge")
    for _ in range(20):
        keeper.tend()
        time.sleep(0.02)
    assert not keeper.running("identity")
    assert not keeper.running("edge")
    assert "starting it again" not in output.getvalue()


def test_nothing_comes_back_once_everything_is_stopping(
    keeper: Supervisor, output: io.StringIO, tmp_path: Path
) -> None:
    keeper.start(flaky("payments", tmp_path / "runs", code=1, failing=1))
    tend_until(keeper, "starting it again in 0.2 s", output)
    keeper.stop_all()
    time.sleep(0.3)
    keeper.tend()
    assert not keeper.running("payments")
    assert "restarting payments" not in output.getvalue()


def test_start_up_stops_at_once_on_invalid_settings(
    keeper: Supervisor, output: io.StringIO, tmp_path: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(StartupError) as failure:
        keeper.start_all(
            [
                spec("identity", POLITE, "identity"),
                flaky("messaging", tmp_path / "runs", code=2, failing=1),
            ],
            60,
            fail_fast=(2,),
        )
    assert time.monotonic() - started < 10
    assert (failure.value.name, failure.value.exit_code) == ("messaging", 2)
    assert "exited with exit code 2 while starting" in str(failure.value)
    assert "giving up on run 1" in str(failure.value)
    assert "starting it again" not in output.getvalue()


def test_start_up_rides_out_other_failures(keeper: Supervisor, output: io.StringIO, tmp_path: Path) -> None:
    keeper.start_all([flaky("edge", tmp_path / "runs", code=1, failing=2)], 60, fail_fast=(2,))
    assert keeper.running("edge")
    assert keeper.restarts("edge") == 2
    assert waits(output) == ["0.2 s", "0.4 s"]


def test_start_up_still_has_a_deadline(keeper: Supervisor, tmp_path: Path) -> None:
    with pytest.raises(StartupError) as failure:
        keeper.start_all([flaky("edge", tmp_path / "runs", code=1, failing=100)], 1.0, fail_fast=(2,))
    assert "edge was not ready after 1s (it was started again" in str(failure.value)
    assert "giving up on run" in str(failure.value)


def test_a_settings_error_after_start_up_is_retried_and_named(
    keeper: Supervisor, output: io.StringIO, tmp_path: Path
) -> None:
    keeper.start(flaky("payments", tmp_path / "runs", code=2, failing=1))
    tend_until(keeper, "payments is ready again (restart 1)", output)
    assert "payments could not start: it exited (exit code 2: its settings are invalid)" in output.getvalue()


def test_tend_needs_a_backoff(supervisor: Supervisor) -> None:
    with pytest.raises(RuntimeError, match="RestartBackoff"):
        supervisor.tend()

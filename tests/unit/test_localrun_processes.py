"""The supervisor behind `make run` and the e2e harness, with tiny child processes."""

from __future__ import annotations

import io
import signal
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from chatpop_common.devstack import free_port
from chatpop_common.processes import GrpcHealth, HttpReady, ServiceSpec, StartupError, Supervisor

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

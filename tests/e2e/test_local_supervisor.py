"""`make run` (`python -m chatpop_common.localrun`) keeps the platform up by itself.

The real entry point runs as a process on free ports, with its own private Postgres and Redis under
a throwaway data folder, exactly as a person's `make run` does. A service killed with SIGKILL is
started again after its backoff, the edge uses it again within about a second of it being ready, and
Postgres, Redis and the other services are never touched; SIGTERM still stops everything in order.
A service whose settings are invalid at start-up stops `make run` at once instead of looping.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatpop_common.devstack import Postgres, RedisCluster
from chatpop_common.localrun import REPO_ROOT, SERVICES, Ports, port_in_use, service_pythonpath
from chatpop_common.processes import python_module

STARTUP_TIMEOUT = 90.0


@dataclass
class LocalRun:
    """A running `python -m chatpop_common.localrun` and everything it printed so far."""

    process: subprocess.Popen[str]
    ports: Ports
    data_dir: Path
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = STARTUP_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            # Read before looking, so that once make run has exited its last lines are in.
            finished = self.reader is not None and not self.reader.is_alive()
            found = re.search(pattern, self.output)
            if found:
                return found
            assert not finished, f"make run ended without printing {pattern!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"make run never printed {pattern!r}:\n{self.output}"
            time.sleep(0.02)

    def children(self) -> dict[str, int]:
        """The processes make run started itself: `chatpop_<service>` and `redis-server`, by pid."""
        found: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if parent != self.process.pid:
                    continue
                for arg in argv:
                    # redis-server shows itself as `redis-server 127.0.0.1:port`.
                    name = os.path.basename(arg.decode().split(" ")[0])
                    if name.startswith(("chatpop_", "redis-server")):
                        found[name] = int(entry.name)
        return found

    def postgres_pid(self) -> int:
        return int((self.data_dir / "pg" / "postmaster.pid").read_text().split()[0])


def _alive(pid: int) -> bool:
    """Whether the process still runs (a zombie waiting for whoever adopted it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _pump(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))


def _data_dir() -> Path:
    # Not pytest's tmp_path: when we are root, Postgres runs as `postgres`, which must enter it.
    data_dir = Path(tempfile.mkdtemp(prefix="chatpop-localrun-", dir="/tmp"))
    data_dir.chmod(0o755)
    return data_dir


@contextlib.contextmanager
def make_run(
    extra_env: Mapping[str, str] | None = None, *, data_dir: Path | None = None, ports: Ports | None = None
) -> Iterator[LocalRun]:
    """`python -m chatpop_common.localrun` on free ports with a throwaway data folder (or `data_dir`
    and `ports` of an earlier run, to start it again; the caller removes that folder)."""
    keep = data_dir is not None
    ports = ports or Ports.free()
    data_dir = data_dir or _data_dir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "PUBLIC_URL", "HTTP_HOST")
    }
    env |= ports.variables()
    env |= {
        "CHATPOP_DATA_DIR": str(data_dir),
        "PYTHONPATH": service_pythonpath(inherited=os.environ.get("PYTHONPATH", "")),
        "PYTHONUNBUFFERED": "1",
        "NO_COLOR": "1",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        python_module("chatpop_common.localrun"),
        env=env,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    run = LocalRun(process=process, ports=ports, data_dir=data_dir)
    reader = threading.Thread(target=_pump, args=(process, run.lines), daemon=True)
    run.reader = reader
    reader.start()
    try:
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        reader.join(timeout=5)
        if (data_dir / "pg" / "postmaster.pid").exists():
            Postgres(datadir=data_dir / "pg", port=ports.postgres, socket_dir=data_dir / "pgsock").stop(
                "immediate"
            )
        # Cluster nodes a killed make run left behind (they run in a session of their own).
        for port in ports.redis_cluster_ports:
            if (data_dir / "redis-cluster" / str(port)).exists() and port_in_use(port):
                subprocess.run(
                    ["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True, check=False
                )
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def _create_room(http: httpx.Client) -> str:
    session = http.post("/api/v1/auth/anonymous")
    assert session.status_code == 201, session.text
    token = session.json()["access_token"]
    room = http.post(
        "/api/v1/rooms", json={"name": "still here"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert room.status_code == 201, room.text
    return str(room.json()["code"])


def test_a_killed_service_comes_back_by_itself_and_the_platform_answers_again() -> None:
    with make_run() as run:
        run.wait_for(r"ChatPop is running")
        edge = f"http://127.0.0.1:{run.ports.edge}"
        with httpx.Client(base_url=edge, timeout=10) as http:
            assert http.get("/readyz").status_code == 200
            _create_room(http)

            before = run.children()
            assert set(before) == {*(f"chatpop_{name}" for name in SERVICES), "redis-server"}, before
            postgres = run.postgres_pid()

            killed = time.monotonic()
            os.kill(before["chatpop_rooms"], signal.SIGKILL)
            rooms_ready = edge_ready = None
            while edge_ready is None:
                assert time.monotonic() - killed < 30, f"the platform did not recover:\n{run.output}"
                if rooms_ready is None and _serving(run.ports.address("rooms")):
                    rooms_ready = time.monotonic()
                if rooms_ready is not None and http.get("/readyz").status_code == 200:
                    edge_ready = time.monotonic()
                time.sleep(0.02)
            _create_room(http)
            answered = time.monotonic()

        assert rooms_ready is not None
        timings = (
            f"rooms ready {rooms_ready - killed:.2f}s after the kill, the edge ready "
            f"{edge_ready - rooms_ready:.2f}s later, a room created {answered - killed:.2f}s after the kill"
        )
        print(timings)
        # The edge's channel to rooms reconnects at least every second or so (clients.py).
        assert edge_ready - rooms_ready < 2.0, timings
        run.wait_for(
            r"make run: rooms stopped unexpectedly \(signal SIGKILL\) after running [0-9. a-z]+; "
            r"starting it again in 1 s\. Its last lines:\n    .*rooms serving"
        )
        run.wait_for(r"make run: rooms is ready again \(restart 1\)")

        after = run.children()
        assert after["chatpop_rooms"] != before["chatpop_rooms"]
        # Nothing else was restarted: the other services, Redis and Postgres kept running.
        assert {k: v for k, v in after.items() if k != "chatpop_rooms"} == {
            k: v for k, v in before.items() if k != "chatpop_rooms"
        }
        assert run.postgres_pid() == postgres and _alive(postgres)
        assert "stopping everything" not in run.output

        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(timeout=60) == 0, run.output
        assert not _alive(after["redis-server"])
        assert not _alive(postgres)
    # In reverse start order, then Redis and Postgres (make run's last word).
    stopping = run.output.split("stopping…", 1)[1]
    order = list(dict.fromkeys(re.findall(r"^(\w+) +\| ", stopping, re.MULTILINE)))
    assert order == list(reversed(SERVICES)), stopping
    assert stopping.rstrip().endswith("stopped")


def test_invalid_settings_at_start_up_stop_make_run_at_once() -> None:
    with make_run({"HOT_CACHE_SIZE": "0"}) as run:
        assert run.process.wait(timeout=STARTUP_TIMEOUT) == 1, run.output
        run.wait_for(r"messaging: invalid settings: HOT_CACHE_SIZE", timeout=5)
        run.wait_for(
            r"make run: messaging exited with exit code 2 while starting: its settings are invalid "
            r"\(its output is above\); stopping everything",
            timeout=5,
        )
        assert "starting it again" not in run.output
        assert run.output.rstrip().endswith("stopped")


def _cluster_node_ids(ports: list[int]) -> list[str]:
    return [
        subprocess.run(
            ["redis-cli", "-p", str(port), "cluster", "myid"], capture_output=True, text=True, check=True
        ).stdout.strip()
        for port in ports
    ]


def _cluster_keys(port: int, pattern: str) -> list[str]:
    """Keys matching `pattern` anywhere in the cluster (redis-cli -c follows no SCAN, so every node)."""
    found: list[str] = []
    for node in subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "nodes"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        node_port = node.split()[1].split("@")[0].rsplit(":", 1)[1]
        keys = subprocess.run(
            ["redis-cli", "-p", node_port, "--scan", "--pattern", pattern], capture_output=True, text=True
        )
        found += keys.stdout.split()
    return sorted(found)


def test_redis_cluster_1_runs_the_platform_on_a_private_cluster_that_a_restart_finds_again() -> None:
    data_dir = _data_dir()
    try:
        with make_run({"REDIS_CLUSTER": "1"}, data_dir=data_dir) as run:
            ports = run.ports
            nodes = ports.redis_cluster_ports
            run.wait_for(
                rf"starting a 3-master Redis Cluster on 127\.0\.0\.1:{nodes[0]}-{nodes[2]} "
                rf"\(bus {ports.redis_cluster_bus}-{ports.redis_cluster_bus + 2};"
            )
            run.wait_for(r"ChatPop is running")
            seeds = ",".join(f"redis://127.0.0.1:{port}" for port in nodes)
            assert (
                f"  Redis       {seeds}  (private 3-master Redis Cluster, data in {data_dir}/redis-cluster/)"
                in run.output
            ), run.output
            # No single Redis: the cluster took its place.
            assert not port_in_use(ports.redis)
            edge = f"http://127.0.0.1:{ports.edge}"
            with httpx.Client(base_url=edge, timeout=10) as http:
                assert http.get("/readyz").status_code == 200
                _create_room(http)
            # identity's session limit and rooms' room-creation limit counted on the cluster, each
            # key under its caller's tag.
            sessions = _cluster_keys(nodes[0], "identity:anon-sessions:*")
            creations = _cluster_keys(nodes[0], "rooms:room-creations:*")
            assert len(sessions) == 1 and len(creations) == 1, (sessions, creations)
            assert re.fullmatch(r"rooms:room-creations:\{[0-9a-f-]{36}\}", creations[0])
            before = _cluster_node_ids(nodes)

            run.process.send_signal(signal.SIGTERM)
            assert run.process.wait(timeout=60) == 0, run.output
            assert not any(port_in_use(port) for port in nodes)
        for port in nodes:
            assert (data_dir / "redis-cluster" / str(port) / "nodes.conf").exists()

        with make_run({"REDIS_CLUSTER": "1"}, data_dir=data_dir, ports=ports) as again:
            again.wait_for(r"ChatPop is running")
            # The same nodes, from their nodes.conf, and the same data: the cluster formed again.
            assert _cluster_node_ids(nodes) == before
            assert _cluster_keys(nodes[0], "rooms:room-creations:*") == creations
            with httpx.Client(base_url=f"http://127.0.0.1:{ports.edge}", timeout=10) as http:
                _create_room(http)
            again.process.send_signal(signal.SIGTERM)
            assert again.process.wait(timeout=60) == 0, again.output
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def test_redis_cluster_1_with_a_redis_url_uses_that_cluster(redis_cluster: RedisCluster) -> None:
    with make_run({"REDIS_CLUSTER": "1", "REDIS_URL": redis_cluster.url}) as run:
        run.wait_for(r"ChatPop is running")
        assert f"  Redis       {redis_cluster.url}  (Redis Cluster)\n" in run.output, run.output
        assert "starting a 3-master Redis Cluster" not in run.output
        assert "starting Redis" not in run.output
        assert not (run.data_dir / "redis-cluster").exists() and not (run.data_dir / "redis").exists()
        with httpx.Client(base_url=f"http://127.0.0.1:{run.ports.edge}", timeout=10) as http:
            _create_room(http)
        assert _cluster_keys(redis_cluster.ports[0], "rooms:room-creations:*")
        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(timeout=60) == 0, run.output
    # make run leaves a cluster it did not start running.
    assert all(port_in_use(port) for port in redis_cluster.ports)

"""What the benchmarks share: a private platform to measure (on a single Redis or a private Redis
Cluster), the REST steps that fill it with rooms and members, a WebSocket member, CPU and Redis command
meters and latency figures, and how the results are printed.

Not a benchmark itself; the scripts next to it import it (the directory of the script run is on
sys.path). Named so as not to shadow a module of the standard library (`platform` would).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import websockets

if TYPE_CHECKING:
    from chatpop_common.devstack import SeaweedS3

# The masters of the private Redis Cluster of `private_platform(redis_cluster=True)`.
CLUSTER_MASTERS = 3
# Every simulated client comes from 127.0.0.1 and sends as fast as it is told: the per-participant send
# limit and the per-address abuse limits are lifted; the services log warnings and worse.
LIFTED_LIMITS = {
    "SEND_RATE_LIMIT": "1000000",
    "SEND_RATE_BURST": "1000000",
    "LOG_LEVEL": "WARNING",
    "ANONYMOUS_SESSION_LIMIT": "1000000",
    "ANONYMOUS_SESSION_BURST": "1000000",
    "ANONYMOUS_ROOM_LIMIT": "1000000",
    "ANONYMOUS_USERNAMES_PER_IP": "1000",
}


# -- a private platform -------------------------------------------------------------------------------


@dataclass
class Platform:
    """A running private platform, as a benchmark sees it."""

    base_url: str  # the edge, http://127.0.0.1:<port>
    database_url: str
    pids: dict[str, int]  # the five services, by name
    store_pids: dict[str, int]  # postgres (the postmaster), redis, and seaweedfs with media
    services: dict[str, str]  # address (host:port) by service name: gRPC, the edge's HTTP
    service_token_secret: str
    s3: SeaweedS3 | None = None  # with media
    # The Redis servers the services use (127.0.0.1 ports): the one Redis, or every cluster node.
    redis_ports: list[int] = field(default_factory=list)
    redis_mode: str = "single"  # or "cluster (N masters)"

    @property
    def ws_url(self) -> str:
        return to_ws_url(self.base_url)

    def measured(self, *stores: str) -> dict[str, int]:
        """The services' pids and those of the datastores named, for a CPU meter; `redis` names every
        node of a cluster (`redis-<port>`)."""
        return {
            **self.pids,
            **{
                name: pid
                for name, pid in self.store_pids.items()
                if any(name == store or name.startswith(f"{store}-") for store in stores)
            },
        }


@contextlib.contextmanager
def private_platform(
    *, media: bool = False, extra_env: Mapping[str, str] | None = None, redis_cluster: bool = False
) -> Iterator[Platform]:
    """Postgres, Redis (and, with `media`, SeaweedFS as S3 with media switched on) and the five
    services on free ports, as `make run` starts them, with LIFTED_LIMITS and then `extra_env` in
    the services' environment. With `redis_cluster` the services use a private 3-master Redis Cluster
    (REDIS_CLUSTER=true) instead of the single Redis, which then stays idle. Everything is stopped
    and removed afterwards."""
    from chatpop_common import localrun
    from chatpop_common.devstack import RedisCluster, SeaweedS3, throwaway_datastores
    from chatpop_common.migrate import migrate
    from chatpop_common.processes import Supervisor

    root = Path(tempfile.mkdtemp(prefix="chatpop-bench-", dir="/tmp"))
    root.chmod(0o755)  # Postgres runs as its own user and must reach its data folder
    try:
        with contextlib.ExitStack() as stack:
            pg, redis = stack.enter_context(throwaway_datastores(root / "data"))
            migrate(pg.url, ["identity", "rooms", "messaging", "payments"])
            assert redis.process is not None
            store_pids = {"postgres": int((pg.datadir / "postmaster.pid").read_text().split()[0])}
            env = {**os.environ, **LIFTED_LIMITS}
            redis_url, redis_ports, redis_mode = redis.url, [redis.port], "single"
            if redis_cluster:
                cluster = RedisCluster.on_free_ports(root / "cluster", masters=CLUSTER_MASTERS)
                cluster.start(root / "redis-cluster.log", persist=False)
                stack.callback(cluster.stop, kill=True)
                assert cluster.processes is not None
                store_pids.update({f"redis-{port}": node.pid for port, node in cluster.processes.items()})
                redis_url, redis_ports = cluster.url, list(cluster.ports)
                redis_mode = f"cluster ({CLUSTER_MASTERS} masters)"
                env["REDIS_CLUSTER"] = "true"
            else:
                store_pids["redis"] = redis.process.pid
            s3: SeaweedS3 | None = None
            if media:
                s3 = SeaweedS3.on_free_ports(root / "s3")
                s3.start(root / "s3.log")
                stack.callback(s3.stop, kill=True)
                assert s3.process is not None
                store_pids["seaweedfs"] = s3.process.pid
                (root / "spool").mkdir()
                env["MEDIA_SPOOL_DIR"] = str(root / "spool")
            env.update(extra_env or {})
            secrets = localrun.ensure_secrets(root / "secrets")
            ports = localrun.Ports.free()
            specs = localrun.service_specs(
                env, ports, pg.url, redis_url, secrets, s3_env=s3.env() if s3 is not None else None
            )
            supervisor = stack.enter_context(Supervisor(stream=sys.stderr))
            supervisor.start_all(specs, timeout=60)
            yield Platform(
                base_url=f"http://127.0.0.1:{ports.edge}",
                database_url=pg.url,
                pids={name: pid for name in supervisor.names if (pid := supervisor.pid(name)) is not None},
                store_pids=store_pids,
                services={name: ports.address(name) for name in ports.service},
                service_token_secret=secrets.service_token_secret,
                s3=s3,
                redis_ports=redis_ports,
                redis_mode=redis_mode,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def to_ws_url(base_url: str) -> str:
    """The WebSocket base of an edge's HTTP base URL."""
    return base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)


# -- rooms and members over REST ----------------------------------------------------------------------


def raise_for(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a successful answer; a RuntimeError naming the request and the body otherwise."""
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.text}")
    return response.json()  # type: ignore[no-any-return]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def anonymous(http: httpx.AsyncClient) -> str:
    """A fresh anonymous session's access token."""
    return str(raise_for(await http.post("/api/v1/auth/anonymous"))["access_token"])


async def create_room(http: httpx.AsyncClient, token: str, **room_fields: Any) -> dict[str, Any]:
    """A room created by the holder of `token` (POST /rooms with `room_fields`); the room's JSON."""
    return raise_for(await http.post("/api/v1/rooms", json=room_fields, headers=bearer(token)))


async def join(http: httpx.AsyncClient, code: str, username: str, token: str | None = None) -> dict[str, Any]:
    """`username` joins room `code` with `token` (a fresh anonymous session without); the answer
    (room_token, participant)."""
    token = token or await anonymous(http)
    return raise_for(
        await http.post(f"/api/v1/rooms/{code}/join", json={"username": username}, headers=bearer(token))
    )


async def new_room(http: httpx.AsyncClient, size: int, **room_fields: Any) -> tuple[str, str, list[Member]]:
    """A room (code, id) made by an anonymous host, with `size` members joined (the host first), each
    in a session of their own; the members are not connected yet."""
    host = await anonymous(http)
    room = await create_room(http, host, **room_fields)
    code = str(room["code"])
    members = []
    for index in range(size):
        joined = await join(http, code, f"Bench{index}{uuid.uuid4().hex[:6]}", host if index == 0 else None)
        members.append(Member(joined["room_token"], joined["participant"]["id"]))
    return code, str(room["id"]), members


# -- a member on the WebSocket ------------------------------------------------------------------------


@dataclass
class Member:
    """A room member's WebSocket: sends text messages and records when each message arrived."""

    room_token: str
    participant_id: str
    ws: Any = None
    reader: asyncio.Task[None] | None = None
    waiters: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    # client_msg_id -> perf_counter when it arrived
    arrivals: dict[str, float] = field(default_factory=dict)

    async def connect(self, ws_url: str, code: str) -> None:
        self.ws = await websockets.connect(
            f"{ws_url}/ws/v1/rooms/{code}?token={self.room_token}", max_size=None, open_timeout=30
        )
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame.get("type") == "message":
                    key = frame.get("client_msg_id", "")
                    self.arrivals[key] = time.perf_counter()
                    waiter = self.waiters.pop(key, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)

    def expect(self, client_msg_id: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters[client_msg_id] = future
        return future

    async def send(self, text: str, client_msg_id: str, **extra: Any) -> None:
        await self.ws.send(
            json.dumps({"type": "send", "client_msg_id": client_msg_id, "text": text, **extra})
        )

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


# -- CPU ----------------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def _process_tree(root: int) -> list[int]:
    """`root` and all its descendants (Postgres serves each connection from a child process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) used so far by a process and its descendants."""
    total = 0
    for pid in _process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


@dataclass(frozen=True)
class Scheduling:
    """What a process tree's threads went through waiting for a CPU (the kernel's schedstat)."""

    on_cpu: float  # seconds its threads ran
    waited: float  # seconds its threads were ready to run but waited for a CPU
    preempted: int  # times a thread was switched out while it could still run


def thread_scheduling(root: int) -> dict[int, tuple[int, int, int]]:
    """Per thread of a process and its descendants: (ns on a CPU, ns waiting in the run queue,
    involuntary context switches) so far. Empty where the kernel keeps no schedstat."""
    found: dict[int, tuple[int, int, int]] = {}
    for pid in _process_tree(root):
        try:
            tids = [int(name) for name in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                on_cpu, waited, _slices = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            except (OSError, ValueError):
                continue
            switches = next(
                (
                    int(line.split()[1])
                    for line in status.splitlines()
                    if line.startswith("nonvoluntary_ctxt")
                ),
                0,
            )
            found[tid] = (int(on_cpu), int(waited), switches)
    return found


@dataclass
class CpuWindow:
    used: dict[str, float]  # CPU seconds (user + system) per process
    wall: float  # seconds of wall time they were measured over
    # Per process, how its threads waited for a CPU over the same window (none without schedstat).
    scheduling: dict[str, Scheduling] = field(default_factory=dict)
    # How late a real-time thread woke meanwhile (stall_probe.py): the machine's own stalls.
    stalls: dict[str, Any] | None = None


class CpuMeter:
    """CPU time of the measured processes from the start of measuring until the counters are read,
    and how long their threads waited for a CPU meanwhile (a machine short of CPU shows there first:
    every hop of a message waits its turn)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._before: dict[str, float] = {}
        self._threads_before: dict[str, dict[int, tuple[int, int, int]]] = {}
        self._started = 0.0
        self._probe: subprocess.Popen[bytes] | None = None

    def _snapshot(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self._pids.items()}

    def start(self) -> None:
        self._probe = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("stall_probe.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._threads_before = {name: thread_scheduling(pid) for name, pid in self._pids.items()}
        self._before = self._snapshot()
        self._started = time.perf_counter()

    def stop(self) -> CpuWindow:
        used = {name: now - self._before[name] for name, now in self._snapshot().items()}
        wall = time.perf_counter() - self._started
        scheduling: dict[str, Scheduling] = {}
        for name, pid in self._pids.items():
            before = self._threads_before.get(name, {})
            after = thread_scheduling(pid)
            if not after:
                continue
            # Threads that started meanwhile count from zero; threads that ended are not counted.
            deltas = [
                tuple(now - then for now, then in zip(values, before.get(tid, (0, 0, 0)), strict=True))
                for tid, values in after.items()
            ]
            scheduling[name] = Scheduling(
                on_cpu=sum(delta[0] for delta in deltas) / 1e9,
                waited=sum(delta[1] for delta in deltas) / 1e9,
                preempted=sum(delta[2] for delta in deltas),
            )
        return CpuWindow(used=used, wall=wall, scheduling=scheduling, stalls=self._stop_probe())

    def _stop_probe(self) -> dict[str, Any] | None:
        probe, self._probe = self._probe, None
        if probe is None:
            return None
        try:
            out, _ = probe.communicate(timeout=10)
            return dict(json.loads(out)) if probe.returncode == 0 and out.strip() else None
        except (subprocess.TimeoutExpired, ValueError):
            probe.kill()
            probe.wait()
            return None


# -- Redis commands -----------------------------------------------------------------------------------


class RedisCommandMeter:
    """Redis commands run from start() to stop(), by command, summed over every node given (INFO
    commandstats after CONFIG RESETSTAT). Commands a script runs count too, beside its EVALSHA; the
    meter's own INFO and CONFIG RESETSTAT do not."""

    OWN = frozenset({"info", "config|resetstat", "config"})

    def __init__(self, ports: list[int], host: str = "127.0.0.1") -> None:
        self._nodes = [(host, port) for port in ports]

    def _each(self) -> Iterator[Any]:
        import redis

        for host, port in self._nodes:
            with redis.Redis(host=host, port=port, socket_timeout=5) as node:
                yield node

    def start(self) -> None:
        for node in self._each():
            node.config_resetstat()

    def stop(self) -> dict[str, int]:
        """Calls by command name (lower case; `a|b` for subcommands), most first."""
        calls: dict[str, int] = {}
        for node in self._each():
            for key, stats in node.info("commandstats").items():
                name = str(key).removeprefix("cmdstat_")
                if name not in self.OWN:
                    calls[name] = calls.get(name, 0) + int(stats["calls"])
        return dict(sorted(calls.items(), key=lambda item: (-item[1], item[0])))


# -- figures ------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def ms_stats(values_ms: Iterable[float], *, with_n: bool = False) -> dict[str, float | None]:
    """p50, p95, p99, max and mean of latencies in milliseconds (None when there are none), rounded to
    hundredths; `with_n` puts their count first."""
    ordered = sorted(values_ms)
    counted: dict[str, float | None] = {"n": len(ordered)} if with_n else {}
    if not ordered:
        return {**counted, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    return {
        **counted,
        "p50": round(percentile(ordered, 50), 2),
        "p95": round(percentile(ordered, 95), 2),
        "p99": round(percentile(ordered, 99), 2),
        "max": round(ordered[-1], 2),
        "mean": round(statistics.fmean(ordered), 2),
    }


def min_median_max(values: Iterable[float | None]) -> dict[str, float] | None:
    """The spread of one figure over repeated runs (runs without it left out; None if none has it)."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    return {"min": min(present), "median": round(statistics.median(present), 3), "max": max(present)}


# -- running and printing -----------------------------------------------------------------------------


def install_uvloop() -> None:
    """uvloop's event loop when it is installed (cheaper per frame), asyncio's otherwise."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "speed": machine_speed()}


# A message frame much like those the services encode and decode for every message.
_SPEED_FRAME = {
    "type": "message",
    "room": "K7XQ2PZM",
    "seq": 123456,
    "client_msg_id": "0f5c3a52-9a7e-4b1e-8d55-3c2b1e0f9a77",
    "author": {"username": "QuietOtter42", "badges": ["host"]},
    "text": "a message of a typical length in a busy room " * 2,
    "created_at": "2026-01-01T12:00:00.000000Z",
}


def machine_speed(seconds: float = 3.0) -> dict[str, dict[str, float]]:
    """How fast the machine is, so that figures from different days can be set beside each other (the
    same code on the same kind of machine has measured twice as slow on some days), and how much its
    speed moves from one second to the next (a virtual CPU shares its core with other tenants):
    min, median and max over `seconds` of back-to-back timings (lower is faster) of
    - `python_ms`: 5,000 JSON encode/decode round trips of a message frame on one thread (the kind
      of work every hop of a message does);
    - `wakeup_us`: one round trip between two threads over pipes, each blocked in read until the
      other writes (the kernel's and the hypervisor's cost of a wake-up, which a message pays tens
      of times on its way), averaged over 500 round trips."""
    trips = 500
    python: list[float] = []
    wakeups: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or not python:
        python.append(_timed(_speed_python) * 1000)
        wakeups.append(_timed(lambda: _speed_wakeups(trips)) / trips * 1e6)
    return {"python_ms": _rounded_spread(python), "wakeup_us": _rounded_spread(wakeups)}


def _rounded_spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _speed_python() -> None:
    for _ in range(5000):
        json.loads(json.dumps(_SPEED_FRAME))


def _speed_wakeups(trips: int) -> None:
    ping_read, ping_write = os.pipe()
    pong_read, pong_write = os.pipe()

    def echo() -> None:
        for _ in range(trips):
            os.read(ping_read, 1)
            os.write(pong_write, b"x")

    thread = threading.Thread(target=echo)
    thread.start()
    try:
        for _ in range(trips):
            os.write(ping_write, b"x")
            os.read(pong_read, 1)
    finally:
        thread.join()
        for fd in (ping_read, ping_write, pong_read, pong_write):
            os.close(fd)


def emit(document: Mapping[str, Any], output: Path | None = None) -> None:
    """The results as indented JSON on stdout, and in `output` too when given."""
    text = json.dumps(document, indent=2)
    print(text)
    if output is not None:
        output.write_text(text + "\n")

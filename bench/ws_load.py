"""WebSocket load generator for ChatPop (a benchmark, not a test).

Opens N WebSocket clients spread over M rooms through the edge, sends messages at a target rate (or as
fast as acknowledgements allow) and prints JSON: messages accepted (acked after commit) per second,
deliveries per second, send→receive latency percentiles, and the edge's resident memory per connection.

By default it starts its own private stack (Postgres, Redis and the five services as processes, as
`make run` does) on free ports; `--url` points it at a running edge instead (give `--edge-pid` to measure
memory there).

    .venv/bin/python bench/ws_load.py                    # both standard scenarios
    .venv/bin/python bench/ws_load.py --scenario latency --clients 100 --rooms 10 --rate 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from harness import (
    CpuMeter,
    CpuWindow,
    anonymous,
    create_room,
    emit,
    install_uvloop,
    join,
    machine,
    min_median_max,
    ms_stats,
    private_platform,
    to_ws_url,
)

SCENARIOS: dict[str, dict[str, Any]] = {
    # Target: >= 2,000 messages/s accepted and committed.
    "throughput": {"clients": 200, "rooms": 20, "rate": 0, "window": 4, "warmup": 3.0, "duration": 15.0},
    # Target: p99 send→receive <= 50 ms at 500 messages/s in rooms of 10.
    "latency": {"clients": 100, "rooms": 10, "rate": 500, "window": 4, "warmup": 3.0, "duration": 15.0},
}


# After sending stops: wait for every outstanding ack (at most DRAIN_LIMIT seconds), then a little
# longer for the deliveries of the last messages.
DRAIN_LIMIT = 15.0
DRAIN_AFTER_ACKS = 0.5


@dataclass
class Client:
    room_code: str
    username: str
    room_token: str
    ws: aiohttp.ClientWebSocketResponse | None = None
    in_flight: dict[str, int] = field(default_factory=dict)
    window_free: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Stats:
    sent_at: dict[str, int] = field(default_factory=dict)
    acked: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    deliveries: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    measuring: bool = False
    # Sends not yet answered by an ack or an error, over all clients; `drained` is set at zero.
    outstanding: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0:
            self.drained.set()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def setup_clients(http: httpx.AsyncClient, clients: int, rooms: int) -> list[Client]:
    codes = []
    for index in range(rooms):
        room = await create_room(http, await anonymous(http), name=f"bench room {index}")
        codes.append(room["code"])

    async def client(index: int) -> Client:
        code = codes[index % rooms]
        username = f"bench_{index:05d}"
        joined = await join(http, code, username)
        return Client(room_code=code, username=username, room_token=joined["room_token"])

    result: list[Client] = []
    for start in range(0, clients, 20):
        result.extend(await asyncio.gather(*(client(i) for i in range(start, min(clients, start + 20)))))
    return result


async def reader(client: Client, stats: Stats, window: int) -> None:
    assert client.ws is not None
    async for raw in client.ws:
        now = time.time_ns()
        if raw.type is not aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(raw.data)
        kind = frame.get("type")
        if kind == "message":
            sent = stats.sent_at.get(frame.get("client_msg_id", ""))
            if stats.measuring and sent is not None:
                stats.deliveries += 1
                stats.latencies_ns.append(now - sent)
        elif kind == "ack":
            counted = stats.measuring and frame["client_msg_id"] in stats.sent_at
            if client.in_flight.pop(frame["client_msg_id"], None) is not None:
                stats.answered()
                stats.acked += counted
            if len(client.in_flight) < window:
                client.window_free.set()
        elif kind == "error":
            code = str(frame.get("code"))
            stats.errors[code] = stats.errors.get(code, 0) + 1
            if client.in_flight.pop(frame.get("client_msg_id", ""), None) is not None:
                stats.answered()
            client.window_free.set()


async def send(client: Client, stats: Stats, window: int) -> None:
    assert client.ws is not None
    while len(client.in_flight) >= window:
        client.window_free.clear()
        await client.window_free.wait()
    msg_id = uuid.uuid4().hex
    now = time.time_ns()
    if stats.measuring:
        stats.sent_at[msg_id] = now
    client.in_flight[msg_id] = now
    stats.outstanding += 1
    await client.ws.send_str(
        json.dumps({"type": "send", "client_msg_id": msg_id, "text": f"load {msg_id[:8]}"})
    )


async def drive(
    clients: list[Client],
    stats: Stats,
    *,
    rate: float,
    window: int,
    warmup: float,
    duration: float,
    on_measuring: Callable[[], None],
) -> float:
    """Send for `warmup` seconds unmeasured, then `duration` seconds measured; returns the measured time."""
    warmup_started = time.perf_counter()
    started = warmup_started + warmup
    deadline = started + duration

    def measure_when_due(now: float) -> None:
        if not stats.measuring and now >= started:
            stats.measuring = True
            on_measuring()

    measure_when_due(warmup_started)
    if rate > 0:
        interval = 1.0 / rate
        next_at = warmup_started
        index = 0
        while (now := time.perf_counter()) < deadline:
            measure_when_due(now)
            if now < next_at:
                await asyncio.sleep(next_at - now)
            client = clients[index % len(clients)]
            index += 1
            if len(client.in_flight) < window:
                await send(client, stats, window)
            next_at += interval
    else:

        async def saturate(client: Client) -> None:
            while (now := time.perf_counter()) < deadline:
                measure_when_due(now)
                await send(client, stats, window)

        await asyncio.gather(*(saturate(c) for c in clients))
    elapsed = time.perf_counter() - started
    # Let in-flight acks and deliveries arrive before reading the counters.
    if stats.outstanding:
        stats.drained.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stats.drained.wait(), DRAIN_LIMIT)
    await asyncio.sleep(DRAIN_AFTER_ACKS)
    stats.measuring = False
    return elapsed


@dataclass
class Outcome:
    elapsed: float
    sent: int
    acked: int
    deliveries: int
    errors: dict[str, int]
    latencies_ms: list[float]
    cpu: CpuWindow
    rss_before: int | None
    rss_after: int | None


async def drive_python(
    ws_base: str, clients: list[Client], pids: dict[str, int], cfg: dict[str, Any]
) -> Outcome:
    edge_pid = pids.get("edge")
    rss_before = rss_kib(edge_pid) if edge_pid else None
    session = aiohttp.ClientSession()
    for client in clients:
        client.ws = await session.ws_connect(
            f"{ws_base}/ws/v1/rooms/{client.room_code}?token={client.room_token}", autoping=True
        )
        ready = json.loads(await client.ws.receive_str())
        assert ready.get("type") == "ready", ready
    await asyncio.sleep(0.5)
    rss_after = rss_kib(edge_pid) if edge_pid else None
    stats = Stats()
    readers = [asyncio.create_task(reader(c, stats, cfg["window"])) for c in clients]
    pids = {**pids, "load-generator": os.getpid()}
    meter = CpuMeter(pids)
    elapsed = await drive(
        clients,
        stats,
        rate=cfg["rate"],
        window=cfg["window"],
        warmup=cfg["warmup"],
        duration=cfg["duration"],
        on_measuring=meter.start,
    )
    cpu = meter.stop()
    for client in clients:
        assert client.ws is not None
        await client.ws.close()
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await session.close()
    return Outcome(
        elapsed=elapsed,
        sent=len(stats.sent_at),
        acked=stats.acked,
        deliveries=stats.deliveries,
        errors=stats.errors,
        latencies_ms=sorted(ns / 1e6 for ns in stats.latencies_ns),
        cpu=cpu,
        rss_before=rss_before,
        rss_after=rss_after,
    )


NODE_CLIENTS = Path(__file__).resolve().parent / "wsclients"


def ensure_node_clients() -> None:
    if not (NODE_CLIENTS / "node_modules" / "ws").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_CLIENTS, check=True)


async def drive_node(
    ws_base: str, clients: list[Client], pids: dict[str, int], cfg: dict[str, Any]
) -> Outcome:
    edge_pid = pids.get("edge")
    job = {
        "wsBase": ws_base,
        "clients": [{"code": c.room_code, "token": c.room_token} for c in clients],
        "rate": cfg["rate"],
        "window": cfg["window"],
        "warmup": cfg["warmup"],
        "duration": cfg["duration"],
        "drainLimit": DRAIN_LIMIT,
        "drainAfterAcks": DRAIN_AFTER_ACKS,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(job, handle)
    rss_before = rss_kib(edge_pid) if edge_pid else None
    process = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_CLIENTS / "clients.mjs"),
        handle.name,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 30,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        connected = json.loads(await process.stdout.readline())
        assert connected.get("phase") == "connected", connected
        await asyncio.sleep(0.5)
        rss_after = rss_kib(edge_pid) if edge_pid else None
        pids = {**pids, "load-generator": process.pid}
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        measuring = json.loads(await process.stdout.readline())
        assert measuring.get("phase") == "measuring", measuring
        meter = CpuMeter(pids)
        meter.start()
        done = json.loads(await process.stdout.readline())
        cpu = meter.stop()
        await process.wait()
    finally:
        await asyncio.to_thread(Path(handle.name).unlink, missing_ok=True)
        if process.returncode is None:
            process.kill()
    return Outcome(
        elapsed=float(done["elapsed"]),
        sent=int(done["sent"]),
        acked=int(done["acked"]),
        deliveries=int(done["deliveries"]),
        errors=dict(done["errors"]),
        latencies_ms=[float(x) for x in done["latencies"]],
        cpu=cpu,
        rss_before=rss_before,
        rss_after=rss_after,
    )


async def run_scenario(
    base_url: str, pids: dict[str, int], name: str, cfg: dict[str, Any], driver: str
) -> dict[str, Any]:
    ws_base = to_ws_url(base_url)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        clients = await setup_clients(http, cfg["clients"], cfg["rooms"])
    run = drive_node if driver == "node" else drive_python
    outcome = await run(ws_base, clients, pids, cfg)
    elapsed = outcome.elapsed
    per_room = cfg["clients"] / cfg["rooms"]
    result: dict[str, Any] = {
        "scenario": name,
        "clients": cfg["clients"],
        "rooms": cfg["rooms"],
        "room_size": per_room,
        "target_rate": cfg["rate"] or "max",
        "client_driver": driver,
        "window_per_client": cfg["window"],
        "warmup_s": cfg["warmup"],
        "duration_s": round(elapsed, 2),
        "messages_sent": outcome.sent,
        "messages_accepted": outcome.acked,
        "messages_accepted_per_s": round(outcome.acked / elapsed, 1),
        "deliveries": outcome.deliveries,
        "deliveries_per_s": round(outcome.deliveries / elapsed, 1),
        "delivery_ratio": round(outcome.deliveries / max(1, outcome.sent * per_room), 4),
        "errors": outcome.errors,
        "send_to_receive_ms": ms_stats(outcome.latencies_ms),
    }
    cpu_used = outcome.cpu.used
    if cpu_used and outcome.acked:
        # CPU per accepted message, by process (measured over the sending window and the drain).
        result["cpu_ms_per_message"] = {
            name: round(1000 * used / outcome.acked, 3) for name, used in sorted(cpu_used.items())
        }
        services = sum(used for name, used in cpu_used.items() if name != "load-generator")
        result["cpu_ms_per_message_all_services"] = round(1000 * services / outcome.acked, 3)
        result["cpu_cores_busy"] = {
            name: round(used / outcome.cpu.wall, 2) for name, used in sorted(cpu_used.items())
        }
    if outcome.rss_before is not None and outcome.rss_after is not None:
        result["edge_rss_kib_before_connect"] = outcome.rss_before
        result["edge_rss_kib_after_connect"] = outcome.rss_after
        result["edge_rss_kib_per_connection"] = round(
            (outcome.rss_after - outcome.rss_before) / cfg["clients"], 1
        )
    return result


def spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Min, median and max over repeated runs of one scenario, for the figures that vary most."""
    return {
        "scenario": runs[0]["scenario"],
        "runs": len(runs),
        "messages_accepted_per_s": min_median_max(run["messages_accepted_per_s"] for run in runs),
        "p99_ms": min_median_max(run["send_to_receive_ms"]["p99"] for run in runs),
    }


async def main_async(
    args: argparse.Namespace, base_url: str, pids: dict[str, int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    results, spreads = [], []
    for name in names:
        cfg = dict(SCENARIOS[name])
        for key in ("clients", "rooms", "rate", "window", "warmup", "duration"):
            value = getattr(args, key)
            if value is not None:
                cfg[key] = value
        runs = []
        for index in range(args.repeat):
            run = await run_scenario(base_url, pids, name, cfg, args.client)
            run["run"] = index + 1
            runs.append(run)
        results.extend(runs)
        if args.repeat > 1:
            spreads.append(spread(runs))
    return results, spreads


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--url", help="a running edge, e.g. http://127.0.0.1:8080 (default: start a stack)")
    parser.add_argument("--edge-pid", type=int, help="the edge's pid, to measure its memory with --url")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--rooms", type=int)
    parser.add_argument("--rate", type=float, help="messages/s over all clients; 0 = as fast as acks allow")
    parser.add_argument("--window", type=int, help="unacknowledged sends allowed per client")
    parser.add_argument("--duration", type=float, help="seconds of sending per scenario")
    parser.add_argument(
        "--warmup", type=float, help="seconds of sending before measuring (cold caches and connections)"
    )
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each scenario on the same stack (adds a `spread`)"
    )
    parser.add_argument(
        "--client",
        choices=["node", "python"],
        default="node" if shutil.which("node") else "python",
        help="WebSocket client driver: node (bench/wsclients, cheaper per frame) or python (aiohttp)",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    install_uvloop()
    if args.client == "node":
        ensure_node_clients()
    if args.url:
        pids = {"edge": args.edge_pid} if args.edge_pid else {}
        results, spreads = asyncio.run(main_async(args, args.url.rstrip("/"), pids))
    else:
        with private_platform() as platform:
            pids = platform.measured("postgres", "redis")
            results, spreads = asyncio.run(main_async(args, platform.base_url, pids))
    document = {"benchmark": "ws_load", "machine": machine(), "results": results}
    if spreads:
        document["spread"] = spreads
    emit(document, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

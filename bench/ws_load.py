"""WebSocket load generator for ChatPop (a benchmark, not a test).

Opens N WebSocket clients spread over M rooms through the edge, sends messages at a target rate (or as
fast as acknowledgements allow) and prints JSON: messages accepted (acked after commit) per second,
deliveries per second, send→receive latency percentiles, and the edge's resident memory per connection.

Scenarios: `throughput` and `latency` (the standard two), `big-room` (one room of 1,000 members),
`sockets` (10,000 idle sockets on one edge process, then one message to 1,000 of them) and `overload`
(2x the measured peak offered open-loop: what is accepted, what is refused and how fast, and whether
every acknowledged message is in Postgres and reached its room). `--cpus` pins the stack to cores.

By default it starts its own private stack (Postgres, Redis and the five services as processes, as
`make run` does) on free ports; `--redis-cluster` gives that stack a private 3-master Redis Cluster
instead of the single Redis. Either way each scenario reports the Redis commands run per accepted
message (INFO commandstats over every node, reset when measuring starts). `--url` points it at a
running edge instead (give `--edge-pid` to measure memory there, `--database-url` for overload's check
against Postgres).

    .venv/bin/python bench/ws_load.py                    # both standard scenarios
    .venv/bin/python bench/ws_load.py --scenario latency --clients 100 --rooms 10 --rate 500
    .venv/bin/python bench/ws_load.py --scenario big-room,sockets,overload --cpus 0
    .venv/bin/python bench/ws_load.py --scenario throughput --redis-cluster
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
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
import asyncpg
import httpx
from harness import (
    CpuMeter,
    CpuWindow,
    RedisCommandMeter,
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
    # One room of 1,000 members, 50 messages/s (50,000 deliveries/s): p99 and delivery ratio. The counters
    # are read once every accepted message reached every member (or DRAIN_LIMIT passed): a fan-out that
    # falls behind shows in the latencies rather than as missing deliveries.
    "big-room": {
        "clients": 1000,
        "rooms": 1,
        "rate": 50,
        "window": 4,
        "warmup": 3.0,
        "duration": 15.0,
        "await_deliveries": True,
    },
    # 10,000 idle sockets on the one edge process (rooms of 1,000): its RSS per socket, its CPU while they
    # idle for `duration` seconds (pings only), then `probes` messages one at a time to the first room:
    # the time until every one of its members has each.
    "sockets": {"clients": 10000, "rooms": 10, "rate": 0, "window": 1, "warmup": 0.0, "duration": 5.0},
    # The throughput scenario's clients offered `factor` times its peak (measured first, or --peak)
    # open-loop: no window, sends go out at the rate whatever the answers do.
    "overload": {"clients": 200, "rooms": 20, "rate": 0, "window": 0, "warmup": 3.0, "duration": 15.0},
}
# `--scenario standard` (the default) and `all`.
STANDARD = ("throughput", "latency")
# Scenarios that need the Node client (it holds the sockets and counts refusals and deliveries per message).
NODE_ONLY = ("big-room", "sockets", "overload")
PROBES = 5
OVERLOAD_FACTOR = 2.0
OVERLOAD_DRAIN_LIMIT = 60.0
# Handshakes the Node client has in flight at once: below the edge's PENDING_CONNECTIONS_PER_IP (64).
CONNECT_CONCURRENCY = 32
# Local addresses the Node client connects from, in turn, when the edge listens on loopback: no one peer
# holds all the sockets (the edge counts pending handshakes per peer) and ephemeral ports last longer.
LOOPBACK_SOURCES = [f"127.0.0.{n}" for n in range(1, 17)]


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


# REST joins made at once while setting up.
SETUP_CONCURRENCY = 20


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
    for start in range(0, clients, SETUP_CONCURRENCY):
        batch = range(start, min(clients, start + SETUP_CONCURRENCY))
        result.extend(await asyncio.gather(*(client(i) for i in batch)))
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
    # The Node client's extras: refusals' times from their send by error code, those that said
    # retryable, sockets closed by close code, and the rest of its last line (mode-specific).
    refusal_ms: dict[str, list[float]] = field(default_factory=dict)
    retryable: dict[str, int] = field(default_factory=dict)
    retry_after: dict[str, list[float]] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # Redis commands by name over the CPU meter's window (None: not metered).
    redis_commands: dict[str, int] | None = None


async def drive_python(
    ws_base: str,
    clients: list[Client],
    pids: dict[str, int],
    cfg: dict[str, Any],
    commands: RedisCommandMeter | None = None,
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

    def start_meters() -> None:
        meter.start()
        if commands is not None:
            commands.start()

    elapsed = await drive(
        clients,
        stats,
        rate=cfg["rate"],
        window=cfg["window"],
        warmup=cfg["warmup"],
        duration=cfg["duration"],
        on_measuring=start_meters,
    )
    cpu = meter.stop()
    redis_commands = commands.stop() if commands is not None else None
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
        redis_commands=redis_commands,
    )


NODE_CLIENTS = Path(__file__).resolve().parent / "wsclients"


def ensure_node_clients() -> None:
    if not (NODE_CLIENTS / "node_modules" / "ws").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_CLIENTS, check=True)


async def drive_node(
    ws_base: str,
    clients: list[Client],
    pids: dict[str, int],
    cfg: dict[str, Any],
    commands: RedisCommandMeter | None = None,
) -> Outcome:
    edge_pid = pids.get("edge")
    mode = "sockets" if cfg.get("probes") else "load"
    job = {
        "mode": mode,
        "wsBase": ws_base,
        "clients": [{"code": c.room_code, "token": c.room_token} for c in clients],
        "rate": cfg["rate"],
        "window": cfg["window"],
        "warmup": cfg["warmup"],
        "duration": cfg["duration"],
        "drainLimit": cfg.get("drain_limit", DRAIN_LIMIT),
        "drainAfterAcks": DRAIN_AFTER_ACKS,
        "connectConcurrency": cfg.get("connect_concurrency", CONNECT_CONCURRENCY),
        "sourceAddresses": cfg.get("source_addresses", []),
        "listAcked": bool(cfg.get("check_acked")),
        "awaitDeliveries": bool(cfg.get("check_acked") or cfg.get("await_deliveries")),
        "probes": cfg.get("probes", 0),
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
    extra: dict[str, Any] = {}
    redis_commands: dict[str, int] | None = None
    try:
        connected = json.loads(await process.stdout.readline())
        assert connected.get("phase") == "connected", connected
        extra["connect_s"] = round(float(connected["connect_s"]), 2)
        extra["connect_retries"] = int(connected["connect_retries"])
        # Many sockets: let the edge's allocations after the handshakes settle before reading its RSS.
        await asyncio.sleep(0.5 if len(clients) < 2000 else 3.0)
        rss_after = rss_kib(edge_pid) if edge_pid else None
        if edge_pid:
            extra["edge_open_files"] = len(os.listdir(f"/proc/{edge_pid}/fd"))
        pids = {**pids, "load-generator": process.pid}
        meter = CpuMeter(pids)
        if mode == "sockets":
            # The sockets idle (pings only) while the meter runs; then the probes.
            meter.start()
            await asyncio.sleep(cfg["duration"])
            cpu = meter.stop()
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        else:
            process.stdin.write(b"go\n")
            await process.stdin.drain()
            measuring = json.loads(await process.stdout.readline())
            assert measuring.get("phase") == "measuring", measuring
            meter.start()
            if commands is not None:
                commands.start()
        done = json.loads(await process.stdout.readline())
        if mode != "sockets":
            cpu = meter.stop()
            if commands is not None:
                redis_commands = commands.stop()
        await process.wait()
    finally:
        await asyncio.to_thread(Path(handle.name).unlink, missing_ok=True)
        if process.returncode is None:
            process.kill()
    for key in ("probes", "acked_ids", "acked_total", "acked_not_delivered_to_all", "unanswered"):
        if key in done:
            extra[key] = done[key]
    if "drain_s" in done:
        extra["drain_s"] = round(float(done["drain_s"]), 2)
    if "ack_latencies" in done:
        extra["send_to_ack_ms"] = ms_stats(float(x) for x in done["ack_latencies"])
        extra["acked_in_window"] = int(done["acked_in_window"])
    extra["closed_unanswered"] = done.get("closed_unanswered", 0)
    if "loop_delay_ms" in done:
        extra["load_generator_loop_delay_ms"] = {
            k: round(float(v), 2) for k, v in done["loop_delay_ms"].items()
        }
    return Outcome(
        elapsed=float(done.get("elapsed", cpu.wall)),
        sent=int(done.get("sent", 0)),
        acked=int(done.get("acked", 0)),
        deliveries=int(done.get("deliveries", 0)),
        errors=dict(done["errors"]),
        latencies_ms=[float(x) for x in done.get("latencies", [])],
        cpu=cpu,
        rss_before=rss_before,
        rss_after=rss_after,
        refusal_ms={code: [float(x) for x in times] for code, times in done.get("refusal_ms", {}).items()},
        retryable=dict(done.get("retryable", {})),
        retry_after={code: [float(x) for x in hints] for code, hints in done.get("retry_after", {}).items()},
        closes={str(code): n for code, n in done.get("closes", {}).items()},
        extra=extra,
        redis_commands=redis_commands,
    )


@dataclass
class Target:
    """What the scenarios run against: the edge, the processes measured, Postgres for checks."""

    base_url: str
    pids: dict[str, int]
    database_url: str | None = None
    # Where the stack and the load generator run (--cpus), for the results.
    cpus: dict[str, str] | None = None
    # The private stack's Redis nodes (127.0.0.1 ports), metered for commands per message; and what
    # they are ("single" or "cluster (3 masters)").
    redis_ports: list[int] = field(default_factory=list)
    redis_mode: str | None = None


async def acked_missing(database_url: str, acked_ids: list[str]) -> int:
    """How many of the acknowledged client_msg_ids have no row in messaging's `messages` table."""
    connection = await asyncpg.connect(database_url)
    try:
        found = await connection.fetchval(
            "SELECT count(DISTINCT client_msg_id) FROM messaging.messages"
            " WHERE client_msg_id = ANY($1::text[])",
            acked_ids,
        )
    finally:
        await connection.close()
    return len(set(acked_ids)) - int(found)


def redis_command_figures(calls: dict[str, int], accepted: int) -> dict[str, Any]:
    """Redis commands per accepted message over the measured window (and its drain), in all and by
    command; with no message accepted, the counts alone."""
    total = sum(calls.values())
    if not accepted:
        return {"redis_commands": total, "redis_commands_by_name": calls}
    return {
        "redis_commands_per_message": round(total / accepted, 3),
        "redis_commands_by_name_per_message": {
            command: round(count / accepted, 3) for command, count in calls.items()
        },
    }


def refusals(outcome: Outcome) -> dict[str, Any]:
    """Error frames by code: how many, how many said retryable, and how long after its send each came."""
    found: dict[str, Any] = {}
    for code, count in sorted(outcome.errors.items()):
        found[code] = {
            "count": count,
            "retryable": outcome.retryable.get(code, 0),
            "after_send_ms": ms_stats(outcome.refusal_ms.get(code, []), with_n=True),
        }
        if hints := outcome.retry_after.get(code):
            # The frames' retry hint (retry_after_ms, else retry_after in seconds), when they had one.
            found[code]["retry_after_ms"] = ms_stats(hints, with_n=True)
    return found


def sockets_result(result: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """The sockets scenario's figures: memory per socket, CPU while idle, one message to a full room."""
    for key in ("messages_sent", "messages_accepted", "messages_accepted_per_s", "deliveries"):
        result.pop(key, None)
    for key in ("deliveries_per_s", "delivery_ratio", "send_to_receive_ms", "target_rate", "warmup_s"):
        result.pop(key, None)
    for key in ("window_per_client", "delivery_ratio_of_accepted"):
        result.pop(key, None)
    result["idle_s"] = result.pop("duration_s")
    result["idle_cpu_cores_busy"] = {
        name: round(used / outcome.cpu.wall, 3) for name, used in sorted(outcome.cpu.used.items())
    }
    probes = []
    for probe in outcome.extra.get("probes", []):
        delays = [float(x) for x in probe["delays_ms"]]
        probes.append(
            {
                "members": probe["members"],
                "received": probe["received"],
                "all_received_ms": None
                if probe["all_received_ms"] is None
                else round(float(probe["all_received_ms"]), 2),
                "ack_ms": None if probe["ack_ms"] is None else round(float(probe["ack_ms"]), 2),
                "member_delay_ms": ms_stats(delays),
            }
        )
    result["one_message_to_room"] = {
        "all_received_ms": min_median_max(probe["all_received_ms"] for probe in probes),
        "every_member_received_every_probe": all(p["received"] == p["members"] for p in probes),
        "probes": probes,
    }
    return result


async def run_scenario(target: Target, name: str, cfg: dict[str, Any], driver: str) -> dict[str, Any]:
    base_url, pids = target.base_url, target.pids
    ws_base = to_ws_url(base_url)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        clients = await setup_clients(http, cfg["clients"], cfg["rooms"])
    setup_s = time.perf_counter() - started
    if base_url.startswith(("http://127.", "http://localhost")):
        cfg = {**cfg, "source_addresses": LOOPBACK_SOURCES}
    run = drive_node if driver == "node" else drive_python
    commands = RedisCommandMeter(target.redis_ports) if target.redis_ports else None
    outcome = await run(ws_base, clients, pids, cfg, commands)
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
    if driver == "node":
        result["delivery_ratio_of_accepted"] = round(outcome.deliveries / max(1, outcome.acked * per_room), 4)
        result["refusals"] = refusals(outcome)
        result["sockets_closed_by_code"] = outcome.closes
        result["setup_s"] = round(setup_s, 1)
        result.update(
            {key: value for key, value in outcome.extra.items() if key not in ("probes", "acked_ids")}
        )
    if target.cpus:
        result["cpus"] = target.cpus
    if target.redis_mode:
        result["redis"] = target.redis_mode
    if outcome.redis_commands is not None and name != "sockets":
        result.update(redis_command_figures(outcome.redis_commands, outcome.acked))
    if name == "overload":
        # Open-loop, sends may be acked long after the window (queued): the rate that counts is that
        # of the acks that came while the load was offered.
        peak = float(cfg["peak"])
        accepted = round(outcome.extra.get("acked_in_window", 0) / elapsed, 1)
        result["peak_accepted_per_s"] = peak
        result["offered_factor"] = cfg["factor"]
        result["offered_per_s"] = round(outcome.sent / elapsed, 1)
        result["accepted_per_s_while_offered"] = accepted
        result["accepted_share_of_peak"] = round(accepted / max(peak, 1e-9), 3)
        acked_ids = list(outcome.extra.get("acked_ids", []))
        result["acked_total"] = len(acked_ids)
        if target.database_url:
            result["acked_missing_in_postgres"] = await acked_missing(target.database_url, acked_ids)
        else:
            result["acked_missing_in_postgres"] = "not checked (no --database-url)"
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
    if scheduling := outcome.cpu.scheduling:
        # How short of CPU the machine was: time the threads (services, stores, load generator) spent
        # ready to run but waiting for a core, per second they ran; and how often one was switched out
        # while it could still run. Latency figures move with these from one run to the next.
        on_cpu = sum(each.on_cpu for each in scheduling.values())
        result["runqueue_wait_per_cpu_s"] = round(
            sum(each.waited for each in scheduling.values()) / max(on_cpu, 1e-9), 2
        )
        result["runqueue_wait_per_cpu_s_by_process"] = {
            name: round(each.waited / max(each.on_cpu, 1e-9), 2) for name, each in sorted(scheduling.items())
        }
        result["preemptions_per_s"] = {
            name: round(each.preempted / outcome.cpu.wall) for name, each in sorted(scheduling.items())
        }
    if outcome.cpu.stalls is not None:
        # How late a real-time thread that asked to wake every 5 ms woke over the same window:
        # time the machine itself (the hypervisor, the kernel) kept every process from running. The
        # latency tail gathers in the moments it does.
        result["machine_stalls"] = outcome.cpu.stalls
    if outcome.rss_before is not None and outcome.rss_after is not None:
        result["edge_rss_kib_before_connect"] = outcome.rss_before
        result["edge_rss_kib_after_connect"] = outcome.rss_after
        result["edge_rss_kib_per_connection"] = round(
            (outcome.rss_after - outcome.rss_before) / cfg["clients"], 1
        )
    if name == "sockets":
        return sockets_result(result, outcome)
    return result


def spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Min, median and max over repeated runs of one scenario, for the figures that vary most."""
    name = runs[0]["scenario"]
    summary: dict[str, Any] = {"scenario": name, "runs": len(runs)}
    if name == "sockets":
        summary["edge_rss_kib_per_connection"] = min_median_max(
            run.get("edge_rss_kib_per_connection") for run in runs
        )
        summary["all_received_ms"] = min_median_max(
            (run["one_message_to_room"]["all_received_ms"] or {}).get("max") for run in runs
        )
        return summary
    summary["messages_accepted_per_s"] = min_median_max(run["messages_accepted_per_s"] for run in runs)
    summary["p99_ms"] = min_median_max(run["send_to_receive_ms"]["p99"] for run in runs)
    summary["delivery_ratio"] = min_median_max(run["delivery_ratio"] for run in runs)
    summary["cpu_ms_per_message_all_services"] = min_median_max(
        run.get("cpu_ms_per_message_all_services") for run in runs
    )
    summary["redis_commands_per_message"] = min_median_max(
        run.get("redis_commands_per_message") for run in runs
    )
    summary["runqueue_wait_per_cpu_s"] = min_median_max(run.get("runqueue_wait_per_cpu_s") for run in runs)
    summary["machine_stalled_ms_per_s"] = min_median_max(
        (run.get("machine_stalls") or {}).get("stalled_ms_per_s") for run in runs
    )
    if name == "overload":
        summary["accepted_share_of_peak"] = min_median_max(run["accepted_share_of_peak"] for run in runs)
        summary["acked_missing_in_postgres"] = [run["acked_missing_in_postgres"] for run in runs]
    return summary


def scenario_names(spec: str) -> list[str]:
    """The scenarios of `--scenario`: one name, several separated by commas, `standard` or `all`."""
    names: list[str] = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        if item == "all":
            names.extend(SCENARIOS)
        elif item == "standard":
            names.extend(STANDARD)
        elif item in SCENARIOS:
            names.append(item)
        else:
            raise ValueError(f"unknown scenario {item!r} (known: {', '.join(SCENARIOS)}, standard, all)")
    return list(dict.fromkeys(names))


async def main_async(
    args: argparse.Namespace, target: Target
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    names = scenario_names(args.scenario)
    results: list[dict[str, Any]] = []
    spreads: list[dict[str, Any]] = []
    for name in names:
        cfg = dict(SCENARIOS[name])
        for key in ("clients", "rooms", "rate", "window", "warmup", "duration"):
            value = getattr(args, key)
            if value is not None:
                cfg[key] = value
        if name == "sockets":
            cfg["probes"] = args.probes
        if name == "overload":
            peak = args.peak or min_median_max(
                run["messages_accepted_per_s"] for run in results if run["scenario"] == "throughput"
            )
            if isinstance(peak, dict):
                peak = peak["median"]
            if not peak:
                # The peak first: the throughput scenario on the same stack, with the same timing.
                measured = dict(SCENARIOS["throughput"])
                measured.update({key: cfg[key] for key in ("clients", "rooms", "warmup", "duration")})
                run = await run_scenario(target, "throughput", measured, args.client)
                run["run"] = 1
                run["measured_for"] = "overload peak"
                results.append(run)
                peak = run["messages_accepted_per_s"]
            cfg.update({"peak": peak, "factor": args.overload_factor, "check_acked": True, "window": 0})
            # Queued sends may be answered long after the window; the check wants every answer in.
            cfg["drain_limit"] = OVERLOAD_DRAIN_LIMIT
            cfg["rate"] = round(float(peak) * args.overload_factor, 1)
        runs = []
        for index in range(args.repeat):
            run = await run_scenario(target, name, cfg, args.client)
            run["run"] = index + 1
            runs.append(run)
        results.extend(runs)
        if args.repeat > 1:
            spreads.append(spread(runs))
    return results, spreads


def raise_open_files_limit() -> None:
    """Each socket is a file descriptor here and at the edge: the soft limit up to the hard one (the
    Node client inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (Postgres serves each connection from a child process)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(child) for child in children.read_text().split())
    return found


def pin(roots: list[int], cpus: str, *, with_descendants: bool = True) -> None:
    """Every thread of `roots` (and of their descendants) onto `cpus` with taskset; children forked
    later, such as new Postgres backends or the Node client, inherit it."""
    for root in roots:
        for pid in descendants(root) if with_descendants else [root]:
            subprocess.run(
                ["taskset", "--all-tasks", "--cpu-list", "--pid", cpus, str(pid)],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )


def cpu_list(spec: str) -> set[int]:
    """The cores of a taskset-style list such as `0`, `0,1` or `0-3`."""
    cores: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    return cores


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario",
        default="standard",
        help=f"{', '.join(SCENARIOS)}; several separated by commas; `standard` (the default: "
        f"{' and '.join(STANDARD)}) or `all`",
    )
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
        "--database-url", help="Postgres of the platform at --url, for overload's check of acked messages"
    )
    parser.add_argument("--probes", type=int, default=PROBES, help="sockets: messages sent to the full room")
    parser.add_argument(
        "--peak", type=float, help="overload: the peak accepted/s (default: the throughput scenario's)"
    )
    parser.add_argument(
        "--overload-factor", type=float, default=OVERLOAD_FACTOR, help="overload: offered rate / peak"
    )
    parser.add_argument(
        "--cpus",
        help="pin the services, Postgres and Redis to these cores with taskset (e.g. 0 or 0,1); the load "
        "generator goes to the other cores, or shares them when none is left (--load-cpus)",
    )
    parser.add_argument("--load-cpus", help="cores for the load generator (with --cpus; default: the rest)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each scenario on the same stack (adds a `spread`)"
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="run the private stack on a private 3-master Redis Cluster instead of a single Redis",
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
    try:
        names = scenario_names(args.scenario)
    except ValueError as exc:
        parser.error(str(exc))
    if args.client != "node" and (needs_node := [name for name in names if name in NODE_ONLY]):
        parser.error(f"the Node client (bench/wsclients) is needed by {', '.join(needs_node)}")
    if args.cpus and args.url:
        parser.error("--cpus pins the private stack; pin a running one yourself")
    if args.redis_cluster and args.url:
        parser.error("--redis-cluster chooses the private stack's Redis; --url drives a running one")
    raise_open_files_limit()
    install_uvloop()
    if args.client == "node":
        ensure_node_clients()
    if args.url:
        pids = {"edge": args.edge_pid} if args.edge_pid else {}
        target = Target(args.url.rstrip("/"), pids, args.database_url)
        results, spreads = asyncio.run(main_async(args, target))
    else:
        with private_platform(redis_cluster=args.redis_cluster) as platform:
            pids = platform.measured("postgres", "redis")
            target = Target(
                platform.base_url,
                pids,
                platform.database_url,
                redis_ports=platform.redis_ports,
                redis_mode=platform.redis_mode,
            )
            if args.cpus:
                stack = cpu_list(args.cpus)
                rest = set(range(os.cpu_count() or 1)) - stack
                load = args.load_cpus or ",".join(map(str, sorted(rest))) or args.cpus
                pin(list(pids.values()), args.cpus)
                # This process (REST set-up, the CPU meter) and the Node client it starts later, not
                # the services and Redis it started already (its children).
                pin([os.getpid()], load, with_descendants=False)
                target.cpus = {"stack": args.cpus, "load_generator": load}
            results, spreads = asyncio.run(main_async(args, target))
    document = {"benchmark": "ws_load", "machine": machine(), "results": results}
    if spreads:
        document["spread"] = spreads
    emit(document, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

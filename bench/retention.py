"""Retention (a benchmark, not a test): how fast it deletes, and what it costs the chat meanwhile.

1. Delete rate. A room of `--messages` (1,000,000) old entries is bulk-loaded straight into messaging's
   `messages` table (one INSERT … SELECT over generate_series; rows carry no content, which retention
   never reads), then RunRetention (the admin CLI's service credential) deletes them with the
   platform's defaults (RETENTION_BATCH 5,000 per transaction, a short pause between): rows per
   second over the whole run, with nothing else going on.
2. Chat while retention runs. Members of other rooms send text messages at a steady total rate
   (`--rate` per second); each is timed from its send over the WebSocket to its arrival on another
   member's socket. The p99 is measured side by side over windows of the same length: without
   retention, then while RunRetention deletes a second room of the same size. A window lasts about as
   long as part 1 took (at most `--duration` s), so the second one is spent beside the run;
   `overlap_s` says how long both really went on together.

It starts a private platform (Postgres, Redis and the five services on free ports, as `make run`
starts them, media off, the scheduled job off so only the runs asked for delete anything).

    .venv/bin/python bench/retention.py
    .venv/bin/python bench/retention.py --messages 200000 --rate 50 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
from media import Member, chat_latency

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from chatpop.identity.v1 import identity_pb2_grpc  # noqa: E402
from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc  # noqa: E402
from chatpop_common.service_auth import ServiceCredentials  # noqa: E402

RUN_TIMEOUT = 3600.0
# Bulk load: the entries of a big room, all made 400 days before now.
_LOAD = """
INSERT INTO messages (id, room_id, seq, sender_participant_id, sender_username, client_msg_id, text,
                      created_at)
SELECT gen_random_uuid(), $1, s, 'bench-sender', 'BenchSender', 'bulk-' || s, '',
       now() - interval '400 days' + s * interval '1 millisecond'
FROM generate_series($2::bigint, $3::bigint) AS s
"""
_COUNTER = """
INSERT INTO room_counters (room_id, last_seq) VALUES ($1, $2)
ON CONFLICT (room_id) DO UPDATE SET last_seq = GREATEST(room_counters.last_seq, EXCLUDED.last_seq)
"""
LOAD_CHUNK = 100_000
# Seconds a retention run is given to get going before the chat is measured beside it.
RAMP_S = 0.5


@dataclass
class Platform:
    base_url: str
    database_url: str
    pids: dict[str, int]
    identity: str
    messaging: str
    secret: str


@contextlib.contextmanager
def private_platform() -> Iterator[Platform]:
    from chatpop_common import localrun
    from chatpop_common.devstack import throwaway_datastores
    from chatpop_common.migrate import migrate
    from chatpop_common.processes import Supervisor

    root = Path(tempfile.mkdtemp(prefix="chatpop-bench-retention-", dir="/tmp"))
    root.chmod(0o755)  # Postgres runs as its own user and must reach its data folder
    with throwaway_datastores(root / "data") as (pg, redis):
        migrate(pg.url, ["identity", "rooms", "messaging", "payments"])
        secrets = localrun.ensure_secrets(root / "secrets")
        env = dict(os.environ)
        env.update(
            {
                "SEND_RATE_LIMIT": "100000",
                "SEND_RATE_BURST": "100000",
                "LOG_LEVEL": "WARNING",
                "ANONYMOUS_SESSION_LIMIT": "1000000",
                "ANONYMOUS_SESSION_BURST": "1000000",
                "ANONYMOUS_ROOM_LIMIT": "1000000",
                "ANONYMOUS_USERNAMES_PER_IP": "1000",
                "RETENTION_INTERVAL": "0",
            }
        )
        ports = localrun.Ports.free()
        specs = localrun.service_specs(env, ports, pg.url, redis.url, secrets)
        with Supervisor(stream=sys.stderr) as supervisor:
            supervisor.start_all(specs, timeout=60)
            pids = {name: pid for name in supervisor.names if (pid := supervisor.pid(name)) is not None}
            by_name = {spec.name: spec for spec in specs}
            yield Platform(
                base_url=f"http://127.0.0.1:{ports.edge}",
                database_url=pg.url,
                pids=pids,
                identity=f"127.0.0.1:{ports.service['identity']}",
                messaging=f"127.0.0.1:{ports.service['messaging']}",
                secret=by_name["messaging"].env["SERVICE_TOKEN_SECRET"],
            )


async def _anonymous(http: httpx.AsyncClient) -> str:
    response = await http.post("/api/v1/auth/anonymous")
    response.raise_for_status()
    return str(response.json()["access_token"])


async def new_room(http: httpx.AsyncClient, size: int, retention_days: int) -> tuple[str, str, list[Member]]:
    """A room (code, id) with `size` members joined."""
    host = await _anonymous(http)
    created = await http.post(
        "/api/v1/rooms",
        json={"name": "bench retention", "retention_days": retention_days},
        headers={"Authorization": f"Bearer {host}"},
    )
    created.raise_for_status()
    code, room_id = str(created.json()["code"]), str(created.json()["id"])
    members = []
    for index in range(size):
        token = host if index == 0 else await _anonymous(http)
        joined = await http.post(
            f"/api/v1/rooms/{code}/join",
            json={"username": f"Bench{index}{uuid.uuid4().hex[:6]}"},
            headers={"Authorization": f"Bearer {token}"},
        )
        joined.raise_for_status()
        body = joined.json()
        members.append(Member(body["room_token"], body["participant"]["id"]))
    return code, room_id, members


async def bulk_load(database_url: str, room_id: str, count: int) -> float:
    """`count` old entries in the room; seconds it took."""
    started = time.perf_counter()
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "messaging"})
    try:
        for low in range(1, count + 1, LOAD_CHUNK):
            high = min(count, low + LOAD_CHUNK - 1)
            await connection.execute(_LOAD, room_id, low, high)
        await connection.execute(_COUNTER, room_id, count)
        await connection.execute("ANALYZE messages")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def remaining(database_url: str, room_id: str) -> int:
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "messaging"})
    try:
        return int(await connection.fetchval("SELECT count(*) FROM messages WHERE room_id = $1", room_id))
    finally:
        await connection.close()


async def run_retention(platform: Platform, room_id: str) -> tuple[messaging_pb2.RunRetentionResponse, float]:
    async with (
        grpc.aio.insecure_channel(platform.identity) as identity_channel,
        grpc.aio.insecure_channel(platform.messaging) as messaging_channel,
    ):
        cli = ServiceCredentials(
            identity_pb2_grpc.IdentityServiceStub(identity_channel), "cli", platform.secret
        )
        stub = messaging_pb2_grpc.MessagingServiceStub(messaging_channel)
        metadata = await cli.metadata()
        started = time.perf_counter()
        response: messaging_pb2.RunRetentionResponse = await stub.RunRetention(
            messaging_pb2.RunRetentionRequest(room_id=room_id), metadata=metadata, timeout=RUN_TIMEOUT
        )
        return response, time.perf_counter() - started


async def main_async(args: argparse.Namespace, platform: Platform) -> dict[str, Any]:
    ws_url = platform.base_url.replace("http", "ws", 1)
    async with httpx.AsyncClient(base_url=platform.base_url, timeout=60) as http:
        # 1. Delete rate, alone.
        _code, alone_id, _ = await new_room(http, 1, retention_days=1)
        load_s = await bulk_load(platform.database_url, alone_id, args.messages)
        response, elapsed = await run_retention(platform, alone_id)
        left = await remaining(platform.database_url, alone_id)
        delete_rate = {
            "messages": args.messages,
            "load_s": round(load_s, 1),
            "deleted": response.entries,
            "left": left,
            "elapsed_s": round(elapsed, 2),
            "rows_per_s": round(response.entries / elapsed) if elapsed else None,
        }

        # 2. Chat p99 without and with retention running.
        _code, busy_id, _ = await new_room(http, 1, retention_days=1)
        await bulk_load(platform.database_url, busy_id, args.messages)
        rooms = []
        for _ in range(args.rooms):
            code, _room_id, members = await new_room(http, args.room_size, retention_days=30)
            for member in members:
                await member.connect(ws_url, code)
            rooms.append((code, members))
        # Both chat windows last about as long as retention takes to empty a room (part 1), so the
        # second one is spent entirely beside it.
        window = min(args.duration, max(3.0, 0.9 * elapsed - RAMP_S))
        try:
            # A short warm-up (discarded): first frames pay for connections and caches.
            await chat_latency(
                http, ws_url, rooms=rooms, rate=args.rate, duration=2.0, uploads=None, uploaders=0, pids={}
            )
            quiet = await chat_latency(
                http,
                ws_url,
                rooms=rooms,
                rate=args.rate,
                duration=window,
                uploads=None,
                uploaders=0,
                pids=platform.pids,
            )
            started = time.perf_counter()
            retention = asyncio.create_task(run_retention(platform, busy_id))
            # Let the run reach its stride before measuring.
            await asyncio.sleep(RAMP_S)
            busy = await chat_latency(
                http,
                ws_url,
                rooms=rooms,
                rate=args.rate,
                duration=window,
                uploads=None,
                uploaders=0,
                pids=platform.pids,
            )
            measured_until = time.perf_counter()
            busy_response, busy_elapsed = await retention
            overlap = min(measured_until, started + busy_elapsed) - (started + RAMP_S)
        finally:
            for _code, members in rooms:
                for member in members:
                    await member.close()
    for result in (quiet, busy):
        result.pop("uploads", None)
        result.pop("uploads_completed", None)
        result.pop("upload_failures", None)
    return {
        "benchmark": "retention",
        "delete_rate": delete_rate,
        "chat": {
            "rate_per_s": args.rate,
            "rooms": args.rooms,
            "room_size": args.room_size,
            "window_s": round(window, 2),
            "without_retention": quiet,
            "while_retention_runs": busy,
            "retention_during_chat": {
                "deleted": busy_response.entries,
                "elapsed_s": round(busy_elapsed, 2),
                "rows_per_s": round(busy_response.entries / busy_elapsed) if busy_elapsed else None,
                "overlap_s": round(max(0.0, overlap), 2),
            },
        },
        "cpu_count": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--messages", type=int, default=1_000_000, help="entries of the room retention empties"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="text messages per second in all")
    parser.add_argument("--rooms", type=int, default=2)
    parser.add_argument("--room-size", type=int, default=5)
    parser.add_argument("--duration", type=float, default=20.0, help="most seconds of each chat measurement")
    args = parser.parse_args()
    with private_platform() as platform:
        result = asyncio.run(main_async(args, platform))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

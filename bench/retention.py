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
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
from harness import Platform, emit, new_room, private_platform
from media import chat_latency

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
ROOM_NAME = "bench retention"
# Seconds a retention run is given to get going before the chat is measured beside it.
RAMP_S = 0.5


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
        grpc.aio.insecure_channel(platform.services["identity"]) as identity_channel,
        grpc.aio.insecure_channel(platform.services["messaging"]) as messaging_channel,
    ):
        cli = ServiceCredentials(
            identity_pb2_grpc.IdentityServiceStub(identity_channel), "cli", platform.service_token_secret
        )
        stub = messaging_pb2_grpc.MessagingServiceStub(messaging_channel)
        metadata = await cli.metadata()
        started = time.perf_counter()
        response: messaging_pb2.RunRetentionResponse = await stub.RunRetention(
            messaging_pb2.RunRetentionRequest(room_id=room_id), metadata=metadata, timeout=RUN_TIMEOUT
        )
        return response, time.perf_counter() - started


async def main_async(args: argparse.Namespace, platform: Platform) -> dict[str, Any]:
    ws_url = platform.ws_url
    async with httpx.AsyncClient(base_url=platform.base_url, timeout=60) as http:
        # 1. Delete rate, alone.
        _code, alone_id, _ = await new_room(http, 1, name=ROOM_NAME, retention_days=1)
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
        _code, busy_id, _ = await new_room(http, 1, name=ROOM_NAME, retention_days=1)
        await bulk_load(platform.database_url, busy_id, args.messages)
        rooms = []
        for _ in range(args.rooms):
            code, _room_id, members = await new_room(http, args.room_size, name=ROOM_NAME, retention_days=30)
            for member in members:
                await member.connect(ws_url, code)
            rooms.append((code, members))
        # Both chat windows last about as long as retention takes to empty a room (part 1), so the
        # second one is spent entirely beside it.
        window = min(args.duration, max(3.0, 0.9 * elapsed - RAMP_S))

        async def chat(duration: float, pids: dict[str, int]) -> dict[str, Any]:
            """media.py's chat measurement without uploads, and without its upload figures."""
            result = await chat_latency(
                http,
                ws_url,
                rooms=rooms,
                rate=args.rate,
                duration=duration,
                uploads=None,
                uploaders=0,
                pids=pids,
            )
            for key in ("uploads", "uploads_completed", "upload_failures"):
                result.pop(key, None)
            return result

        try:
            # A short warm-up (discarded): first frames pay for connections and caches.
            await chat(2.0, {})
            quiet = await chat(window, platform.pids)
            started = time.perf_counter()
            retention = asyncio.create_task(run_retention(platform, busy_id))
            # Let the run reach its stride before measuring.
            await asyncio.sleep(RAMP_S)
            busy = await chat(window, platform.pids)
            measured_until = time.perf_counter()
            busy_response, busy_elapsed = await retention
            overlap = min(measured_until, started + busy_elapsed) - (started + RAMP_S)
        finally:
            for _code, members in rooms:
                for member in members:
                    await member.close()
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
    # The scheduled job off: only the runs asked for delete anything.
    with private_platform(extra_env={"RETENTION_INTERVAL": "0"}) as platform:
        result = asyncio.run(main_async(args, platform))
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Media through the platform (a benchmark, not a test): upload-to-visible latency, and what checking
uploads costs the chat.

1. Upload to visible. A member uploads a file (a 5 MB photo, a 20 s video) to a room and sends it as a
   message over its WebSocket; another member's socket waits for the message, asks for URLs and
   fetches the `full` variant. `upload_to_visible_ms` runs from the start of the upload to the
   fetch's 200 (the other member could show it), `upload_ms` is the upload's answer alone.
2. Chat under uploads. Members of rooms of `--room-size` send text messages at a steady total rate
   (`--rate` per second); each is timed from its send to its arrival on another member's socket. The
   p99 is measured twice, side by side: without uploads, then while uploaders keep the check pool
   busy (one upload after another per uploader, alternating photos and videos).

It starts a private platform (Postgres, Redis, SeaweedFS and the five services on free ports, as
`make run` starts them) unless `--url` names a running edge (which then needs media switched on).

    .venv/bin/python bench/media.py
    .venv/bin/python bench/media.py --repeat 5 --rate 50 --room-size 10 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from harness import CpuMeter, Member, emit, ms_stats, new_room, private_platform, to_ws_url

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
FRAME_TIMEOUT = 120.0
ALL_KINDS = {"photo": True, "voice": True, "video": True}


async def upload(
    http: httpx.AsyncClient, code: str, member: Member, kind: str, data: bytes
) -> dict[str, Any]:
    response = await http.post(
        f"/api/v1/rooms/{code}/media",
        params={"kind": kind},
        content=data,
        headers={"Authorization": f"Bearer {member.room_token}"},
        timeout=FRAME_TIMEOUT,
    )
    if response.status_code != 201:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text}")
    return dict(response.json())


# --- 1. upload to visible -------------------------------------------------------------------------


async def upload_to_visible(
    http: httpx.AsyncClient, ws_url: str, kind: str, data: bytes, repeat: int
) -> dict[str, Any]:
    code, _room_id, (sender, viewer) = await new_room(http, 2, name="bench media", media=ALL_KINDS)
    await sender.connect(ws_url, code)
    await viewer.connect(ws_url, code)
    totals, uploads = [], []
    try:
        for _ in range(repeat):
            started = time.perf_counter()
            body = await upload(http, code, sender, kind, data)
            uploads.append((time.perf_counter() - started) * 1000)
            client_msg_id = uuid.uuid4().hex
            arrived = viewer.expect(client_msg_id)
            await sender.send("", client_msg_id, media_id=body["media"]["id"])
            frame = await asyncio.wait_for(arrived, FRAME_TIMEOUT)
            granted = await http.post(
                f"/api/v1/rooms/{code}/media/urls",
                json={"media_ids": [frame["media"]["id"]]},
                headers={"Authorization": f"Bearer {viewer.room_token}"},
            )
            granted.raise_for_status()
            cookie = (
                granted.cookies.get("cp_media")
                or granted.headers["set-cookie"].split(";")[0].split("=", 1)[1]
            )
            url = granted.json()["media"][0]["urls"]["full"]
            served = await http.get(url, headers={"Cookie": f"cp_media={cookie}"}, timeout=FRAME_TIMEOUT)
            if served.status_code != 200:
                raise RuntimeError(f"serving answered {served.status_code}")
            totals.append((time.perf_counter() - started) * 1000)
    finally:
        await sender.close()
        await viewer.close()
    return {
        "kind": kind,
        "bytes": len(data),
        "runs": repeat,
        "upload_ms": ms_stats(uploads, with_n=True),
        "upload_to_visible_ms": ms_stats(totals, with_n=True),
    }


# --- 2. chat p99 with and without uploads ---------------------------------------------------------


async def chat_latency(
    http: httpx.AsyncClient,
    ws_url: str,
    *,
    rooms: list[tuple[str, list[Member]]],
    rate: float,
    duration: float,
    uploads: list[tuple[str, bytes]] | None,
    uploaders: int,
    pids: dict[str, int],
) -> dict[str, Any]:
    """Text messages at `rate` per second over all rooms for `duration` s; with `uploads`, uploaders
    keep uploading (one after another each) the whole time."""
    sent_at: dict[str, float] = {}
    observers: dict[str, Member] = {}
    stop = asyncio.Event()
    uploaded = 0
    upload_failures: dict[str, int] = {}

    async def keep_uploading(index: int) -> None:
        nonlocal uploaded
        assert uploads is not None
        code, members = rooms[index % len(rooms)]
        member = members[-1]
        turn = index
        while not stop.is_set():
            kind, data = uploads[turn % len(uploads)]
            turn += 1
            try:
                await upload(http, code, member, kind, data)
                uploaded += 1
            except RuntimeError as exc:
                key = str(exc)[:40]
                upload_failures[key] = upload_failures.get(key, 0) + 1
                await asyncio.sleep(0.5)

    meter = CpuMeter(pids)
    meter.start()
    tasks = [asyncio.create_task(keep_uploading(i)) for i in range(uploaders)] if uploads else []
    # Let the pool fill before measuring.
    if tasks:
        await asyncio.sleep(2.0)
    interval = 1.0 / rate
    started = time.perf_counter()
    count = 0
    while time.perf_counter() - started < duration:
        _code, members = rooms[count % len(rooms)]
        sender = members[count % (len(members) - 1)]
        observer = members[(count + 1) % (len(members) - 1)]
        client_msg_id = uuid.uuid4().hex
        observers[client_msg_id] = observer
        sent_at[client_msg_id] = time.perf_counter()
        await sender.send("bench", client_msg_id)
        count += 1
        next_at = started + count * interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    # Arrivals are recorded by each member's reader: a poll with a deadline is enough here.
    deadline = time.perf_counter() + 10
    while time.perf_counter() < deadline and any(k not in observers[k].arrivals for k in sent_at):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    window = meter.stop()
    latencies = [
        (observers[k].arrivals[k] - t) * 1000 for k, t in sent_at.items() if k in observers[k].arrivals
    ]
    return {
        "uploads": bool(uploads),
        "messages_sent": len(sent_at),
        "messages_lost": len(sent_at) - len(latencies),
        "send_to_receive_ms": ms_stats(latencies, with_n=True),
        "uploads_completed": uploaded,
        "upload_failures": upload_failures,
        "cpu_share": {name: round(used / window.wall, 3) for name, used in window.used.items()},
    }


async def main_async(args: argparse.Namespace, base_url: str, pids: dict[str, int]) -> dict[str, Any]:
    from tests import media_samples

    ws_base = to_ws_url(base_url)
    work = Path(tempfile.mkdtemp(prefix="chatpop-bench-media-files-"))
    photo = media_samples.bench_photo(work / "photo.png").read_bytes()
    video = media_samples.bench_video(work / "video.mp4").read_bytes()
    async with httpx.AsyncClient(base_url=base_url, timeout=FRAME_TIMEOUT) as http:
        visible = [
            await upload_to_visible(http, ws_base, "photo", photo, args.repeat),
            await upload_to_visible(http, ws_base, "video", video, args.repeat),
        ]
        rooms = []
        for _ in range(args.rooms):
            code, _room_id, members = await new_room(
                http, args.room_size, name="bench media", media=ALL_KINDS
            )
            rooms.append((code, members))
        for code, members in rooms:
            for member in members:
                await member.connect(ws_base, code)
        chat = functools.partial(
            chat_latency, http, ws_base, rooms=rooms, rate=args.rate, duration=args.duration, pids=pids
        )
        try:
            quiet = await chat(uploads=None, uploaders=0)
            busy = await chat(uploads=[("photo", photo), ("video", video)], uploaders=args.uploaders)
        finally:
            for _code, members in rooms:
                for member in members:
                    await member.close()
    return {
        "benchmark": "media",
        "photo_bytes": len(photo),
        "video_bytes": len(video),
        "upload_to_visible": visible,
        "chat": {
            "rate_per_s": args.rate,
            "rooms": args.rooms,
            "room_size": args.room_size,
            "duration_s": args.duration,
            "uploaders": args.uploaders,
            "without_uploads": quiet,
            "while_uploading": busy,
        },
        "cpu_count": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running edge (media switched on); default: a private platform")
    parser.add_argument("--repeat", type=int, default=3, help="uploads per kind for upload-to-visible")
    parser.add_argument("--rate", type=float, default=50.0, help="text messages per second in all")
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each chat measurement")
    parser.add_argument("--uploaders", type=int, default=2, help="concurrent uploaders during the busy run")
    args = parser.parse_args()
    if args.url:
        result = asyncio.run(main_async(args, args.url.rstrip("/"), {}))
    else:
        with private_platform(media=True) as platform:
            result = asyncio.run(main_async(args, platform.base_url, platform.measured("seaweedfs")))
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

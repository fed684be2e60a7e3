"""Helpers of the media e2e tests: uploads (through httpx, or byte by byte over a raw socket when the
request itself must misbehave), signed URLs and what the platform holds afterwards (S3 objects, the
messaging records, the edge's spool directory), seen from outside the edge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from chatpop_common.objectstore import ObjectStore, S3Settings
from tests.e2e.chat import bearer, create_room, join
from tests.e2e.conftest import Stack

ALL_KINDS = {"photo": True, "voice": True, "video": True}


@dataclass
class Member:
    token: str
    room_token: str
    participant_id: str


@dataclass
class MediaRoom:
    code: str
    room_id: str
    host: Member
    guest: Member


async def media_room(http: httpx.AsyncClient, media: dict[str, bool] | None = None) -> MediaRoom:
    """A room (every kind allowed unless `media` says otherwise) with its host and one guest joined."""
    from tests.e2e.chat import anonymous

    host_token = await anonymous(http)
    room = await create_room(http, host_token, media=media if media is not None else ALL_KINDS)
    host = await join(http, room["code"], "MediaHost", host_token)
    guest_token = await anonymous(http)
    guest = await join(http, room["code"], "MediaGuest", guest_token)
    return MediaRoom(
        code=room["code"],
        room_id=room["id"],
        host=Member(host_token, host["room_token"], host["participant"]["id"]),
        guest=Member(guest_token, guest["room_token"], guest["participant"]["id"]),
    )


async def upload(
    http: httpx.AsyncClient, code: str, room_token: str, kind: str, content: bytes | Path, **headers: str
) -> httpx.Response:
    data = content.read_bytes() if isinstance(content, Path) else content
    return await http.post(
        f"/api/v1/rooms/{code}/media",
        params={"kind": kind},
        content=data,
        headers={**bearer(room_token), "Content-Type": "application/octet-stream", **headers},
        timeout=60,
    )


async def uploaded(
    http: httpx.AsyncClient, code: str, room_token: str, kind: str, content: bytes | Path
) -> Any:
    """The answer of an upload that must succeed."""
    response = await upload(http, code, room_token, kind, content)
    assert response.status_code == 201, response.text
    return response.json()


def cookie_of(response: httpx.Response) -> str:
    """The `cp_media` binding cookie an answer set (its value)."""
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == "cp_media":
            return rest.split(";", 1)[0]
    raise AssertionError(f"no cp_media cookie in {response.headers.get_list('set-cookie')}")


async def fetch(
    http: httpx.AsyncClient, url: str, cookie: str | None, *, method: str = "GET", **headers: str
) -> httpx.Response:
    """GET (or HEAD) a signed media URL with a `cp_media` cookie (or none), as a browser would."""
    extra = {"Cookie": f"cp_media={cookie}"} if cookie is not None else {}
    # Each call says exactly which cookie it carries: what the client's jar kept from earlier answers
    # is dropped.
    http.cookies.clear()
    return await http.request(method, url, headers={**extra, **headers}, timeout=30)


async def urls(http: httpx.AsyncClient, code: str, room_token: str, ids: Iterable[str]) -> httpx.Response:
    return await http.post(
        f"/api/v1/rooms/{code}/media/urls", json={"media_ids": list(ids)}, headers=bearer(room_token)
    )


# --- what the platform holds ------------------------------------------------------------------------


def s3_settings(stack: Stack) -> S3Settings:
    env = stack.specs["edge"].env
    return S3Settings.model_validate(
        {
            "s3_endpoint_url": env["S3_ENDPOINT_URL"],
            "s3_bucket": env["S3_BUCKET"],
            "s3_access_key_id": env["S3_ACCESS_KEY_ID"],
            "s3_secret_access_key": env["S3_SECRET_ACCESS_KEY"],
            "s3_region": env.get("S3_REGION", "us-east-1"),
        }
    )


@contextlib.asynccontextmanager
async def object_store(stack: Stack) -> AsyncIterator[ObjectStore]:
    store = await ObjectStore.open(s3_settings(stack))
    try:
        yield store
    finally:
        await store.close()


async def room_objects(stack: Stack, room_id: str) -> list[str]:
    async with object_store(stack) as store:
        return await store.keys(f"media/{room_id}/")


def media_rows(stack: Stack, room_id: str) -> list[tuple[str, str]]:
    """(id, state) of every media record of the room, read from messaging's schema."""
    with psycopg.connect(stack.database_url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT id::text, state FROM messaging.media WHERE room_id = %s ORDER BY created_at", (room_id,)
        ).fetchall()
    return [(str(row[0]), str(row[1])) for row in rows]


def spool_dir(stack: Stack) -> Path:
    return Path(stack.specs["edge"].env["MEDIA_SPOOL_DIR"])


def spool_entries(stack: Stack) -> list[str]:
    directory = spool_dir(stack)
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def url_key(stack: Stack) -> bytes:
    return stack.specs["edge"].env["MEDIA_URL_KEY"].encode()


async def eventually(check: Callable[[], Awaitable[bool]], *, deadline: float = 20.0, what: str = "") -> None:
    """Poll `check` until it is true, failing after `deadline` seconds."""
    end = time.monotonic() + deadline
    while True:
        if await check():
            return
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline} s: {what}")
        await asyncio.sleep(0.1)


# --- raw HTTP ---------------------------------------------------------------------------------------


@dataclass
class RawAnswer:
    status: int | None
    head: bytes
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _parse(data: bytes) -> RawAnswer:
    head, _, body = data.partition(b"\r\n\r\n")
    status = None
    first = head.split(b"\r\n", 1)[0].split()
    if len(first) >= 2 and first[0].startswith(b"HTTP/") and first[1].isdigit():
        status = int(first[1])
    return RawAnswer(status, head, body)


def raw_request(
    port: int,
    head: str,
    chunks: Iterable[bytes],
    *,
    half_close: bool = False,
    abort: bool = False,
    read_timeout: float = 30.0,
) -> RawAnswer:
    """Send a request head and body chunks over a plain socket, stopping as soon as an answer arrives.

    `half_close` shuts the sending side after the chunks (the body ends early for the server);
    `abort` closes the socket after the chunks without reading anything (a client that goes away)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    received = b""
    try:
        sock.sendall(head.encode("latin-1"))
        sock.setblocking(False)
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                try:
                    sent = sock.send(view)
                except BlockingIOError:
                    sent = 0
                except (BrokenPipeError, ConnectionResetError):
                    view = view[len(view) :]
                    break
                view = view[sent:]
                with contextlib.suppress(BlockingIOError, ConnectionResetError):
                    data = sock.recv(65536)
                    if data:
                        received += data
                if received:
                    break
                if not sent:
                    time.sleep(0.001)
            if received:
                break
        if abort:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return RawAnswer(None, b"", b"")
        if half_close:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        sock.setblocking(True)
        sock.settimeout(read_timeout)
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
                answer = _parse(received)
                length = _content_length(answer.head)
                if answer.status is not None and length is not None and len(answer.body) >= length:
                    break
        return _parse(received)
    finally:
        sock.close()


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def upload_head(code: str, room_token: str, kind: str, headers: dict[str, str]) -> str:
    lines = [
        f"POST /api/v1/rooms/{code}/media?kind={kind} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {room_token}",
        "Content-Type: application/octet-stream",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


def chunked(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    """`data` in HTTP/1.1 chunked transfer coding, one piece per chunk."""
    pieces = [
        f"{len(data[i : i + size]):x}\r\n".encode() + data[i : i + size] + b"\r\n"
        for i in range(0, len(data), size)
    ]
    return [*pieces, b"0\r\n\r\n"]


def pieces(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]

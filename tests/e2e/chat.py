"""A small ChatPop client for the e2e tests: REST set-up and a WebSocket that records every frame."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Frame = dict[str, Any]


def documented(document: dict[str, Any], method: str, template: str, response: httpx.Response) -> Any:
    """The response's JSON, after checking it is what the OpenAPI document says this answer is."""
    responses = document["paths"][template][method.lower()]["responses"]
    assert str(response.status_code) in responses, (
        f"{method} {template} {response.status_code} is undocumented"
    )
    body = response.json()
    schema = dict(responses[str(response.status_code)]["content"]["application/json"]["schema"])
    schema["components"] = document["components"]
    jsonschema.Draft202012Validator(schema).validate(body)
    return body


async def anonymous(http: httpx.AsyncClient) -> str:
    """A new anonymous session's access token (retrying while a restarted service reconnects)."""
    for _ in range(100):
        response = await http.post("/api/v1/auth/anonymous")
        if response.status_code != 503:
            break
        await asyncio.sleep(0.1)
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_room(http: httpx.AsyncClient, token: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "e2e room", **fields}
    response = await http.post("/api/v1/rooms", json=body, headers=bearer(token))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def join(
    http: httpx.AsyncClient, code: str, username: str, token: str | None = None, **extra: Any
) -> dict[str, Any]:
    token = token or await anonymous(http)
    response = await http.post(
        f"/api/v1/rooms/{code}/join", json={"username": username, **extra}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def history(http: httpx.AsyncClient, code: str, room_token: str) -> list[Frame]:
    """Every message of the room, oldest first, read page by page through the REST API."""
    messages: list[Frame] = []
    before: int | None = None
    while True:
        params = {"limit": 100} | ({"before_seq": before} if before else {})
        for _ in range(100):
            response = await http.get(
                f"/api/v1/rooms/{code}/messages", params=params, headers=bearer(room_token)
            )
            if response.status_code != 503:
                break
            await asyncio.sleep(0.1)
        assert response.status_code == 200, response.text
        page = response.json()
        messages.extend(page["messages"])
        if not page["has_more"] or not page["messages"]:
            break
        before = page["messages"][-1]["seq"]
    return sorted(messages, key=lambda m: m["seq"])


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class ChatSocket:
    """One participant's WebSocket; a reader task appends every frame to `frames`."""

    ws: ClientConnection
    frames: list[Frame] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    reader: asyncio.Task[None] | None = None
    closed: bool = False

    @classmethod
    async def open(cls, ws_url: str, code: str, room_token: str, after_seq: int | None = None) -> ChatSocket:
        """Connect; with `after_seq` the socket resumes from there, as a reconnecting client does."""
        resume = "" if after_seq is None else f"&after_seq={after_seq}"
        ws = await connect(f"{ws_url}/ws/v1/rooms/{code}?token={room_token}{resume}", open_timeout=10)
        socket = cls(ws)
        socket.reader = asyncio.create_task(socket._read())
        await socket.wait_for(lambda f: f["type"] == "ready")
        return socket

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                async with self.changed:
                    self.frames.append(frame)
                    self.changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            async with self.changed:
                self.closed = True
                self.changed.notify_all()

    async def send_json(self, frame: Frame) -> None:
        await self.ws.send(json.dumps(frame))

    async def send(self, text: str, client_msg_id: str | None = None, **extra: Any) -> str:
        client_msg_id = client_msg_id or new_id()
        await self.send_json({"type": "send", "client_msg_id": client_msg_id, "text": text, **extra})
        return client_msg_id

    async def wait_for(self, predicate: Callable[[Frame], bool], timeout: float = 10.0) -> Frame:
        async with self.changed:
            found = await asyncio.wait_for(
                self.changed.wait_for(lambda: any(predicate(f) for f in self.frames) or self.closed), timeout
            )
            del found
            for frame in self.frames:
                if predicate(frame):
                    return frame
        raise AssertionError(f"socket closed before the expected frame; got {self.frames[-5:]}")

    async def ack_or_error(self, client_msg_id: str, timeout: float = 10.0) -> Frame:
        return await self.wait_for(
            lambda f: f["type"] in ("ack", "error") and f.get("client_msg_id") == client_msg_id, timeout
        )

    async def wait_for_seq(self, seq: int, timeout: float = 15.0) -> None:
        await self.wait_for(lambda f: f["type"] == "message" and f["seq"] >= seq, timeout)

    def messages(self) -> list[Frame]:
        return [f for f in self.frames if f["type"] == "message"]

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.messages()]

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


@dataclass
class Room:
    code: str
    id: str
    host_token: str


async def open_room(http: httpx.AsyncClient, **fields: Any) -> Room:
    token = await anonymous(http)
    room = await create_room(http, token, **fields)
    return Room(code=room["code"], id=room["id"], host_token=token)

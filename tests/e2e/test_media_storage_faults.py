"""With the object store down, uploads are refused (503 `storage_unavailable`, nothing left behind)
while chat goes on; once it is back, uploads work again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import media_samples as samples
from tests.e2e.chat import ChatSocket
from tests.e2e.conftest import LOG_DIR, Stack
from tests.e2e.media import media_room, media_rows, room_objects, spool_entries, upload


@pytest.fixture
def s3_restored(stack: Stack) -> Iterator[None]:
    """Whatever the test did to the store, it runs again afterwards."""
    try:
        yield
    finally:
        if stack.s3 is not None and stack.s3.process is None:
            stack.s3.start(LOG_DIR / "s3-restarted.log")


async def test_uploads_fail_cleanly_while_s3_is_down_and_chat_goes_on(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path, s3_restored: None
) -> None:
    assert stack.s3 is not None
    room = await media_room(client)
    photo = samples.webp_photo(tmp_path / "p.webp")
    host = await ChatSocket.open(stack.ws_url, room.code, room.host.room_token)
    guest = await ChatSocket.open(stack.ws_url, room.code, room.guest.room_token)
    try:
        await asyncio.to_thread(stack.s3.stop)
        refused = await upload(client, room.code, room.host.room_token, "photo", photo)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "storage_unavailable"
        assert refused.headers["retry-after"]
        assert spool_entries(stack) == []
        # The record it opened was abandoned (or never completed): nothing may reference it.
        assert all(state != "ready" for _id, state in media_rows(stack, room.room_id))

        sent = await host.send("still chatting")
        await guest.wait_for(lambda f: f["type"] == "message" and f["client_msg_id"] == sent)

        await asyncio.to_thread(stack.s3.start, LOG_DIR / "s3-restarted.log")
        for _ in range(100):
            stored = await upload(client, room.code, room.host.room_token, "photo", photo)
            if stored.status_code != 503:
                break
            await asyncio.sleep(0.2)
        assert stored.status_code == 201, stored.text
        media_id = stored.json()["media"]["id"]
        prefix = f"media/{room.room_id}/{media_id}/"
        assert sorted(k for k in await room_objects(stack, room.room_id) if k.startswith(prefix)) == [
            prefix + "full",
            prefix + "thumb",
        ]
    finally:
        await host.close()
        await guest.close()

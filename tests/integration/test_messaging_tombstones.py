"""The hot cache never serves a deleted message's text again: the tombstone replaces the entry in
place, and a rebuild that read Postgres before the deletion committed writes the tombstone, not the
text it read."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chatpop.messaging.v1 import messaging_pb2
from chatpop_messaging import keys
from chatpop_messaging.hotcache import HotCache, RedisGuard, stream_key


class _OneKey(keys.Keyring):
    """Every room's data key is one random key (no database: the hot cache alone is under test)."""

    def __init__(self) -> None:
        super().__init__(None, keys.MasterKeys.parse(keys.generate_master_keys()))  # type: ignore[arg-type]
        self._cipher = AESGCM(os.urandom(32))

    async def sealer(self, room_id: str) -> keys.Sealer:
        return keys.Sealer(room_id, 1, self._cipher)

    async def opener(
        self, room_id: str, values: Iterable[bytes | None], *, connection: Any = None
    ) -> keys.Opener:
        return keys.Opener(room_id, {1: self._cipher})


def _message(room_id: str, seq: int, text: str, *, deleted: bool = False) -> messaging_pb2.Message:
    message = messaging_pb2.Message(
        id=str(uuid.uuid4()),
        room_id=room_id,
        seq=seq,
        sender_participant_id="p",
        sender_username="Writer",
        client_msg_id=f"c{seq}",
        text=text,
        kind=messaging_pb2.ENTRY_KIND_MESSAGE,
    )
    message.state.deleted = deleted
    return message


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[tuple[HotCache, aioredis.Redis, str]]:
    client = aioredis.Redis.from_url(redis_url)
    room_id = str(uuid.uuid4())
    keyring = _OneKey()
    keys.install(keyring)
    try:
        yield HotCache(client, RedisGuard(1.0), size=50, ttl=600), client, room_id
    finally:
        keys.uninstall(keyring)
        await client.aclose()


async def _texts(cache: HotCache, room_id: str, low: int, high: int) -> list[str]:
    read = await cache.read(room_id, low, high)
    assert read is not None, "the stream should hold the whole range"
    return [message.text for message in read]


async def test_a_tombstone_replaces_the_entry_in_place_and_keeps_the_rest(
    cache: tuple[HotCache, aioredis.Redis, str],
) -> None:
    hot, client, room_id = cache
    originals = [_message(room_id, seq, f"text {seq}") for seq in range(1, 6)]
    for message in originals:
        await hot.append(message)
    ttl_before = await client.ttl(stream_key(room_id))

    assert await hot.redact(_message(room_id, 3, "", deleted=True))
    assert await _texts(hot, room_id, 1, 5) == ["text 1", "text 2", "", "text 4", "text 5"]
    assert 0 < await client.ttl(stream_key(room_id)) <= ttl_before
    # Appends continue the sequence after the rewrite.
    sixth = _message(room_id, 6, "text 6")
    await hot.append(sixth)
    assert await _texts(hot, room_id, 5, 6) == ["text 5", "text 6"]


async def test_a_rebuild_from_a_stale_read_writes_the_tombstone_not_the_text(
    cache: tuple[HotCache, aioredis.Redis, str],
) -> None:
    hot, client, room_id = cache
    stale = [_message(room_id, seq, f"text {seq}") for seq in range(1, 6)]
    for message in stale[:2]:
        await hot.append(message)
    # Message 3 is deleted while a rebuild still holds what Postgres said before.
    assert await hot.redact(_message(room_id, 3, "", deleted=True))

    # The rebuild appends the entries the stream lacks…
    assert await hot.merge(room_id, stale)
    assert await _texts(hot, room_id, 1, 5) == ["text 1", "text 2", "", "text 4", "text 5"]

    # …and when it replaces a lost stream, the tombstone still wins.
    await client.delete(stream_key(room_id))
    assert await hot.merge(room_id, stale)
    assert await _texts(hot, room_id, 1, 5) == ["text 1", "text 2", "", "text 4", "text 5"]

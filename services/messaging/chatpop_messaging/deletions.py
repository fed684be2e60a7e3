"""Deleting a message: its text is gone from Postgres for good, the seq stays as a tombstone, and a
deletion entry in the log tells every client. Its author may delete it, and the room's host any.

A pinned message is unpinned by an UNPIN entry right after the deletion, in the same transaction, its
live paid pins come down with PAID_PIN_REMOVED entries after that, and entries that carried its text
(a PIN's or a paid pin entry's copy of it, a RESTORE's text) lose it too. Media the message carries is
purged with it (media_purge.py), decided in the same transaction."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.backoff import Backoff
from chatpop_common.errors import NotFound, PermissionDenied
from chatpop_messaging import crypto, keys
from chatpop_messaging.hotcache import HotCache
from chatpop_messaging.media import request_purge
from chatpop_messaging.paid_pins import lock_if_paid_pinned, on_deleted
from chatpop_messaging.pins import lock_if_pinned, unpin
from chatpop_messaging.store import (
    ENTRY_COLUMNS,
    KIND_DELETION,
    KIND_PIN,
    KIND_RESTORE,
    Actor,
    Change,
    append_change,
    lock_target,
    read_entries,
    read_entry,
)

log = logging.getLogger(__name__)

_TOMBSTONE = f"""
UPDATE messages SET text = '', deleted_at = now(), deleted_by_host = $3, state_seq = $4
WHERE room_id = $1 AND seq = $2
RETURNING {ENTRY_COLUMNS}
"""  # noqa: S608 - constant column list
_REDACT_COPIES = f"""
UPDATE messages SET text = '', pinned_message = NULL
WHERE room_id = $1 AND target_seq = $2 AND kind IN ({KIND_PIN}, {KIND_RESTORE})
RETURNING {ENTRY_COLUMNS}
"""  # noqa: S608 - constant kinds and column list


@dataclass(frozen=True, slots=True)
class DeletionResult:
    """The deletion entry and the message as it now stands (None when it was deleted already)."""

    entry: messaging_pb2.Message | None
    tombstone: messaging_pb2.Message | None
    # The UNPIN entry when the message was pinned.
    unpinned: messaging_pb2.Message | None = None
    # Earlier entries that carried the text, as they now are: the hot cache must lose it too.
    redacted: tuple[messaging_pb2.Message, ...] = ()
    # PAID_PIN_REMOVED entries of the message's live paid pins.
    paid_pins_removed: tuple[messaging_pb2.Message, ...] = ()

    @property
    def entries(self) -> list[messaging_pb2.Message]:
        """Every entry the deletion appended, in seq order."""
        first = [] if self.entry is None else [self.entry]
        unpinned = [] if self.unpinned is None else [self.unpinned]
        return [*first, *unpinned, *self.paid_pins_removed]


async def _pin_tombstone(
    connection: asyncpg.Connection,
    room_id: str,
    copies: list[messaging_pb2.Message],
    tombstone: messaging_pb2.Message,
) -> None:
    """PIN entries that carried the deleted message carry its tombstone instead (sealed per entry)."""
    pins = [copy for copy in copies if copy.kind == KIND_PIN]
    if not pins:
        return
    sealer = await keys.keyring().sealer(room_id)
    plain = tombstone.SerializeToString()
    for pin in pins:
        await connection.execute(
            "UPDATE messages SET pinned_message = $3 WHERE room_id = $1 AND seq = $2",
            room_id,
            pin.seq,
            sealer.data(pin.id, crypto.PINNED_MESSAGE, plain),
        )
        pin.pinned_message.CopyFrom(tombstone)


class Deletions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def delete(self, room_id: str, target_seq: int, actor: Actor) -> DeletionResult:
        async with self._pool.acquire() as connection, connection.transaction():
            target = await lock_target(connection, room_id, target_seq)
            if target is None:
                raise NotFound("There is no such message in this room.", code="message_not_found")
            own = target["sender_participant_id"] == actor.participant_id
            if not own and not actor.is_host:
                raise PermissionDenied(
                    "Only its author or the room's host can delete this message.", code="forbidden"
                )
            if target["deleted_at"] is not None:
                return DeletionResult(None, None)
            if target["media_id"] is not None:
                # The media goes with its message (locked before the room's counter, as sends do).
                await request_purge(connection, room_id, target["media_id"], "message_deleted")
            pinned = await lock_if_pinned(connection, room_id, target_seq)
            await lock_if_paid_pinned(connection, room_id, target_seq)
            entry = await append_change(
                connection,
                room_id,
                actor,
                Change(kind=KIND_DELETION, target_seq=target_seq, deleted_by_host=not own),
            )
            row = await connection.fetchrow(_TOMBSTONE, room_id, target_seq, not own, entry.seq)
            await connection.execute(
                "DELETE FROM reactions WHERE room_id = $1 AND message_seq = $2", room_id, target_seq
            )
            tombstone = await read_entry(row, connection=connection)
            copies = await read_entries(
                await connection.fetch(_REDACT_COPIES, room_id, target_seq), connection=connection
            )
            await _pin_tombstone(connection, room_id, copies, tombstone)
            unpinned = await unpin(connection, room_id, target_seq, actor) if pinned else None
            paid = await on_deleted(connection, room_id, tombstone)
        return DeletionResult(
            entry,
            tombstone,
            unpinned,
            (*copies, *paid.redacted),
            paid.entries,
        )


class Redactions:
    """Takes deleted messages' text out of the hot cache, retrying in the background while Redis is
    away (the tombstone is in Postgres already; until the cache has it too, the text must not stay)."""

    def __init__(self, cache: HotCache, *, give_up_after: float) -> None:
        self._cache = cache
        self._give_up_after = give_up_after
        self._tasks: set[asyncio.Task[None]] = set()

    def redact(self, tombstone: messaging_pb2.Message) -> None:
        task = asyncio.create_task(
            self._redact(tombstone), name=f"redact {tombstone.room_id}/{tombstone.seq}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _redact(self, tombstone: messaging_pb2.Message) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + self._give_up_after
        backoff = Backoff(first=0.2, limit=10.0)
        while not await self._cache.redact(tombstone):
            if loop.time() >= until:
                # By now the stream has expired (its ttl is shorter), text included.
                log.error("could not redact message %s of room %s", tombstone.seq, tombstone.room_id)
                return
            await asyncio.sleep(backoff.next())

    async def close(self) -> None:
        """Finish what can be finished quickly; the rest expires with the stream."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

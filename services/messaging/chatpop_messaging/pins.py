"""Host pins and the sticky message: what a room shows above its messages, changed by its host.

Each change is an entry of the room's log. A PIN or UNPIN entry carries the room's host pins right
after it (newest first), so a client replaces its list with it rather than applying a delta; a PIN
entry also carries the message as it stood, for clients that never loaded it. A STICKY entry carries
the whole sticky text (empty: cleared). The room's row in `room_boards` is locked before the room's
seq counter by every change of pins or sticky text, after the target message's row when there is one,
so these changes and deletions lock in one order.

Pins have a `source`: host pins here; paid pins (paid_pins.py) have their own table and entries, lock
the same board row in the same order, and always sit below the host's.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.errors import FailedPrecondition, NotFound
from chatpop_messaging import crypto, keys
from chatpop_messaging.store import (
    ENTRY_COLUMNS,
    KIND_PIN,
    KIND_STICKY,
    KIND_UNPIN,
    Actor,
    Change,
    append_change,
    lock_target,
    reaction_counts,
    read_entries,
    read_entry,
)

SOURCE_HOST = messaging_pb2.PIN_SOURCE_HOST

_LOCK_BOARD = """
INSERT INTO room_boards (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING
"""
_BOARD = "SELECT sticky_text, sticky_seq, pins_state_seq FROM room_boards WHERE room_id = $1"
_HOST_PINS = "SELECT message_seq FROM pins WHERE room_id = $1 AND source = $2 ORDER BY pinned_seq DESC"
_PINNED_MESSAGES = f"""
SELECT p.pinned_seq, p.source, {", ".join("m." + c.strip() for c in ENTRY_COLUMNS.split(","))}
FROM pins p JOIN messages m ON m.room_id = p.room_id AND m.seq = p.message_seq
WHERE p.room_id = $1
ORDER BY p.source, p.pinned_seq DESC
"""  # noqa: S608 - constant column list
_COUNTS = "SELECT emoji, count(*) AS n FROM reactions WHERE room_id = $1 AND message_seq = $2 GROUP BY emoji"


@dataclass(frozen=True, slots=True)
class PinResult:
    entry: messaging_pb2.Message | None
    pinned_seqs: list[int]
    pins_state_seq: int


@dataclass(frozen=True, slots=True)
class StickyResult:
    entry: messaging_pb2.Message | None
    text: str
    sticky_seq: int


async def lock_board(connection: asyncpg.Connection, room_id: str) -> asyncpg.Record:
    """The room's board row, locked until the transaction ends (taken before the seq counter)."""
    await connection.execute(_LOCK_BOARD, room_id)
    row: asyncpg.Record = await connection.fetchrow(_BOARD + " FOR UPDATE", room_id)
    return row


async def seal_sticky(room_id: str, sticky_seq: int, text: str) -> bytes:
    """The stored form of a sticky text set by the entry `sticky_seq`."""
    sealer = await keys.keyring().sealer(room_id)
    return sealer.text(crypto.sticky_id(sticky_seq), crypto.STICKY_TEXT, text)


async def _sticky_text(connection: asyncpg.Connection, room_id: str, board: asyncpg.Record) -> str:
    """The board's sticky text; empty when it cannot be decrypted (its key is gone)."""
    value = board["sticky_text"]
    opener = await keys.keyring().opener(room_id, [value], connection=connection)
    try:
        return opener.text(crypto.sticky_id(board["sticky_seq"]), crypto.STICKY_TEXT, value)
    except crypto.Unreadable:
        return ""


async def _host_pins(connection: asyncpg.Connection, room_id: str) -> list[int]:
    return [int(row["message_seq"]) for row in await connection.fetch(_HOST_PINS, room_id, SOURCE_HOST)]


async def _as_it_stands(connection: asyncpg.Connection, room_id: str, row: asyncpg.Record) -> bytes:
    message = await read_entry(row, connection=connection)
    counts = {r["emoji"]: int(r["n"]) for r in await connection.fetch(_COUNTS, room_id, row["seq"])}
    message.state.reactions.extend(reaction_counts(counts))
    return message.SerializeToString()


async def lock_if_pinned(connection: asyncpg.Connection, room_id: str, seq: int) -> bool:
    """For a change that unpins a message it holds locked (a deletion): lock the room's board, before
    the seq counter, when the message is pinned. True when it is."""
    pinned = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pins WHERE room_id = $1 AND message_seq = $2)", room_id, seq
    )
    if pinned:
        await lock_board(connection, room_id)
    return bool(pinned)


async def unpin(
    connection: asyncpg.Connection, room_id: str, seq: int, actor: Actor
) -> messaging_pb2.Message | None:
    """Unpin the message inside the caller's transaction (board locked by `lock_if_pinned`); the
    UNPIN entry, or None when it was not pinned."""
    status = await connection.execute(
        "DELETE FROM pins WHERE room_id = $1 AND message_seq = $2", room_id, seq
    )
    if status == "DELETE 0":
        return None
    entry = await append_change(
        connection,
        room_id,
        actor,
        Change(
            kind=KIND_UNPIN,
            target_seq=seq,
            pinned_seqs=await _host_pins(connection, room_id),
            touches_target=False,
        ),
    )
    await connection.execute(
        "UPDATE room_boards SET pins_state_seq = $2 WHERE room_id = $1", room_id, entry.seq
    )
    return entry


class Pins:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def set(self, room_id: str, target_seq: int, actor: Actor, pinned: bool) -> PinResult:
        """Pin or unpin a message as the room's host (the caller checked who the actor is)."""
        async with self._pool.acquire() as connection, connection.transaction():
            target = await lock_target(connection, room_id, target_seq)
            if target is None:
                raise NotFound("There is no such message in this room.", code="message_not_found")
            board = await lock_board(connection, room_id)
            if not pinned:
                entry = await unpin(connection, room_id, target_seq, actor)
                seqs = await _host_pins(connection, room_id)
                return PinResult(entry, seqs, entry.seq if entry else int(board["pins_state_seq"]))
            if target["deleted_at"] is not None:
                raise FailedPrecondition("This message was deleted.", code="message_deleted")
            if target["hidden_at"] is not None:
                raise FailedPrecondition("This message is hidden pending review.", code="message_hidden")
            seqs = await _host_pins(connection, room_id)
            if target_seq in seqs:
                return PinResult(None, seqs, int(board["pins_state_seq"]))
            entry = await append_change(
                connection,
                room_id,
                actor,
                Change(
                    kind=KIND_PIN,
                    target_seq=target_seq,
                    pinned_seqs=[target_seq, *seqs],
                    pinned_message=await _as_it_stands(connection, room_id, target),
                    touches_target=False,
                ),
            )
            await connection.execute(
                "INSERT INTO pins (room_id, source, message_seq, pinned_seq, pinned_by) "
                "VALUES ($1, $2, $3, $4, $5)",
                room_id,
                SOURCE_HOST,
                target_seq,
                entry.seq,
                actor.participant_id,
            )
            await connection.execute(
                "UPDATE room_boards SET pins_state_seq = $2 WHERE room_id = $1", room_id, entry.seq
            )
        return PinResult(entry, list(entry.pinned_seqs), entry.seq)

    async def set_sticky(self, room_id: str, actor: Actor, text: str) -> StickyResult:
        """Set the sticky text (validated by the caller; empty clears it) as the room's host."""
        async with self._pool.acquire() as connection, connection.transaction():
            board = await lock_board(connection, room_id)
            if await _sticky_text(connection, room_id, board) == text:
                return StickyResult(None, text, int(board["sticky_seq"]))
            entry = await append_change(
                connection,
                room_id,
                actor,
                Change(kind=KIND_STICKY, target_seq=0, text=text, touches_target=False),
            )
            await connection.execute(
                "UPDATE room_boards SET sticky_text = $2, sticky_seq = $3 WHERE room_id = $1",
                room_id,
                await seal_sticky(room_id, entry.seq, text),
                entry.seq,
            )
        return StickyResult(entry, text, entry.seq)

    async def board(self, room_id: str) -> messaging_pb2.RoomBoard:
        """The room's pins (each message as stored now, its state still to be folded) and sticky text."""
        async with self._pool.acquire() as connection:
            board = await connection.fetchrow(_BOARD, room_id)
            rows = await connection.fetch(_PINNED_MESSAGES, room_id)
            sticky = await _sticky_text(connection, room_id, board) if board is not None else ""
            messages = await read_entries(rows, connection=connection)
        result = messaging_pb2.RoomBoard()
        if board is not None:
            result.sticky_text = sticky
            result.sticky_seq = board["sticky_seq"]
            result.pins_state_seq = board["pins_state_seq"]
        for row, message in zip(rows, messages, strict=True):
            result.pins.add(message=message, source=row["source"], pinned_seq=row["pinned_seq"])
        return result

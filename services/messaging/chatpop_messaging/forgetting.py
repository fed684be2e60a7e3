"""Forgetting deleted accounts' participants (ForgetParticipants, rooms' service credential).

rooms has already given each participant a neutral name and revoked its tokens. Here, per room:

1. In bounded batches (short transactions), every entry the participant appended is renamed; with
   `erase_messages` its messages also become deleted: text gone, reactions on them gone, the copies
   a host pin or a restore kept emptied, their media purged (through the outbox like any deletion).
   Other records that name the participant (reports it filed, mutes of it, its paid pins) are renamed.
2. One transaction appends the room's PARTICIPANT_FORGOTTEN entry through the one room-event path (the
   room's next seq; sender_* names the participant under its new name, `messages_erased` says whether
   its messages went too; keyed `forget:<participant>` so it is appended once), after renaming (or
   erasing) whatever the participant still managed to send during step 1.
3. The room's hot cache gets the renamed (or erased) entries in place of the old ones (HotCache
   .redact_many: the stream is rewritten once, and the new versions are remembered so a rebuild that
   read Postgres before step 1 cannot bring the old ones back); the servicer publishes the entry.

Every client then agrees: one that loaded history before applies the entry to it (rename, or erase,
every message of the participant), one that loads it after finds it done, and one that resumes gets
the entry in the log. Calling again is harmless: nothing is left to change and the entry exists.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby

import asyncpg

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.errors import InvalidArgument
from chatpop_messaging import validation
from chatpop_messaging.media import request_purge
from chatpop_messaging.store import (
    CLIENT_MSG_ID_CONSTRAINT,
    ENTRY_COLUMNS,
    KIND_PARTICIPANT_FORGOTTEN,
    KIND_PIN,
    KIND_RESTORE,
    constraint_of,
    read_entries,
    read_entry,
)

# ForgetParticipants takes at most this many participants per call.
PARTICIPANTS_MAX = 10_000
USERNAME_MAX = 15
PURGE_REASON = "message_deleted"

_NEXT_SEQ = """
INSERT INTO room_counters AS c (room_id, last_seq) VALUES ($1, 1)
ON CONFLICT (room_id) DO UPDATE SET last_seq = c.last_seq + 1
RETURNING last_seq
"""
_LAST_SEQ = "SELECT coalesce((SELECT last_seq FROM room_counters WHERE room_id = $1), 0)"
_ENTRY = f"""
SELECT {ENTRY_COLUMNS} FROM messages
WHERE room_id = $1 AND sender_participant_id = $2 AND client_msg_id = $3
"""  # noqa: S608 - constant column list
# The forgotten entry: `added` says whether the participant's messages were erased with it.
_INSERT_ENTRY = f"""
INSERT INTO messages (id, room_id, seq, sender_participant_id, sender_username, sender_is_host,
                      sender_verified, client_msg_id, text, kind, target_seq, added)
VALUES ($1, $2, $3, $4, $5, false, false, $6, '', $7, 0, $8)
RETURNING {ENTRY_COLUMNS}
"""  # noqa: S608 - constant column list
_RENAME = """
UPDATE messages SET sender_username = $3, sender_verified = false
WHERE room_id = $1 AND seq = ANY(ARRAY(
    SELECT seq FROM messages
    WHERE room_id = $1 AND sender_participant_id = $2 AND (sender_username <> $3 OR sender_verified)
    LIMIT $4
))
"""
# Messages to erase, locked (their media first, as every deletion locks them).
_TO_ERASE = """
SELECT seq, media_id FROM messages
WHERE room_id = $1 AND sender_participant_id = $2 AND kind = 1 AND deleted_at IS NULL
ORDER BY seq LIMIT $3 FOR UPDATE
"""
_ERASE = """
UPDATE messages SET text = '', deleted_at = now(), deleted_by_host = false,
    state_seq = GREATEST(state_seq, $4)
WHERE room_id = $1 AND seq = ANY($2::bigint[]) AND sender_participant_id = $3
"""
_ERASE_COPIES = f"""
UPDATE messages SET text = '', pinned_message = NULL
WHERE room_id = $1 AND target_seq = ANY($2::bigint[]) AND kind IN ({KIND_PIN}, {KIND_RESTORE})
"""  # noqa: S608 - constant kinds
_ERASE_REACTIONS = "DELETE FROM reactions WHERE room_id = $1 AND message_seq = ANY($2::bigint[])"
_RENAME_OTHERS = (
    "UPDATE reports SET reporter_username = $3 WHERE room_id = $1 AND reporter_participant_id = $2",
    "UPDATE mutes SET muted_username = $3 WHERE room_id = $1 AND muted_participant_id = $2",
    "UPDATE paid_pins SET username = $3 WHERE room_id = $1 AND participant_id = $2",
)
# Entries of the hot window that show the participants, or carry a copy of one of their messages.
_WINDOW = f"""
SELECT {ENTRY_COLUMNS} FROM messages m
WHERE m.room_id = $1 AND m.seq >= $2
  AND (m.sender_participant_id = ANY($3::text[])
       OR (m.kind IN ({KIND_PIN}, {KIND_RESTORE}) AND EXISTS (
           SELECT 1 FROM messages t
           WHERE t.room_id = m.room_id AND t.seq = m.target_seq AND t.sender_participant_id = ANY($3::text[])
       )))
ORDER BY m.seq
"""  # noqa: S608 - constant column list and kinds


@dataclass(frozen=True, slots=True)
class Forgotten:
    room_id: str
    participant_id: str
    username: str


@dataclass(slots=True)
class RoomForgetting:
    """What forgetting did in one room."""

    room_id: str
    # Entries appended by this call (none when an earlier call appended them).
    entries: list[messaging_pb2.Message] = field(default_factory=list)
    messages_changed: int = 0


def forgotten_participants(request: messaging_pb2.ForgetParticipantsRequest) -> list[Forgotten]:
    if not 1 <= len(request.participants) <= PARTICIPANTS_MAX:
        raise InvalidArgument(f"Name 1 to {PARTICIPANTS_MAX} participants.", code="invalid_participants")
    found: list[Forgotten] = []
    for participant in request.participants:
        username = participant.username.strip()
        if not username or len(username) > USERNAME_MAX:
            raise InvalidArgument("Each participant needs its new username.", code="invalid_username")
        found.append(
            Forgotten(
                validation.room_id(participant.room_id),
                validation.participant_id(participant.participant_id),
                username,
            )
        )
    return sorted(found, key=lambda f: (f.room_id, f.participant_id))


def entry_key(participant_id: str) -> str:
    return f"forget:{participant_id}"


class Forgetting:
    def __init__(self, pool: asyncpg.Pool, *, batch: int) -> None:
        self._pool = pool
        self._batch = batch

    async def forget(self, participants: Sequence[Forgotten], *, erase: bool) -> list[RoomForgetting]:
        outcomes: list[RoomForgetting] = []
        for room_id, group in groupby(participants, key=lambda f: f.room_id):
            outcome = RoomForgetting(room_id)
            for participant in group:
                outcome.messages_changed += await self._batches(participant, erase=erase)
                entry, changed = await self._append(participant, erase=erase)
                outcome.messages_changed += changed
                if entry is not None:
                    outcome.entries.append(entry)
            outcomes.append(outcome)
        return outcomes

    async def _batches(self, participant: Forgotten, *, erase: bool) -> int:
        changed = 0
        while True:
            async with self._pool.acquire() as connection, connection.transaction():
                done = await self._change(connection, participant, erase=erase, limit=self._batch)
            changed += done
            if done < self._batch:
                return changed

    async def _change(
        self, connection: asyncpg.Connection, participant: Forgotten, *, erase: bool, limit: int | None
    ) -> int:
        """One batch (or, without a limit, everything left) of renaming and erasing."""
        room_id, participant_id, username = (
            participant.room_id,
            participant.participant_id,
            participant.username,
        )
        most = limit if limit is not None else 2**31 - 1
        changed = 0
        if erase:
            rows = await connection.fetch(_TO_ERASE, room_id, participant_id, most)
            for row in rows:
                if row["media_id"] is not None:
                    await request_purge(connection, room_id, row["media_id"], PURGE_REASON)
            seqs = [row["seq"] for row in rows]
            if seqs:
                state_seq = await connection.fetchval(_LAST_SEQ, room_id)
                await connection.execute(_ERASE, room_id, seqs, participant_id, state_seq)
                await connection.execute(_ERASE_REACTIONS, room_id, seqs)
                await connection.execute(_ERASE_COPIES, room_id, seqs)
            changed += len(seqs)
        status = await connection.execute(_RENAME, room_id, participant_id, username, most)
        changed = max(changed, int(status.split()[-1]))
        for statement in _RENAME_OTHERS:
            await connection.execute(statement, room_id, participant_id, username)
        return changed

    async def _append(
        self, participant: Forgotten, *, erase: bool
    ) -> tuple[messaging_pb2.Message | None, int]:
        room_id, participant_id = participant.room_id, participant.participant_id
        key = entry_key(participant_id)
        if await self._pool.fetchval(_ENTRY, room_id, participant_id, key) is not None:
            return None, 0
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                # What was sent meanwhile is changed before the entry takes the room's counter, the
                # order every change locks in.
                changed = await self._change(connection, participant, erase=erase, limit=None)
                seq = await connection.fetchval(_NEXT_SEQ, room_id)
                row = await connection.fetchrow(
                    _INSERT_ENTRY,
                    uuid.uuid4(),
                    room_id,
                    seq,
                    participant_id,
                    participant.username,
                    key,
                    KIND_PARTICIPANT_FORGOTTEN,
                    erase,
                )
        except asyncpg.UniqueViolationError as exc:
            # A concurrent call appended it first.
            if constraint_of(exc) != CLIENT_MSG_ID_CONSTRAINT:
                raise
            return None, 0
        return await read_entry(row), changed

    async def hot_window(
        self, room_id: str, participant_ids: Sequence[str], size: int
    ) -> list[messaging_pb2.Message]:
        """The entries of the room's hot window that changed: the participants' own, and host pins or
        restores that carry a copy of one of their messages, as Postgres has them now."""
        last_seq = await self._pool.fetchval(_LAST_SEQ, room_id)
        rows = await self._pool.fetch(_WINDOW, room_id, max(1, last_seq - size + 1), list(participant_ids))
        return await read_entries(rows)

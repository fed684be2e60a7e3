"""SQL for the `messaging` schema: the only code that touches its tables."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from chatpop.messaging.v1 import messaging_pb2
from chatpop_messaging import crypto, keys, media
from chatpop_messaging.metrics import CONTENT_UNREADABLE

log = logging.getLogger(__name__)

CLIENT_MSG_ID_CONSTRAINT = "messages_room_sender_client_msg_key"
# A violation names the partition's index: `<the partitioned table's constraint>_pNN` (migration 0013).
_PARTITION_SUFFIX = re.compile(r"_p[0-9]{2}$")


def constraint_of(exc: asyncpg.PostgresError) -> str | None:
    """The constraint `exc` violates, by the name the schema declares (not its partition's index)."""
    name: str | None = getattr(exc, "constraint_name", None)
    return None if name is None else _PARTITION_SUFFIX.sub("", name)


# One statement, so one transaction: the counter bump and the insert commit or roll back together.
# The counter row stays locked until commit, so seqs are handed out in commit order and a failed
# insert (e.g. a duplicate client_msg_id) leaves no gap.
_INSERT = """
WITH counter AS (
    INSERT INTO room_counters AS c (room_id, last_seq) VALUES ($2, 1)
    ON CONFLICT (room_id) DO UPDATE SET last_seq = c.last_seq + 1
    RETURNING last_seq
)
INSERT INTO messages (id, room_id, seq, sender_participant_id, sender_username, sender_is_host,
                      sender_verified, client_msg_id, text, reply_to_seq, media_id)
SELECT $1, $2, counter.last_seq, $3, $4, $5, $6, $7, $8, $9, $10 FROM counter
RETURNING id, room_id, seq, sender_participant_id, sender_username, sender_is_host,
          sender_verified, client_msg_id, text, reply_to_seq, created_at, kind, target_seq, emoji, added,
          reaction_counts, deleted_at, deleted_by_host, state_seq, hidden_at, pinned_seqs, pinned_message,
          payload, media_id
"""


# A group commit (group_commit.py) as one statement, so one implicit transaction: the sends whose
# (sender, client_msg_id) the room has not seen get the next seqs in input order, with ONE counter update
# and ONE multi-row insert. Sends already stored (retries) are left out; the caller reads their originals.
# A retry that commits elsewhere while this statement waits for the counter's lock makes it fail with a
# unique violation, rolled back whole (no seq is used up): the caller runs the group again.
# The duplicate check is one probe of the unique key per send: `OFFSET 0` keeps NOT EXISTS a subplan run
# per input row (never an anti-join that may hash the room's whole partition), and the unique key is the
# only index on (room_id, sender_participant_id, …) (migration 0014), whatever the statistics say.
# So its generic plan is as good as a custom one, and its connections (COMMIT_SERVER_SETTINGS) use it.
_INSERT_GROUP = """
WITH input AS (
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bool[], $6::bool[], $7::text[],
                         $8::bytea[], $9::bigint[]) WITH ORDINALITY
        AS t(id, sender, username, is_host, verified, client_msg_id, text, reply_to_seq, ord)
),
fresh AS (
    SELECT input.*, row_number() OVER (ORDER BY ord) AS n FROM input
    WHERE NOT EXISTS (
        SELECT 1 FROM messages m
        WHERE m.room_id = $1 AND m.sender_participant_id = input.sender
          AND m.client_msg_id = input.client_msg_id
        OFFSET 0
    )
),
counter AS (
    INSERT INTO room_counters AS c (room_id, last_seq)
    SELECT $1, x.total FROM (SELECT count(*) AS total FROM fresh) AS x WHERE x.total > 0
    ON CONFLICT (room_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq
    RETURNING last_seq
)
INSERT INTO messages (id, room_id, seq, sender_participant_id, sender_username, sender_is_host,
                      sender_verified, client_msg_id, text, reply_to_seq)
SELECT fresh.id, $1, counter.last_seq - (SELECT count(*) FROM fresh) + fresh.n, fresh.sender, fresh.username,
       fresh.is_host, fresh.verified, fresh.client_msg_id, fresh.text, fresh.reply_to_seq
FROM fresh CROSS JOIN counter
ORDER BY fresh.n
RETURNING id, room_id, seq, sender_participant_id, sender_username, sender_is_host,
          sender_verified, client_msg_id, text, reply_to_seq, created_at, kind, target_seq, emoji, added,
          reaction_counts, deleted_at, deleted_by_host, state_seq, hidden_at, pinned_seqs, pinned_message,
          payload, media_id
"""


# The group commit's connections plan _INSERT_GROUP once per connection. With Postgres's default
# (`auto`) every execution was planned again: a generic plan's estimate counts all of the log's
# partitions (they are pruned only when it runs), so it never looked cheaper than a custom plan, and
# planning cost more than the insert itself for a group of one (1.4 → 1.1 ms a group of one).
COMMIT_SERVER_SETTINGS = {"plan_cache_mode": "force_generic_plan"}


# Every column a log entry is read back with (to_message).
ENTRY_COLUMNS = (
    "id, room_id, seq, sender_participant_id, sender_username, sender_is_host, sender_verified, "
    "client_msg_id, text, reply_to_seq, created_at, kind, target_seq, emoji, added, reaction_counts, "
    "deleted_at, deleted_by_host, state_seq, hidden_at, pinned_seqs, pinned_message, payload, media_id"
)
_SELECT = f"SELECT {ENTRY_COLUMNS} FROM messages "  # noqa: S608 - constant column list
_BY_CLIENT_MSG_ID = _SELECT + "WHERE room_id = $1 AND sender_participant_id = $2 AND client_msg_id = $3"
_BY_CLIENT_MSG_IDS = (
    _SELECT  # noqa: S608 - constant column list
    + "WHERE room_id = $1 AND (sender_participant_id, client_msg_id) IN "
    + "(SELECT * FROM unnest($2::text[], $3::text[]))"
)
_RANGE = _SELECT + "WHERE room_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq"
_AT = _SELECT + "WHERE room_id = $1 AND seq = ANY($2::bigint[]) AND kind = 1 ORDER BY seq"
_NEWEST = _SELECT + "WHERE room_id = $1 ORDER BY seq DESC LIMIT $2"


# The room's next seq, for a change entry appended inside a caller's transaction. Taken last, after
# the target row's lock, so that changes and messages always lock in the same order.
_NEXT_SEQ = """
INSERT INTO room_counters AS c (room_id, last_seq) VALUES ($1, 1)
ON CONFLICT (room_id) DO UPDATE SET last_seq = c.last_seq + 1
RETURNING last_seq
"""
_INSERT_CHANGE = f"""
INSERT INTO messages (id, room_id, seq, sender_participant_id, sender_username, sender_is_host,
                      sender_verified, client_msg_id, text, kind, target_seq, emoji, added,
                      reaction_counts, deleted_by_host, pinned_seqs, pinned_message, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $15, $9, $10, $11, $12, $13::jsonb, $14, $16, $17, $18)
RETURNING {ENTRY_COLUMNS}
"""  # noqa: S608 - constant column list
_LOCK_TARGET = f"SELECT {ENTRY_COLUMNS} FROM messages WHERE room_id = $1 AND seq = $2 FOR UPDATE"  # noqa: S608


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change: the participant as the log names them."""

    participant_id: str
    username: str
    is_host: bool
    verified: bool


@dataclass(frozen=True, slots=True)
class Change:
    """A change entry to append: what it is and what it carries."""

    kind: int
    target_seq: int
    emoji: str | None = None
    added: bool | None = None
    reaction_counts: dict[str, int] | None = None
    deleted_by_host: bool = False
    # A STICKY entry's text; PIN/UNPIN entries' pins after them and the pinned message as it stood.
    text: str = ""
    pinned_seqs: list[int] | None = None
    pinned_message: bytes | None = None
    # What a PAID_PIN, PAID_PIN_REMOVED or TIP entry carries: a Message holding only `paid_pin`,
    # `paid_pins` and `tip`, merged into the entry when it is read.
    payload: messaging_pb2.Message | None = None
    # The entry's client_msg_id when it must be unique for its sender (a tip: `tip:<order id>`).
    key: str | None = None
    # Whether the entry changes its target message's state (pins and the sticky text are the room's).
    touches_target: bool = True


async def lock_target(connection: asyncpg.Connection, room_id: str, seq: int) -> Any:
    """The message `seq` of the room, locked until the transaction ends; None if no message has it."""
    row = await connection.fetchrow(_LOCK_TARGET, room_id, seq)
    if row is None or row["kind"] != KIND_MESSAGE:
        return None
    return row


async def append_change(
    connection: asyncpg.Connection, room_id: str, actor: Actor, change: Change
) -> messaging_pb2.Message:
    """Append a change entry with the room's next seq, inside the caller's transaction, and record it
    as the target's newest state."""
    entry_id = uuid.uuid4()
    payload = None if change.payload is None else change.payload.SerializeToString()
    sealed_text, sealed_pinned, sealed_payload = b"", change.pinned_message, payload
    opener = keys.Opener(room_id, {})
    if change.text or change.pinned_message or payload:
        # Sealed with the room's newest key (taken before the seq: the key may have to be created).
        sealer = await keys.keyring().sealer(room_id)
        sealed_text = sealer.text(str(entry_id), crypto.TEXT, change.text)
        sealed_pinned = sealer.data(str(entry_id), crypto.PINNED_MESSAGE, change.pinned_message)
        sealed_payload = sealer.data(str(entry_id), crypto.PAYLOAD, payload)
        opener = sealer.opener()
    seq = await connection.fetchval(_NEXT_SEQ, room_id)
    row = await connection.fetchrow(
        _INSERT_CHANGE,
        entry_id,
        room_id,
        seq,
        actor.participant_id,
        actor.username,
        actor.is_host,
        actor.verified,
        change.key or f"change:{uuid.uuid4().hex}",
        change.kind,
        change.target_seq,
        change.emoji,
        change.added,
        None if change.reaction_counts is None else json.dumps(change.reaction_counts),
        change.deleted_by_host,
        sealed_text,
        change.pinned_seqs,
        sealed_pinned,
        sealed_payload,
    )
    if change.touches_target:
        await connection.execute(
            "UPDATE messages SET state_seq = $3 WHERE room_id = $1 AND seq = $2",
            room_id,
            change.target_seq,
            seq,
        )
    return to_message(row, opener, text=change.text)


class DuplicateClientMsgId(Exception):
    """The sender already sent a message with this client_msg_id in this room."""


@dataclass(frozen=True, slots=True)
class NewMessage:
    room_id: str
    sender_participant_id: str
    sender_username: str
    sender_is_host: bool
    sender_verified: bool
    client_msg_id: str
    text: str
    reply_to_seq: int
    # Media the message carries (checked and linked in the insert's transaction), and the kinds the
    # room allows now.
    media_id: uuid.UUID | None = None
    media_kinds: frozenset[str] = frozenset()


# The six reactions, in the order clients show them.
REACTIONS = ("\U0001f44d", "\u2764\ufe0f", "\U0001f602", "\U0001f62e", "\U0001f622", "\U0001f621")
KIND_MESSAGE = messaging_pb2.ENTRY_KIND_MESSAGE
KIND_REACTION = messaging_pb2.ENTRY_KIND_REACTION
KIND_DELETION = messaging_pb2.ENTRY_KIND_DELETION
KIND_PIN = messaging_pb2.ENTRY_KIND_PIN
KIND_UNPIN = messaging_pb2.ENTRY_KIND_UNPIN
KIND_STICKY = messaging_pb2.ENTRY_KIND_STICKY
KIND_HIDE = messaging_pb2.ENTRY_KIND_HIDE
KIND_RESTORE = messaging_pb2.ENTRY_KIND_RESTORE
KIND_PAID_PIN = messaging_pb2.ENTRY_KIND_PAID_PIN
KIND_PAID_PIN_REMOVED = messaging_pb2.ENTRY_KIND_PAID_PIN_REMOVED
KIND_TIP = messaging_pb2.ENTRY_KIND_TIP
# A deleted account's participant was renamed (forgetting.py); `added` stores messages_erased.
KIND_PARTICIPANT_FORGOTTEN = messaging_pb2.ENTRY_KIND_PARTICIPANT_FORGOTTEN
# Entries that carry a payload (Change.payload).
PAYLOAD_KINDS = (KIND_PAID_PIN, KIND_PAID_PIN_REMOVED, KIND_TIP)


def reaction_counts(counts: dict[str, int]) -> list[messaging_pb2.ReactionCount]:
    """Counts in the clients' order, emojis with nobody on them left out."""
    return [
        messaging_pb2.ReactionCount(emoji=emoji, count=counts[emoji])
        for emoji in REACTIONS
        if counts.get(emoji, 0) > 0
    ]


def _counts(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    loaded = json.loads(value) if isinstance(value, str) else value
    return {str(k): int(v) for k, v in dict(loaded).items()}


async def read_entries(rows: Sequence[Any], *, connection: Any = None) -> list[messaging_pb2.Message]:
    """Log rows as messages, their content opened (`connection` reads keys not cached, inside the
    caller's transaction)."""
    openers: dict[str, keys.Opener] = {}
    for room_id in {row["room_id"] for row in rows}:
        values = [
            value
            for row in rows
            if row["room_id"] == room_id
            for value in (row["text"], row["payload"], row["pinned_message"])
        ]
        openers[room_id] = await keys.keyring().opener(room_id, values, connection=connection)
    return [to_message(row, openers[row["room_id"]]) for row in rows]


async def read_entry(row: Any, *, connection: Any = None) -> messaging_pb2.Message:
    return (await read_entries([row], connection=connection))[0]


def to_message(row: Any, opener: keys.Opener, *, text: str | None = None) -> messaging_pb2.Message:
    """A log row as a message, its content opened with `opener` (`text`: the plaintext, when the
    caller has it). Content that does not open (a key that is gone, a value moved from another row)
    reads as an unreadable message: no content, shown as deleted; never another row's content."""
    kind = row["kind"]
    entry_id = str(row["id"])
    pinned = payload = None
    try:
        if text is None:
            text = opener.text(entry_id, crypto.TEXT, row["text"])
        if kind in (KIND_PIN, KIND_UNPIN):
            pinned = opener.data(entry_id, crypto.PINNED_MESSAGE, row["pinned_message"])
        elif kind in PAYLOAD_KINDS:
            payload = opener.data(entry_id, crypto.PAYLOAD, row["payload"])
        unreadable = False
    except crypto.Unreadable as exc:
        CONTENT_UNREADABLE.inc()
        log.error("entry %s of room %s cannot be decrypted: %s", row["seq"], row["room_id"], exc)
        text, pinned, payload, unreadable = "", None, None, True
    message = messaging_pb2.Message(
        id=str(row["id"]),
        room_id=row["room_id"],
        seq=row["seq"],
        sender_participant_id=row["sender_participant_id"],
        sender_username=row["sender_username"],
        sender_is_host=row["sender_is_host"],
        sender_verified=row["sender_verified"],
        client_msg_id=row["client_msg_id"],
        text=text,
        reply_to_seq=row["reply_to_seq"] or 0,
        kind=kind,
        target_seq=row["target_seq"] or 0,
    )
    message.created_at.FromDatetime(row["created_at"])
    if row["media_id"] is not None:
        # The record itself is read with the page (media.fill); a deleted message's is gone.
        message.media.id = str(row["media_id"])
        message.media.room_id = row["room_id"]
        if row["deleted_at"] is not None:
            message.media.state = messaging_pb2.MEDIA_STATE_DELETED
    if kind == KIND_MESSAGE:
        message.state.deleted = row["deleted_at"] is not None
        message.state.deleted_by_host = row["deleted_by_host"]
        message.state.hidden = row["hidden_at"] is not None
        message.state.state_seq = row["state_seq"]
    elif kind == KIND_REACTION:
        message.emoji = row["emoji"] or ""
        message.added = bool(row["added"])
        message.state.reactions.extend(reaction_counts(_counts(row["reaction_counts"])))
        message.state.state_seq = row["seq"]
    elif kind == KIND_DELETION:
        message.state.deleted = True
        message.state.deleted_by_host = row["deleted_by_host"]
        message.state.state_seq = row["seq"]
    elif kind in (KIND_PIN, KIND_UNPIN):
        message.pinned_seqs[:] = list(row["pinned_seqs"] or ())
        if pinned is not None:
            message.pinned_message.ParseFromString(pinned)
    elif kind in (KIND_HIDE, KIND_RESTORE):
        message.state.hidden = kind == KIND_HIDE
        message.state.state_seq = row["seq"]
    elif kind == KIND_PARTICIPANT_FORGOTTEN:
        message.messages_erased = bool(row["added"])
    elif kind in PAYLOAD_KINDS and payload is not None:
        message.MergeFromString(payload)
    if unreadable:
        message.ClearField("media")
        message.state.deleted = True
    return message


def is_message(entry: messaging_pb2.Message) -> bool:
    """A chat message (entries stored before kinds existed are messages too), not a change."""
    return entry.kind in (messaging_pb2.ENTRY_KIND_UNSPECIFIED, KIND_MESSAGE)


def is_shown(entry: messaging_pb2.Message) -> bool:
    """An entry history pages list as an item of the room's conversation: a message or a tip."""
    return is_message(entry) or entry.kind == KIND_TIP


def carried_messages(entry: messaging_pb2.Message) -> list[messaging_pb2.Message]:
    """The copies of messages an entry carries (a host pin's, paid pins'), to bring to their state now."""
    copies = [entry.pinned_message] if entry.HasField("pinned_message") else []
    if entry.HasField("paid_pin") and entry.paid_pin.HasField("message"):
        copies.append(entry.paid_pin.message)
    copies += [pin.message for pin in entry.paid_pins if pin.HasField("message")]
    return copies


@dataclass(frozen=True, slots=True)
class SealedGroup:
    """MessageStore.seal_group's result: a room's group with its ids and _INSERT_GROUP's arguments."""

    room_id: str
    news: tuple[NewMessage, ...]
    ids: list[uuid.UUID]
    args: tuple[Any, ...]
    opener: keys.Opener


class MessageStore:
    def __init__(self, pool: asyncpg.Pool, *, commit_pool: asyncpg.Pool | None = None) -> None:
        self._pool = pool
        # Group commits (insert_sealed) run on connections of their own: COMMIT_SERVER_SETTINGS.
        self._commit_pool = pool if commit_pool is None else commit_pool

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def insert(self, new: NewMessage) -> messaging_pb2.Message:
        """Assign the room's next seq and store the message, atomically; a message with media locks,
        checks and links the media in the same transaction."""
        message_id = uuid.uuid4()
        sealer = await keys.keyring().sealer(new.room_id)
        args = (
            message_id,
            new.room_id,
            new.sender_participant_id,
            new.sender_username,
            new.sender_is_host,
            new.sender_verified,
            new.client_msg_id,
            sealer.text(str(message_id), crypto.TEXT, new.text),
            new.reply_to_seq or None,
            new.media_id,
        )
        try:
            if new.media_id is None:
                return to_message(await self._pool.fetchrow(_INSERT, *args), sealer.opener(), text=new.text)
            async with self._pool.acquire() as connection, connection.transaction():
                # The media row first, then the room's counter: the order every media change takes.
                await media.lock_for_message(
                    connection, new.room_id, new.sender_participant_id, new.media_id, new.media_kinds
                )
                message = to_message(
                    await connection.fetchrow(_INSERT, *args), sealer.opener(), text=new.text
                )
                await media.link(connection, new.room_id, new.media_id, message.seq)
                await media.fill(connection, new.room_id, [message])
                return message
        except asyncpg.UniqueViolationError as exc:
            if constraint_of(exc) == CLIENT_MSG_ID_CONSTRAINT:
                raise DuplicateClientMsgId from exc
            raise

    async def insert_group(
        self, room_id: str, news: Sequence[NewMessage]
    ) -> list[messaging_pb2.Message | None]:
        """Store messages without media of one room in one statement (see _INSERT_GROUP): consecutive
        seqs in the order given. One answer per message: the stored message, or None when the sender
        already sent that client_msg_id (the caller answers with the original). The group must not
        hold two messages of one sender with the same client_msg_id."""
        if not news:
            return []
        return (await self.insert_sealed([await self.seal_group(room_id, news)]))[0]

    async def seal_group(self, room_id: str, news: Sequence[NewMessage]) -> SealedGroup:
        """A group of one room ready for insert_sealed: ids given, texts sealed with the room's key."""
        sealer = await keys.keyring().sealer(room_id)
        ids = [uuid.uuid4() for _ in news]
        args = (
            room_id,
            ids,
            [new.sender_participant_id for new in news],
            [new.sender_username for new in news],
            [new.sender_is_host for new in news],
            [new.sender_verified for new in news],
            [new.client_msg_id for new in news],
            [sealer.text(str(id_), crypto.TEXT, new.text) for id_, new in zip(ids, news, strict=True)],
            [new.reply_to_seq or None for new in news],
        )
        return SealedGroup(room_id, tuple(news), ids, args, sealer.opener())

    async def insert_sealed(self, groups: Sequence[SealedGroup]) -> list[list[messaging_pb2.Message | None]]:
        """Store groups of different rooms as insert_group does, in ONE transaction and one round trip
        (the statement executed once per group, pipelined): all of them, or none when one fails."""
        if len(groups) == 1:
            rows = await self._commit_pool.fetch(_INSERT_GROUP, *groups[0].args)
        else:
            async with self._commit_pool.acquire() as connection:
                rows = await connection.fetchmany(_INSERT_GROUP, [group.args for group in groups])
        by_id = {row["id"]: row for row in rows}
        answers: list[list[messaging_pb2.Message | None]] = []
        for group in groups:
            found: list[messaging_pb2.Message | None] = []
            for id_, new in zip(group.ids, group.news, strict=True):
                row = by_id.get(id_)
                found.append(None if row is None else to_message(row, group.opener, text=new.text))
            answers.append(found)
        return answers

    async def find_by_client_msg_ids(
        self, room_id: str, keys_: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], messaging_pb2.Message]:
        """The stored messages of a room by (sender, client_msg_id), those that exist, in one read."""
        if not keys_:
            return {}
        rows = await self._pool.fetch(
            _BY_CLIENT_MSG_IDS,
            room_id,
            [sender for sender, _ in keys_],
            [client_msg_id for _, client_msg_id in keys_],
        )
        messages = await self._with_media(room_id, await read_entries(rows))
        return {(m.sender_participant_id, m.client_msg_id): m for m in messages}

    async def existing_seqs(self, room_id: str, seqs: Sequence[int]) -> set[int]:
        """Which of `seqs` are messages of the room (reply targets), in one read."""
        if not seqs:
            return set()
        rows = await self._pool.fetch(
            "SELECT seq FROM messages WHERE room_id = $1 AND seq = ANY($2::bigint[]) AND kind = 1",
            room_id,
            list(seqs),
        )
        return {int(row["seq"]) for row in rows}

    async def find_by_client_msg_id(
        self, room_id: str, sender_participant_id: str, client_msg_id: str
    ) -> messaging_pb2.Message | None:
        row = await self._pool.fetchrow(
            _BY_CLIENT_MSG_ID,
            room_id,
            sender_participant_id,
            client_msg_id,
        )
        return None if row is None else (await self._with_media(room_id, [await read_entry(row)]))[0]

    async def seq_exists(self, room_id: str, seq: int) -> bool:
        found = await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE room_id = $1 AND seq = $2 AND kind = 1)",
            room_id,
            seq,
        )
        return bool(found)

    async def last_seq(self, room_id: str) -> int:
        value = await self._pool.fetchval("SELECT last_seq FROM room_counters WHERE room_id = $1", room_id)
        return int(value or 0)

    async def last_seqs(self, room_ids: Sequence[str]) -> dict[str, int]:
        """The last seq of each room; rooms without messages get 0."""
        rows = await self._pool.fetch(
            "SELECT room_id, last_seq FROM room_counters WHERE room_id = ANY($1::text[])", list(room_ids)
        )
        found = {row["room_id"]: int(row["last_seq"]) for row in rows}
        return {room_id: found.get(room_id, 0) for room_id in room_ids}

    async def range(self, room_id: str, low: int, high: int) -> list[messaging_pb2.Message]:
        """Messages with low <= seq <= high, ascending."""
        rows = await self._pool.fetch(
            _RANGE,
            room_id,
            low,
            high,
        )
        return await self._with_media(room_id, await read_entries(rows))

    async def newest(self, room_id: str, count: int) -> list[messaging_pb2.Message]:
        """The room's newest `count` messages, ascending."""
        rows = await self._pool.fetch(
            _NEWEST,
            room_id,
            count,
        )
        return await self._with_media(room_id, await read_entries(list(reversed(rows))))

    async def messages_at(self, room_id: str, seqs: Sequence[int]) -> list[messaging_pb2.Message]:
        """The messages (not changes) among `seqs`, ascending."""
        if not seqs:
            return []
        rows = await self._pool.fetch(_AT, room_id, list(seqs))
        return await self._with_media(room_id, await read_entries(rows))

    async def _with_media(
        self, room_id: str, messages: list[messaging_pb2.Message]
    ) -> list[messaging_pb2.Message]:
        await media.fill(self._pool, room_id, messages)
        return messages

    async def current_states(
        self, room_id: str, seqs: Sequence[int], viewer: str
    ) -> dict[int, tuple[messaging_pb2.MessageState, list[str]]]:
        """For the messages among `seqs` that changes touched: their state now and the viewer's emojis."""
        if not seqs:
            return {}
        rows = await self._pool.fetch(_CURRENT_STATES, room_id, list(seqs), viewer)
        states: dict[int, tuple[messaging_pb2.MessageState, list[str]]] = {}
        for row in rows:
            state = messaging_pb2.MessageState(
                deleted=row["deleted"],
                deleted_by_host=row["deleted_by_host"],
                hidden=row["hidden"],
                reactions=reaction_counts(_counts(row["counts"])),
                state_seq=row["state_seq"],
            )
            mine = set(row["mine"] or ())
            states[row["seq"]] = (state, [emoji for emoji in REACTIONS if emoji in mine])
        return states


# Only messages some change touched (state_seq > 0); the rest are as they were sent. The reactions
# name the room as a parameter, so that their one partition is chosen when the statement starts.
_CURRENT_STATES = """
SELECT m.seq, m.deleted_at IS NOT NULL AS deleted, m.deleted_by_host, m.hidden_at IS NOT NULL AS hidden,
       m.state_seq,
       (SELECT jsonb_object_agg(x.emoji, x.n) FROM (
            SELECT r.emoji, count(*) AS n FROM reactions r
            WHERE r.room_id = $1 AND r.message_seq = m.seq GROUP BY r.emoji
        ) AS x) AS counts,
       (SELECT array_agg(r.emoji) FROM reactions r
        WHERE r.room_id = $1 AND r.message_seq = m.seq AND r.participant_id = $3) AS mine
FROM messages m
WHERE m.room_id = $1 AND m.seq = ANY($2::bigint[]) AND m.kind = 1 AND m.state_seq > 0
"""

"""Reports of messages and hiding them pending review.

Any participant reports a message once (a second report of theirs changes nothing). When
`REPORTS_TO_HIDE` distinct participants hold open reports on a message, it is hidden: a HIDE entry of
the log, appended in the transaction of the report that crossed the line. The entry names nobody (its
sender fields are empty), so reporters stay known to the host alone. The host resolves a message's
reports: restore (a RESTORE entry carrying the text back, when it was hidden), delete it, or dismiss
them; each closes the open reports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.errors import FailedPrecondition, InvalidArgument, NotFound
from chatpop_messaging import crypto, keys, validation
from chatpop_messaging.store import (
    ENTRY_COLUMNS,
    KIND_HIDE,
    KIND_RESTORE,
    Actor,
    Change,
    append_change,
    lock_target,
    read_entries,
    read_entry,
)

REPORT_TEXT_MAX = 500
REASONS = frozenset(
    {
        messaging_pb2.REPORT_REASON_SPAM,
        messaging_pb2.REPORT_REASON_HARASSMENT,
        messaging_pb2.REPORT_REASON_HATE,
        messaging_pb2.REPORT_REASON_SEXUAL,
        messaging_pb2.REPORT_REASON_VIOLENCE,
        messaging_pb2.REPORT_REASON_OTHER,
    }
)
# Who appends a HIDE entry: nobody in particular, so the log never tells who reported.
_NOBODY = Actor(participant_id="", username="", is_host=False, verified=False)

_OPEN_REPORTERS = "SELECT count(*) FROM reports WHERE room_id = $1 AND message_seq = $2 AND closed_at IS NULL"
_CLOSE = "UPDATE reports SET closed_at = now() WHERE room_id = $1 AND message_seq = $2 AND closed_at IS NULL"
_QUEUE = """
SELECT DISTINCT message_seq FROM reports
WHERE room_id = $1 AND closed_at IS NULL AND message_seq < $2
ORDER BY message_seq DESC LIMIT $3
"""
_QUEUED_MESSAGES = (
    f"SELECT {ENTRY_COLUMNS} FROM messages WHERE room_id = $1 AND seq = ANY($2::bigint[]) AND kind = 1"  # noqa: S608
)
_QUEUED_REPORTS = """
SELECT message_seq, reporter_participant_id, reporter_username, reason, text, created_at FROM reports
WHERE room_id = $1 AND message_seq = ANY($2::bigint[]) AND closed_at IS NULL
ORDER BY created_at, reporter_participant_id
"""


# Called inside the transaction that resolves a message's reports, with its connection and how many
# reports it closed: what must be recorded with the resolution (its audit event) commits with it.
OnResolved = Callable[[asyncpg.Connection, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ReportResult:
    created: bool
    # The HIDE entry, when this report hid the message.
    entry: messaging_pb2.Message | None
    hidden: bool


def valid_report(reason: int, text: str) -> str:
    """The report's text as stored; InvalidArgument for an unknown reason or a text out of bounds."""
    if reason not in REASONS:
        raise InvalidArgument(
            "The reason must be spam, harassment, hate, sexual, violence or other.", code="invalid_reason"
        )
    text = text.strip()
    if not text:
        return ""
    if len(text) > REPORT_TEXT_MAX:
        raise InvalidArgument(
            f"The report is longer than {REPORT_TEXT_MAX} characters.", code="report_too_long"
        )
    return validation.message_text(text, REPORT_TEXT_MAX)


async def seal_report(room_id: str, message_seq: int, reporter_participant_id: str, text: str) -> bytes:
    """The stored form of a report's text."""
    if not text:
        return b""
    sealer = await keys.keyring().sealer(room_id)
    return sealer.text(crypto.report_id(message_seq, reporter_participant_id), crypto.REPORT_TEXT, text)


def _report_text(opener: keys.Opener, room_id: str, row: asyncpg.Record) -> str:
    try:
        return opener.text(
            crypto.report_id(row["message_seq"], row["reporter_participant_id"]),
            crypto.REPORT_TEXT,
            row["text"],
        )
    except crypto.Unreadable:
        return ""


class Reports:
    def __init__(self, pool: asyncpg.Pool, *, hide_at: int) -> None:
        self._pool = pool
        self._hide_at = hide_at

    async def report(
        self, room_id: str, target_seq: int, actor: Actor, reason: int, text: str
    ) -> ReportResult:
        async with self._pool.acquire() as connection, connection.transaction():
            target = await lock_target(connection, room_id, target_seq)
            if target is None:
                raise NotFound("There is no such message in this room.", code="message_not_found")
            if target["deleted_at"] is not None:
                raise FailedPrecondition("This message was deleted.", code="message_deleted")
            if target["sender_participant_id"] == actor.participant_id:
                raise FailedPrecondition("You cannot report your own message.", code="own_message")
            hidden = target["hidden_at"] is not None
            status = await connection.execute(
                "INSERT INTO reports (room_id, message_seq, reporter_participant_id, reporter_username, "
                "reason, text) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                room_id,
                target_seq,
                actor.participant_id,
                actor.username,
                reason,
                await seal_report(room_id, target_seq, actor.participant_id, text),
            )
            if status != "INSERT 0 1":
                return ReportResult(False, None, hidden)
            if hidden or await connection.fetchval(_OPEN_REPORTERS, room_id, target_seq) < self._hide_at:
                return ReportResult(True, None, hidden)
            entry = await append_change(
                connection, room_id, _NOBODY, Change(kind=KIND_HIDE, target_seq=target_seq)
            )
            await connection.execute(
                "UPDATE messages SET hidden_at = now() WHERE room_id = $1 AND seq = $2", room_id, target_seq
            )
        return ReportResult(True, entry, True)

    async def queue(self, room_id: str, before_seq: int, limit: int) -> messaging_pb2.ListReportsResponse:
        """Messages with open reports, newest first, each with its reports (for the host)."""
        async with self._pool.acquire() as connection:
            seqs = [
                int(row["message_seq"])
                for row in await connection.fetch(_QUEUE, room_id, before_seq or 2**62, limit + 1)
            ]
            has_more = len(seqs) > limit
            seqs = seqs[:limit]
            messages = {
                message.seq: message
                for message in await read_entries(
                    await connection.fetch(_QUEUED_MESSAGES, room_id, seqs), connection=connection
                )
            }
            reports = await connection.fetch(_QUEUED_REPORTS, room_id, seqs)
            opener = await keys.keyring().opener(
                room_id, [row["text"] for row in reports], connection=connection
            )
        response = messaging_pb2.ListReportsResponse(has_more=has_more)
        items: dict[int, messaging_pb2.ReportedMessage] = {}
        for seq in seqs:
            if seq in messages:
                items[seq] = response.items.add(message=messages[seq])
        for row in reports:
            item = items.get(int(row["message_seq"]))
            if item is None:
                continue
            report = item.reports.add(
                reporter_participant_id=row["reporter_participant_id"],
                reporter_username=row["reporter_username"],
                reason=row["reason"],
                text=_report_text(opener, room_id, row),
            )
            report.created_at.FromDatetime(row["created_at"])
        return response

    async def restore(
        self, room_id: str, target_seq: int, actor: Actor, *, on_resolved: OnResolved | None = None
    ) -> tuple[messaging_pb2.Message | None, int]:
        """Close the message's open reports and show it again when it was hidden: the RESTORE entry (or
        None) and how many reports were closed. `on_resolved` runs when either happened."""
        async with self._pool.acquire() as connection, connection.transaction():
            target = await lock_target(connection, room_id, target_seq)
            if target is None:
                raise NotFound("There is no such message in this room.", code="message_not_found")
            closed = _count(await connection.execute(_CLOSE, room_id, target_seq))
            entry = None
            if target["hidden_at"] is not None:
                entry = await append_change(
                    connection,
                    room_id,
                    actor,
                    Change(
                        kind=KIND_RESTORE,
                        target_seq=target_seq,
                        text=(await read_entry(target, connection=connection)).text,
                    ),
                )
                await connection.execute(
                    "UPDATE messages SET hidden_at = NULL WHERE room_id = $1 AND seq = $2",
                    room_id,
                    target_seq,
                )
            if on_resolved is not None and (closed or entry is not None):
                await on_resolved(connection, closed)
        return entry, closed

    async def close(
        self, room_id: str, target_seq: int, *, changed: bool = False, on_resolved: OnResolved | None = None
    ) -> int:
        """Close the message's open reports and leave it as it is (dismissed, or deleted already).
        `on_resolved` runs when reports were closed or the caller `changed` the message already."""
        async with self._pool.acquire() as connection, connection.transaction():
            if not await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE room_id = $1 AND seq = $2 AND kind = 1)",
                room_id,
                target_seq,
            ):
                raise NotFound("There is no such message in this room.", code="message_not_found")
            closed = _count(await connection.execute(_CLOSE, room_id, target_seq))
            if on_resolved is not None and (closed or changed):
                await on_resolved(connection, closed)
        return closed


def _count(status: str) -> int:
    """The row count of an UPDATE's status ("UPDATE 3")."""
    return int(status.rsplit(" ", 1)[-1])

"""Paid pins (Super-Chat style) and tips: what payments fulfils in the room once a payment succeeded.

A paid pin stands until its `expires_at` and needs no entry to drop off; the top pin is the live one
with the highest amount. Every change of paid pins is an entry of the room's log carrying the pin it
changed and the room's live paid pins right after it (absolute state): PAID_PIN when one is granted
or extended, PAID_PIN_REMOVED when one is taken down before its time (by the host or an admin, when
its buyer is banned, when its message is deleted). Both kinds name the pin's buyer in sender_*.

Granting is decided under the room's board row lock (pins.py), held until the entry is appended in the
same transaction, so of two concurrent outbids exactly one wins; the rules are chatpop_common.pricing's.
Locks are always taken in one order: the target message's row, the board row, the seq counter.

Each paid order is applied once: its outcome (granted or why not, the entry it appended) is recorded in
`paid_orders` in the transaction that decides it, and asking again answers that outcome, whatever the
room looks like by then. A tip is a TIP entry naming the tipper, recorded the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common import pricing
from chatpop_common.errors import FailedPrecondition, InvalidArgument, NotFound
from chatpop_messaging import crypto, keys
from chatpop_messaging.pins import lock_board
from chatpop_messaging.store import (
    CLIENT_MSG_ID_CONSTRAINT,
    ENTRY_COLUMNS,
    KIND_PAID_PIN,
    KIND_PAID_PIN_REMOVED,
    KIND_TIP,
    Actor,
    Change,
    append_change,
    constraint_of,
    lock_target,
    reaction_counts,
    read_entries,
    read_entry,
    to_message,
)

GRANTED = messaging_pb2.PAID_PIN_OUTCOME_GRANTED
OUTBID = messaging_pb2.PAID_PIN_OUTCOME_OUTBID
NOT_TOP = messaging_pb2.PAID_PIN_OUTCOME_NOT_TOP
MESSAGE_GONE = messaging_pb2.PAID_PIN_OUTCOME_MESSAGE_GONE
BANNED = messaging_pb2.PAID_PIN_OUTCOME_BANNED
_OUTCOMES = {outcome: outcome for outcome in (GRANTED, OUTBID, NOT_TOP, MESSAGE_GONE, BANNED)}

# What a recorded order was (paid_orders.kind).
ORDER_PIN = 1
ORDER_EXTENSION = 2
ORDER_TIP = 3
# A tip's recorded outcome: posted.
_TIP_POSTED = 1

# Why a pin came down before its time (PaidPin.removed_reason).
REMOVED_BY_HOST = "host"
REMOVED_BANNED = "banned"
REMOVED_MESSAGE_DELETED = "message_deleted"

_PIN_COLUMNS = (
    "id, target_seq, participant_id, username, amount_cents, currency, started_at, expires_at, "
    "granted_seq, removed_at, removed_reason"
)
_PIN = f"SELECT {_PIN_COLUMNS} FROM paid_pins WHERE room_id = $1 AND id = $2"  # noqa: S608
# Top first: every new pin had to outbid the top, so the highest amount is the newest winner.
_LIVE = f"""
SELECT {_PIN_COLUMNS} FROM paid_pins
WHERE room_id = $1 AND removed_at IS NULL AND expires_at > $2
ORDER BY amount_cents DESC, started_at DESC
"""  # noqa: S608 - constant column list
_INSERT_PIN = """
INSERT INTO paid_pins (room_id, id, target_seq, participant_id, username, amount_cents, currency,
                       started_at, expires_at, granted_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::timestamptz,
        $8::timestamptz + make_interval(mins => $9::int), 0)
"""
_EXTEND_PIN = """
UPDATE paid_pins
SET amount_cents = amount_cents + $3, expires_at = expires_at + make_interval(mins => $4::int)
WHERE room_id = $1 AND id = $2
"""
_REMOVE_PIN = "UPDATE paid_pins SET removed_at = $3, removed_reason = $4 WHERE room_id = $1 AND id = $2"
_STATE_SEQ = "UPDATE room_boards SET paid_pins_state_seq = $2 WHERE room_id = $1"
_RECORDED = "SELECT kind, outcome, entry_seq, pin_id FROM paid_orders WHERE room_id = $1 AND order_id = $2"
_RECORD = """
INSERT INTO paid_orders (room_id, order_id, kind, outcome, participant_id, amount_cents, entry_seq, pin_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_ENTRY = f"SELECT {ENTRY_COLUMNS} FROM messages WHERE room_id = $1 AND seq = $2"  # noqa: S608
# A ban entry of the participant after the seq read before rooms was asked about them.
_BANNED_SINCE = f"""
SELECT EXISTS (SELECT 1 FROM messages
               WHERE room_id = $1 AND seq > $2 AND kind = {messaging_pb2.ENTRY_KIND_BAN}
                 AND sender_participant_id = $3)
"""  # noqa: S608 - constant kind
_MESSAGES = f"""
SELECT {ENTRY_COLUMNS} FROM messages WHERE room_id = $1 AND seq = ANY($2::bigint[]) AND kind = 1
"""  # noqa: S608 - constant column list
_COUNTS = """
SELECT message_seq, emoji, count(*) AS n FROM reactions
WHERE room_id = $1 AND message_seq = ANY($2::bigint[]) GROUP BY message_seq, emoji
"""
_NOW = "SELECT clock_timestamp()"
_STANDING_ON = """
SELECT EXISTS (SELECT 1 FROM paid_pins WHERE room_id = $1 AND target_seq = $2 AND removed_at IS NULL)
"""


@dataclass(frozen=True, slots=True)
class PinOrder:
    """A paid order for a new pin (`target_seq`) or an extension of a pin (`extend_pin_id`)."""

    order_id: str
    room_id: str
    participant_id: str
    amount_cents: int
    currency: str
    target_seq: int = 0
    extend_pin_id: str = ""

    @property
    def kind(self) -> int:
        return ORDER_EXTENSION if self.extend_pin_id else ORDER_PIN


@dataclass(frozen=True, slots=True)
class TipOrder:
    order_id: str
    room_id: str
    participant_id: str
    amount_cents: int
    currency: str
    note: str


@dataclass(frozen=True, slots=True)
class PinOutcome:
    outcome: messaging_pb2.PaidPinOutcome
    # When granted: the PAID_PIN entry and the pin right after it.
    entry: messaging_pb2.Message | None
    pin: messaging_pb2.PaidPin | None
    # False when the order had been applied before.
    created: bool


@dataclass(frozen=True, slots=True)
class Removals:
    """What taking paid pins down appended, and earlier entries rewritten without a deleted text."""

    entries: tuple[messaging_pb2.Message, ...] = ()
    redacted: tuple[messaging_pb2.Message, ...] = ()


def pin_order(
    request: messaging_pb2.ApplyPaidPinRequest,
    order_id: str,
    room_id: str,
    participant_id: str,
    currency: str,
) -> PinOrder:
    """The order, checked: a tier's amount, and either a message to pin or a pin to extend."""
    if not pricing.is_tier(request.amount_cents):
        raise InvalidArgument("amount_cents must be one of the paid pin tiers.", code="invalid_amount")
    if bool(request.target_seq) == bool(request.extend_pin_id):
        raise InvalidArgument(
            "Name either a message to pin (target_seq) or a pin to extend (extend_pin_id).",
            code="invalid_pin_order",
        )
    if request.target_seq < 0:
        raise InvalidArgument("target_seq must name a message (1 or more).", code="invalid_target_seq")
    return PinOrder(
        order_id=order_id,
        room_id=room_id,
        participant_id=participant_id,
        amount_cents=request.amount_cents,
        currency=currency,
        target_seq=request.target_seq,
        extend_pin_id=request.extend_pin_id,
    )


def _paid_pin(row: asyncpg.Record, message: messaging_pb2.Message | None) -> messaging_pb2.PaidPin:
    pin = messaging_pb2.PaidPin(
        id=row["id"],
        target_seq=row["target_seq"],
        participant_id=row["participant_id"],
        username=row["username"],
        amount_cents=row["amount_cents"],
        currency=row["currency"],
        removed_reason=row["removed_reason"] or "",
    )
    pin.started_at.FromDatetime(row["started_at"])
    pin.expires_at.FromDatetime(row["expires_at"])
    if message is not None:
        pin.message.CopyFrom(message)
    return pin


async def _copies(
    connection: asyncpg.Connection, room_id: str, seqs: Sequence[int]
) -> dict[int, messaging_pb2.Message]:
    """The messages at `seqs` as they stand now, reactions counted; a hidden one without its text."""
    if not seqs:
        return {}
    wanted = sorted(set(seqs))
    copies = {
        message.seq: message
        for message in await read_entries(
            await connection.fetch(_MESSAGES, room_id, wanted), connection=connection
        )
    }
    counts: dict[int, dict[str, int]] = {}
    for row in await connection.fetch(_COUNTS, room_id, wanted):
        counts.setdefault(row["message_seq"], {})[row["emoji"]] = int(row["n"])
    for seq, message in copies.items():
        message.state.reactions.extend(reaction_counts(counts.get(seq, {})))
        if message.state.hidden:
            message.text = ""
    return copies


async def _pins(
    connection: asyncpg.Connection, room_id: str, rows: Sequence[asyncpg.Record]
) -> list[messaging_pb2.PaidPin]:
    copies = await _copies(connection, room_id, [row["target_seq"] for row in rows])
    return [_paid_pin(row, copies.get(row["target_seq"])) for row in rows]


async def _now(connection: asyncpg.Connection) -> dt.datetime:
    """The time of a decision: the clock once the locks are held (not the transaction's start)."""
    now: dt.datetime = await connection.fetchval(_NOW)
    return now


async def _live(connection: asyncpg.Connection, room_id: str, now: dt.datetime) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await connection.fetch(_LIVE, room_id, now)
    return rows


async def _append(
    connection: asyncpg.Connection,
    room_id: str,
    kind: int,
    changed: asyncpg.Record,
    now: dt.datetime,
) -> messaging_pb2.Message:
    """Append the entry of a change to the pin in `changed` (read after the change), carrying the live
    pins after it, and make it the board's paid pins state."""
    live = await _live(connection, room_id, now)
    pins = await _pins(connection, room_id, [changed, *live])
    pin, after = pins[0], pins[1:]
    buyer = Actor(
        participant_id=changed["participant_id"], username=changed["username"], is_host=False, verified=False
    )
    entry = await append_change(
        connection,
        room_id,
        buyer,
        Change(
            kind=kind,
            target_seq=changed["target_seq"],
            payload=messaging_pb2.Message(paid_pin=pin, paid_pins=after),
            touches_target=False,
        ),
    )
    await connection.execute(_STATE_SEQ, room_id, entry.seq)
    return entry


async def _take_down(
    connection: asyncpg.Connection,
    room_id: str,
    rows: Sequence[asyncpg.Record],
    reason: str,
    now: dt.datetime,
) -> list[messaging_pb2.Message]:
    """Take the pins in `rows` down, one PAID_PIN_REMOVED entry each (board locked by the caller)."""
    entries = []
    for row in rows:
        await connection.execute(_REMOVE_PIN, room_id, row["id"], now, reason)
        changed = await connection.fetchrow(_PIN, room_id, row["id"])
        entries.append(await _append(connection, room_id, KIND_PAID_PIN_REMOVED, changed, now))
    return entries


async def _answer(connection: asyncpg.Connection, room_id: str, recorded: asyncpg.Record) -> PinOutcome:
    """The outcome recorded for an order applied before."""
    if recorded["kind"] == ORDER_TIP:
        raise FailedPrecondition("This order was a tip, not a pin.", code="order_kind_mismatch")
    entry = None
    if recorded["entry_seq"] is not None:
        row = await connection.fetchrow(_ENTRY, room_id, recorded["entry_seq"])
        entry = await read_entry(row, connection=connection) if row is not None else None
    pin = entry.paid_pin if entry is not None and entry.HasField("paid_pin") else None
    return PinOutcome(_OUTCOMES[recorded["outcome"]], entry, pin, created=False)


class PaidPins:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def recorded(self, room_id: str, order_id: str) -> PinOutcome | None:
        """The outcome of a pin order applied before, or None (checked again under the lock)."""
        async with self._pool.acquire() as connection:
            recorded = await connection.fetchrow(_RECORDED, room_id, order_id)
            return None if recorded is None else await _answer(connection, room_id, recorded)

    async def apply(self, order: PinOrder, buyer: Actor, *, banned: bool, seen_seq: int) -> PinOutcome:
        """Decide a paid pin order against the room's pins now and record the outcome.

        `banned` is what rooms said of the buyer after the room's log reached `seen_seq`; a ban entry
        of theirs appended since counts too (it may have come after rooms answered)."""
        room_id = order.room_id
        async with self._pool.acquire() as connection, connection.transaction():
            extended = None
            target_seq = order.target_seq
            if order.extend_pin_id:
                extended = await connection.fetchrow(_PIN, room_id, order.extend_pin_id)
                target_seq = extended["target_seq"] if extended is not None else 0
            target = await lock_target(connection, room_id, target_seq) if target_seq else None
            await lock_board(connection, room_id)
            recorded = await connection.fetchrow(_RECORDED, room_id, order.order_id)
            if recorded is not None:
                return await _answer(connection, room_id, recorded)
            now = await _now(connection)
            live = await _live(connection, room_id, now)
            top = live[0] if live else None
            outcome = GRANTED
            if banned or await connection.fetchval(_BANNED_SINCE, room_id, seen_seq, order.participant_id):
                outcome = BANNED
            elif order.extend_pin_id:
                if (
                    extended is None
                    or extended["participant_id"] != order.participant_id
                    or top is None
                    or top["id"] != extended["id"]
                ):
                    outcome = NOT_TOP
                elif extended["currency"] != order.currency:
                    raise InvalidArgument(
                        "The extension's currency is not the pin's.", code="invalid_currency"
                    )
                elif target is None or target["hidden_at"] is not None:
                    outcome = MESSAGE_GONE
            elif target is None or target["deleted_at"] is not None or target["hidden_at"] is not None:
                outcome = MESSAGE_GONE
            elif not pricing.outbids(order.amount_cents, top["amount_cents"] if top else None):
                outcome = OUTBID
            if outcome != GRANTED:
                await connection.execute(
                    _RECORD,
                    room_id,
                    order.order_id,
                    order.kind,
                    outcome,
                    order.participant_id,
                    order.amount_cents,
                    None,
                    None,
                )
                return PinOutcome(outcome, None, None, created=True)

            pin_id = order.extend_pin_id or order.order_id
            if order.extend_pin_id:
                minutes = pricing.tier_minutes(order.amount_cents)
                await connection.execute(_EXTEND_PIN, room_id, pin_id, order.amount_cents, minutes)
            else:
                await connection.execute(
                    _INSERT_PIN,
                    room_id,
                    pin_id,
                    target_seq,
                    order.participant_id,
                    buyer.username,
                    order.amount_cents,
                    order.currency,
                    now,
                    pricing.new_pin_minutes(order.amount_cents),
                )
            changed = await connection.fetchrow(_PIN, room_id, pin_id)
            entry = await _append(connection, room_id, KIND_PAID_PIN, changed, now)
            if not order.extend_pin_id:
                await connection.execute(
                    "UPDATE paid_pins SET granted_seq = $3 WHERE room_id = $1 AND id = $2",
                    room_id,
                    pin_id,
                    entry.seq,
                )
            await connection.execute(
                _RECORD,
                room_id,
                order.order_id,
                order.kind,
                GRANTED,
                order.participant_id,
                order.amount_cents,
                entry.seq,
                pin_id,
            )
        return PinOutcome(GRANTED, entry, entry.paid_pin, created=True)

    async def recorded_tip(self, room_id: str, order_id: str) -> messaging_pb2.Message | None:
        """The TIP entry of a tip order posted before, or None."""
        async with self._pool.acquire() as connection:
            recorded = await connection.fetchrow(_RECORDED, room_id, order_id)
            return None if recorded is None else await self._recorded_tip(connection, room_id, recorded)

    async def tip(self, order: TipOrder, tipper: Actor) -> tuple[messaging_pb2.Message, bool]:
        """Post a paid tip as a TIP entry, once per order: the entry, and whether this call posted it."""
        room_id = order.room_id
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                recorded = await connection.fetchrow(_RECORDED, room_id, order.order_id)
                if recorded is not None:
                    return await self._recorded_tip(connection, room_id, recorded), False
                tip = messaging_pb2.Tip(
                    order_id=order.order_id,
                    amount_cents=order.amount_cents,
                    currency=order.currency,
                    note=order.note,
                )
                entry = await append_change(
                    connection,
                    room_id,
                    tipper,
                    Change(
                        kind=KIND_TIP,
                        target_seq=0,
                        payload=messaging_pb2.Message(tip=tip),
                        key=f"tip:{order.order_id}",
                        touches_target=False,
                    ),
                )
                await connection.execute(
                    _RECORD,
                    room_id,
                    order.order_id,
                    ORDER_TIP,
                    _TIP_POSTED,
                    order.participant_id,
                    order.amount_cents,
                    entry.seq,
                    None,
                )
        except asyncpg.UniqueViolationError as exc:
            # A concurrent retry posted it first; this whole transaction (its seq too) rolled back.
            if constraint_of(exc) not in (CLIENT_MSG_ID_CONSTRAINT, "paid_orders_pkey"):
                raise
            async with self._pool.acquire() as connection:
                recorded = await connection.fetchrow(_RECORDED, room_id, order.order_id)
                if recorded is None:
                    raise
                return await self._recorded_tip(connection, room_id, recorded), False
        return entry, True

    @staticmethod
    async def _recorded_tip(
        connection: asyncpg.Connection, room_id: str, recorded: asyncpg.Record
    ) -> messaging_pb2.Message:
        if recorded["kind"] != ORDER_TIP:
            raise FailedPrecondition("This order was a pin, not a tip.", code="order_kind_mismatch")
        row = await connection.fetchrow(_ENTRY, room_id, recorded["entry_seq"])
        return await read_entry(row, connection=connection)

    async def remove(self, room_id: str, pin_id: str) -> messaging_pb2.Message | None:
        """Take a pin down as the room's host (or an admin): its PAID_PIN_REMOVED entry, or None when
        it had expired or come down already. No refund follows: the pin was granted."""
        async with self._pool.acquire() as connection, connection.transaction():
            found = await connection.fetchrow(_PIN, room_id, pin_id)
            if found is None:
                raise NotFound("There is no such paid pin in this room.", code="paid_pin_not_found")
            await lock_target(connection, room_id, found["target_seq"])
            await lock_board(connection, room_id)
            now = await _now(connection)
            pin = await connection.fetchrow(_PIN, room_id, pin_id)
            if pin["removed_at"] is not None or pin["expires_at"] <= now:
                return None
            entries = await _take_down(connection, room_id, [pin], REMOVED_BY_HOST, now)
        return entries[0]

    async def live(self, room_id: str) -> tuple[list[messaging_pb2.PaidPin], int]:
        """The room's live paid pins, top first, each message as it now stands, and the seq of the
        last entry that changed them, read together."""
        async with (
            self._pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            state_seq = await connection.fetchval(
                "SELECT paid_pins_state_seq FROM room_boards WHERE room_id = $1", room_id
            )
            rows = await _live(connection, room_id, await _now(connection))
            pins = await _pins(connection, room_id, rows)
        return pins, int(state_seq or 0)

    async def quote(self, room_id: str, participant_id: str) -> messaging_pb2.GetPaidPinQuoteResponse:
        """What a paid pin takes now: the live pins, the lowest tier that outbids the top (0 when no
        tier does), and the caller's pin when it is the top one."""
        pins, _ = await self.live(room_id)
        top = pins[0] if pins else None
        return messaging_pb2.GetPaidPinQuoteResponse(
            paid_pins=pins,
            min_cents=pricing.min_outbid(top.amount_cents if top else None) or 0,
            my_top_pin_id=top.id if top and participant_id and top.participant_id == participant_id else "",
        )


# --- what bans and deletions do to paid pins -------------------------------------------------------


class PaidPinsOnBan:
    """A ban hook (bans.py): a banned participant's live paid pins come down with the ban."""

    async def lock(self, connection: asyncpg.Connection, room_id: str, participant_id: str) -> None:
        await lock_board(connection, room_id)

    async def banned(
        self, connection: asyncpg.Connection, room_id: str, participant_id: str
    ) -> list[messaging_pb2.Message]:
        now = await _now(connection)
        theirs = [
            row for row in await _live(connection, room_id, now) if row["participant_id"] == participant_id
        ]
        return await _take_down(connection, room_id, theirs, REMOVED_BANNED, now)


async def lock_if_paid_pinned(connection: asyncpg.Connection, room_id: str, seq: int) -> bool:
    """For a deletion holding the message's row: lock the board, before the seq counter, when a paid
    pin not taken down names the message (entries written meanwhile may carry its text). True if so."""
    pinned = await connection.fetchval(_STANDING_ON, room_id, seq)
    if pinned:
        await lock_board(connection, room_id)
    return bool(pinned)


async def on_deleted(
    connection: asyncpg.Connection, room_id: str, tombstone: messaging_pb2.Message
) -> Removals:
    """After a message was deleted (its row is the tombstone now): its live paid pins come down, and
    every paid pin entry that carried its text carries the tombstone instead."""
    seq = tombstone.seq
    first = await connection.fetchval(
        "SELECT min(granted_seq) FROM paid_pins WHERE room_id = $1 AND target_seq = $2 AND granted_seq > 0",
        room_id,
        seq,
    )
    if first is None:
        return Removals()
    now = await _now(connection)
    gone = [row for row in await _live(connection, room_id, now) if row["target_seq"] == seq]
    entries = await _take_down(connection, room_id, gone, REMOVED_MESSAGE_DELETED, now)
    below = entries[0].seq if entries else None
    redacted = []
    rows = await connection.fetch(
        f"SELECT {ENTRY_COLUMNS} FROM messages WHERE room_id = $1 AND seq >= $2 "  # noqa: S608
        f"AND kind IN ({KIND_PAID_PIN}, {KIND_PAID_PIN_REMOVED}) ORDER BY seq",
        room_id,
        first,
    )
    opener = await keys.keyring().opener(room_id, [row["payload"] for row in rows], connection=connection)
    sealer = await keys.keyring().sealer(room_id) if rows else None
    for row in rows:
        if below is not None and row["seq"] >= below:
            break
        entry_id = str(row["id"])
        try:
            plain = opener.data(entry_id, crypto.PAYLOAD, row["payload"])
        except crypto.Unreadable:
            # Nothing of the text can be read from it either.
            continue
        payload = messaging_pb2.Message()
        payload.ParseFromString(plain or b"")
        copies = [payload.paid_pin, *payload.paid_pins]
        touched = [pin for pin in copies if pin.target_seq == seq and not pin.message.state.deleted]
        if not touched:
            continue
        for pin in touched:
            pin.message.CopyFrom(tombstone)
        await connection.execute(
            "UPDATE messages SET payload = $3 WHERE room_id = $1 AND seq = $2",
            room_id,
            row["seq"],
            sealer.data(entry_id, crypto.PAYLOAD, payload.SerializeToString()) if sealer else None,
        )
        entry = to_message(row, opener)
        entry.ClearField("paid_pin")
        entry.ClearField("paid_pins")
        entry.MergeFrom(payload)
        redacted.append(entry)
    return Removals(tuple(entries), tuple(redacted))

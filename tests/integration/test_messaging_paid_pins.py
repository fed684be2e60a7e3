"""Paid pins and tips in the room's log, over gRPC against real messaging servers, Postgres and Redis.

payments fulfils paid orders with its service credential: ApplyPaidPin decides a pin or an extension
against the room's pins at that moment (serialized per room), ApplyTip posts a tip; both answer a
retried order with its first outcome. The host (or a ban, or deleting the message) takes pins down.
Rooms is the fake from test_messaging_service.py; service tokens are signed with its test key.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
from test_messaging_service import (
    GENEROUS_RATE_LIMIT,
    KID,
    SIGNING_KEY,
    Events,
    FakeRooms,
    Member,
    Messaging,
    failure,
    fake_rooms,
    join,
    messaging_server,
    new_room,
    rooms,
    server_a,
    server_b,
)

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.pricing import min_outbid

# Fixtures shared with test_messaging_service.py.
__all__ = ["fake_rooms", "rooms", "server_a", "server_b"]

GRANTED = messaging_pb2.PAID_PIN_OUTCOME_GRANTED
OUTBID = messaging_pb2.PAID_PIN_OUTCOME_OUTBID
NOT_TOP = messaging_pb2.PAID_PIN_OUTCOME_NOT_TOP
MESSAGE_GONE = messaging_pb2.PAID_PIN_OUTCOME_MESSAGE_GONE
BANNED = messaging_pb2.PAID_PIN_OUTCOME_BANNED
PAID_PIN = messaging_pb2.ENTRY_KIND_PAID_PIN
PAID_PIN_REMOVED = messaging_pb2.ENTRY_KIND_PAID_PIN_REMOVED
TIP = messaging_pb2.ENTRY_KIND_TIP


def service_token(service: str = "payments", *, ttl: int = 300) -> str:
    """A service token as identity issues them, signed with the key the test servers trust."""
    now = int(time.time())
    claims = {
        "iss": "chatpop",
        "aud": "chatpop:service",
        "sub": service,
        "typ": "service",
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, SIGNING_KEY, algorithm="EdDSA", headers={"kid": KID})


def as_service(service: str = "payments") -> Sequence[tuple[str, str]]:
    """A service's credential, minted now: one minted at import would expire before a long run
    reaches the tests that use it."""
    return (("authorization", f"Bearer {service_token(service)}"),)


async def apply_pin(
    server: Messaging,
    buyer: Member,
    amount: int,
    *,
    target_seq: int = 0,
    extend: str = "",
    order_id: str | None = None,
    metadata: Sequence[tuple[str, str]] | None = None,
) -> messaging_pb2.ApplyPaidPinResponse:
    request = messaging_pb2.ApplyPaidPinRequest(
        order_id=order_id or str(uuid.uuid4()),
        room_id=buyer.room_id,
        participant_id=buyer.participant.id,
        amount_cents=amount,
        currency="usd",
        target_seq=target_seq,
        extend_pin_id=extend,
    )
    response: messaging_pb2.ApplyPaidPinResponse = await server.stub.ApplyPaidPin(
        request, metadata=metadata if metadata is not None else as_service(), timeout=10
    )
    return response


async def apply_tip(
    server: Messaging,
    tipper: Member,
    amount: int,
    note: str = "",
    *,
    order_id: str | None = None,
    metadata: Sequence[tuple[str, str]] | None = None,
) -> messaging_pb2.ApplyTipResponse:
    request = messaging_pb2.ApplyTipRequest(
        order_id=order_id or str(uuid.uuid4()),
        room_id=tipper.room_id,
        participant_id=tipper.participant.id,
        amount_cents=amount,
        currency="usd",
        note=note,
    )
    response: messaging_pb2.ApplyTipResponse = await server.stub.ApplyTip(
        request, metadata=metadata if metadata is not None else as_service(), timeout=10
    )
    return response


async def quote(
    server: Messaging, room_id: str, metadata: Sequence[tuple[str, str]] | None = None
) -> messaging_pb2.GetPaidPinQuoteResponse:
    response: messaging_pb2.GetPaidPinQuoteResponse = await server.stub.GetPaidPinQuote(
        messaging_pb2.GetPaidPinQuoteRequest(room_id=room_id),
        metadata=metadata if metadata is not None else as_service(),
        timeout=10,
    )
    return response


async def remove_pin(
    server: Messaging, member: Member, pin_id: str, metadata: Sequence[tuple[str, str]] | None = None
) -> messaging_pb2.RemovePaidPinResponse:
    response: messaging_pb2.RemovePaidPinResponse = await server.stub.RemovePaidPin(
        messaging_pb2.RemovePaidPinRequest(room_id=member.room_id, pin_id=pin_id),
        metadata=member.metadata if metadata is None else metadata,
        timeout=10,
    )
    return response


def pinned(pins: Sequence[messaging_pb2.PaidPin]) -> list[tuple[str, int, int]]:
    """(id, message seq, amount) of each pin, in order."""
    return [(pin.id, pin.target_seq, pin.amount_cents) for pin in pins]


def minutes(pin: messaging_pb2.PaidPin) -> float:
    return (pin.expires_at.ToDatetime() - pin.started_at.ToDatetime()).total_seconds() / 60


async def expire(database_url: str, room_id: str, pin_id: str) -> None:
    """Let a pin's time run out (as if an hour had passed)."""
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "messaging"})
    try:
        await connection.execute(
            "UPDATE paid_pins SET expires_at = clock_timestamp() - interval '1 second' "
            "WHERE room_id = $1 AND id = $2",
            room_id,
            pin_id,
        )
    finally:
        await connection.close()


async def refused(call: Any, status: grpc.StatusCode, code: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert failure(info.value)[:2] == (status, code), info.value.details()


# --- granting -------------------------------------------------------------------------------------


async def test_a_paid_pin_is_granted_once_per_order_and_shows_on_the_board(
    server_a: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    buyer, other = join(fake_rooms, room, "PayingPat"), join(fake_rooms, room, "Onlooker")
    target = (await server_a.send(other, "pin me, please")).message
    order_id = str(uuid.uuid4())

    granted = await apply_pin(server_a, buyer, 100, target_seq=target.seq, order_id=order_id)
    assert (granted.outcome, granted.created) == (GRANTED, True)
    entry, pin = granted.entry, granted.pin
    assert (entry.kind, entry.seq, entry.target_seq) == (PAID_PIN, 2, target.seq)
    assert (entry.sender_participant_id, entry.sender_username) == (buyer.participant.id, "PayingPat")
    assert (pin.id, pin.target_seq, pin.amount_cents, pin.currency) == (order_id, target.seq, 100, "usd")
    assert (pin.participant_id, pin.username, pin.removed_reason) == (buyer.participant.id, "PayingPat", "")
    assert pin.message.text == "pin me, please" and pin.message.seq == target.seq
    # The lowest tier still stands for an hour (its own time is shorter).
    assert minutes(pin) == 60
    assert pinned(entry.paid_pins) == [(order_id, target.seq, 100)]
    assert entry.paid_pin == pin

    # payments retries (its relay may have crashed after the call): the first outcome, nothing new.
    again = await apply_pin(server_a, buyer, 100, target_seq=target.seq, order_id=order_id)
    assert (again.outcome, again.created) == (GRANTED, False)
    assert again.entry == entry and again.pin == pin
    concurrent = await asyncio.gather(
        *(apply_pin(server_a, buyer, 100, target_seq=target.seq, order_id=order_id) for _ in range(5))
    )
    assert {(r.outcome, r.created, r.entry.seq) for r in concurrent} == {(GRANTED, False, 2)}

    page = await server_a.history(other)
    assert page.last_seq == 2
    assert [m.seq for m in page.messages] == [target.seq]
    assert pinned(page.board.paid_pins) == [(order_id, target.seq, 100)]
    assert page.board.paid_pins[0].message.text == "pin me, please"
    assert page.board.paid_pins_state_seq == 2
    assert not page.board.pins  # host pins are their own list, above these

    mine = await quote(server_a, room, buyer.metadata)
    assert (mine.min_cents, mine.my_top_pin_id) == (200, order_id)
    theirs = await quote(server_a, room, other.metadata)
    assert (theirs.min_cents, theirs.my_top_pin_id) == (200, "")
    assert pinned(theirs.paid_pins) == pinned((await quote(server_a, room)).paid_pins)
    assert (await quote(server_a, new_room())).min_cents == 100


async def test_a_new_pin_must_outbid_the_top_by_a_tier(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    room = new_room()
    first, second, third = (join(fake_rooms, room, f"Buyer{n}") for n in range(3))
    message = (await server_a.send(first, "a message worth pinning")).message

    host = join(fake_rooms, room, "TheHost", is_host=True)
    top = await apply_pin(server_a, first, 500, target_seq=message.seq)
    assert top.outcome == GRANTED and minutes(top.pin) == 60
    equal = await apply_pin(server_a, second, 500, target_seq=message.seq)
    lower = await apply_pin(server_a, second, 200, target_seq=message.seq)
    assert (equal.outcome, equal.created, equal.HasField("entry")) == (OUTBID, True, False)
    assert lower.outcome == OUTBID
    await remove_pin(server_a, host, top.pin.id)
    assert (await quote(server_a, room)).min_cents == 100
    standing = await apply_pin(server_a, second, 200, target_seq=message.seq)
    assert standing.outcome == GRANTED
    # A refusal is final for its order too: asked again once the top pin is gone, still refused.
    order = str(uuid.uuid4())
    outbid = await apply_pin(server_a, third, 200, target_seq=message.seq, order_id=order)
    assert outbid.outcome == OUTBID
    await remove_pin(server_a, host, standing.pin.id)
    late = await apply_pin(server_a, third, 200, target_seq=message.seq, order_id=order)
    assert (late.outcome, late.created) == (OUTBID, False)

    # A bigger tier wins and stands for its own time when that is longer than an hour.
    big = await apply_pin(server_a, third, 2500, target_seq=message.seq)
    assert big.outcome == GRANTED and minutes(big.pin) == 120
    assert (await quote(server_a, room)).min_cents == min_outbid(2500) == 3000

    # Amounts that are not tiers, and orders naming both or neither, are refused outright.
    await refused(
        apply_pin(server_a, first, 150, target_seq=message.seq),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_amount",
    )
    await refused(
        apply_pin(server_a, first, 5000, target_seq=message.seq, extend=big.pin.id),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_pin_order",
    )
    await refused(apply_pin(server_a, first, 5000), grpc.StatusCode.INVALID_ARGUMENT, "invalid_pin_order")


async def test_of_two_concurrent_outbids_exactly_one_wins(
    server_a: Messaging, server_b: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    holder = join(fake_rooms, room, "HoldsTop")
    rivals = [join(fake_rooms, room, f"Rival{n}") for n in range(6)]
    messages = [(await server_a.send(holder, f"message {n}")).message for n in range(6)]
    assert (await apply_pin(server_a, holder, 100, target_seq=messages[0].seq)).outcome == GRANTED

    async def outbid_at_once(count: int) -> None:
        top = (await quote(server_a, room)).min_cents
        answers = await asyncio.gather(
            *(
                apply_pin((server_a, server_b)[n % 2], rivals[n], top, target_seq=messages[n].seq)
                for n in range(count)
            )
        )
        outcomes = sorted(answer.outcome for answer in answers)
        assert outcomes == [GRANTED] + [OUTBID] * (count - 1), f"{count} at {top}: {outcomes}"
        winner = next(answer for answer in answers if answer.outcome == GRANTED)
        now = await quote(server_b, room)
        assert now.paid_pins[0].id == winner.pin.id and now.paid_pins[0].amount_cents == top

    for _ in range(8):
        await outbid_at_once(2)
    await outbid_at_once(6)

    page = await server_a.history(holder)
    # Every grant is one entry: 6 messages, the first pin and one winner a round, gap-free.
    assert page.last_seq == 6 + 1 + 9
    assert len(page.board.paid_pins) == 10
    amounts = [pin.amount_cents for pin in page.board.paid_pins]
    assert amounts == sorted(amounts, reverse=True) and len(set(amounts)) == 10


async def test_only_the_top_pins_buyer_extends_it_and_an_extension_raises_the_bar(
    server_a: Messaging, fake_rooms: FakeRooms, database_url: str
) -> None:
    room = new_room()
    low, high = join(fake_rooms, room, "LowBidder"), join(fake_rooms, room, "TopBidder")
    message = (await server_a.send(low, "extend me")).message
    lower = await apply_pin(server_a, low, 100, target_seq=message.seq)
    top = await apply_pin(server_a, high, 200, target_seq=message.seq)
    assert (lower.outcome, top.outcome) == (GRANTED, GRANTED)

    # Someone else cannot extend the top pin, nor can a pin below the top be extended.
    assert (await apply_pin(server_a, low, 100, extend=top.pin.id)).outcome == NOT_TOP
    assert (await apply_pin(server_a, low, 100, extend=lower.pin.id)).outcome == NOT_TOP
    assert (await apply_pin(server_a, low, 100, extend="no-such-pin")).outcome == NOT_TOP

    extended = await apply_pin(server_a, high, 500, extend=top.pin.id)
    assert extended.outcome == GRANTED
    pin = extended.pin
    assert (pin.id, pin.amount_cents, pin.started_at) == (top.pin.id, 700, top.pin.started_at)
    # 500 adds its 20 minutes to the hour the pin had.
    assert minutes(pin) == 80
    assert extended.entry.kind == PAID_PIN
    assert pinned(extended.entry.paid_pins) == [
        (top.pin.id, message.seq, 700),
        (lower.pin.id, message.seq, 100),
    ]
    # A rival must now outbid everything paid for it.
    assert (await quote(server_a, room)).min_cents == 1000
    assert (await apply_pin(server_a, low, 500, target_seq=message.seq)).outcome == OUTBID
    assert (await quote(server_a, room, high.metadata)).my_top_pin_id == top.pin.id

    # Once the top pin has run out, it cannot be extended; the pin below is the top one now.
    await expire(database_url, room, top.pin.id)
    assert (await apply_pin(server_a, high, 100, extend=top.pin.id)).outcome == NOT_TOP
    assert (await quote(server_a, room, low.metadata)).my_top_pin_id == lower.pin.id
    assert (await apply_pin(server_a, low, 100, extend=lower.pin.id)).outcome == GRANTED


async def test_a_pin_drops_off_at_its_time_with_no_entry(
    server_a: Messaging, database_url: str, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    buyer = join(fake_rooms, room, "ShortLived")
    message = (await server_a.send(buyer, "here for an hour")).message
    granted = await apply_pin(server_a, buyer, 100, target_seq=message.seq)
    assert pinned((await server_a.history(buyer)).board.paid_pins) == [(granted.pin.id, message.seq, 100)]

    await expire(database_url, room, granted.pin.id)
    page = await server_a.history(buyer)
    assert list(page.board.paid_pins) == []
    assert page.last_seq == 2 and page.board.paid_pins_state_seq == 2
    after = await quote(server_a, room, buyer.metadata)
    assert (list(after.paid_pins), after.min_cents, after.my_top_pin_id) == ([], 100, "")
    # The base rate pins again, and the expired pin is not in the new entry's list.
    again = await apply_pin(server_a, buyer, 100, target_seq=message.seq)
    assert again.outcome == GRANTED
    assert pinned(again.entry.paid_pins) == [(again.pin.id, message.seq, 100)]
    # The host has nothing to take down any more.
    host = join(fake_rooms, room, "RoomHost", is_host=True)
    assert (await remove_pin(server_a, host, granted.pin.id)).changed is False


async def test_only_a_message_standing_in_the_room_can_be_pinned(
    server_a: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    host = join(fake_rooms, room, "HostHere", is_host=True)
    buyer = join(fake_rooms, room, "Buyer")
    kept = (await server_a.send(host, "kept")).message
    deleted = (await server_a.send(buyer, "gone soon")).message
    await server_a.stub.DeleteMessage(
        messaging_pb2.DeleteMessageRequest(room_id=room, target_seq=deleted.seq),
        metadata=buyer.metadata,
        timeout=10,
    )
    reaction = await server_a.stub.SetReaction(
        messaging_pb2.SetReactionRequest(room_id=room, target_seq=kept.seq, emoji="\U0001f44d", on=True),
        metadata=buyer.metadata,
        timeout=10,
    )
    for seq in (deleted.seq, reaction.entry.seq, 999):
        assert (await apply_pin(server_a, buyer, 100, target_seq=seq)).outcome == MESSAGE_GONE
    assert list((await quote(server_a, room)).paid_pins) == []
    granted = await apply_pin(server_a, buyer, 100, target_seq=kept.seq)
    assert granted.outcome == GRANTED
    assert {r.emoji: r.count for r in granted.pin.message.state.reactions} == {"\U0001f44d": 1}


# --- taking pins down -------------------------------------------------------------------------------


async def test_the_host_or_an_admin_takes_a_paid_pin_down(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    room = new_room()
    host = join(fake_rooms, room, "RoomHost", is_host=True)
    buyer, other = join(fake_rooms, room, "PinBuyer"), join(fake_rooms, room, "Another")
    message = (await server_a.send(buyer, "look at me")).message
    first = await apply_pin(server_a, buyer, 100, target_seq=message.seq)
    second = await apply_pin(server_a, other, 200, target_seq=message.seq)

    await refused(remove_pin(server_a, buyer, first.pin.id), grpc.StatusCode.PERMISSION_DENIED, "forbidden")
    await refused(
        remove_pin(server_a, host, first.pin.id, as_service()),
        grpc.StatusCode.PERMISSION_DENIED,
        "wrong_room",
    )
    await refused(remove_pin(server_a, host, "no-such-pin"), grpc.StatusCode.NOT_FOUND, "paid_pin_not_found")

    removed = await remove_pin(server_a, host, second.pin.id)
    assert removed.changed is True
    entry = removed.entry
    assert (entry.kind, entry.seq, entry.target_seq) == (PAID_PIN_REMOVED, 4, message.seq)
    assert (entry.paid_pin.id, entry.paid_pin.removed_reason) == (second.pin.id, "host")
    assert entry.sender_participant_id == other.participant.id
    assert pinned(entry.paid_pins) == [(first.pin.id, message.seq, 100)]
    assert (await remove_pin(server_a, host, second.pin.id)).changed is False
    page = await server_a.history(other)
    assert pinned(page.board.paid_pins) == [(first.pin.id, message.seq, 100)]
    assert (page.last_seq, page.board.paid_pins_state_seq) == (4, 4)
    # The bar is back where the pin left standing puts it.
    assert (await quote(server_a, room)).min_cents == 200

    admin_token = jwt.encode(
        {
            "typ": "access",
            "iss": "chatpop",
            "aud": "chatpop",
            "sub": str(uuid.uuid4()),
            "knd": "user",
            "adm": True,
            "iat": int(time.time()),
            "nbf": int(time.time()),
            "exp": int(time.time()) + 300,
        },
        SIGNING_KEY,
        algorithm="EdDSA",
        headers={"kid": KID},
    )
    by_admin = await remove_pin(server_a, host, first.pin.id, (("authorization", f"Bearer {admin_token}"),))
    assert by_admin.changed and by_admin.entry.paid_pin.removed_reason == "host"
    assert list((await server_a.history(other)).board.paid_pins) == []


async def test_banning_the_buyer_takes_their_pins_down_and_refuses_their_next(
    server_a: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    host = join(fake_rooms, room, "BanningHost", is_host=True)
    fake_rooms.rooms[room] = rooms_pb2.Room(id=room, host_id=host.participant.subject)
    buyer, keeper = join(fake_rooms, room, "SoonBanned"), join(fake_rooms, room, "Keeper")
    message = (await server_a.send(keeper, "pin this")).message
    kept = await apply_pin(server_a, keeper, 100, target_seq=message.seq)
    theirs = await apply_pin(server_a, buyer, 200, target_seq=message.seq)
    assert (kept.outcome, theirs.outcome) == (GRANTED, GRANTED)
    events = server_a.subscribe(room, theirs.entry.seq)
    try:
        banned = rooms_pb2.Participant()
        banned.CopyFrom(buyer.participant)
        banned.banned = True
        fake_rooms.participants[(room, buyer.participant.id)] = banned
        ban = await server_a.stub.AppendBan(
            messaging_pb2.AppendBanRequest(
                room_id=room, participant_id=buyer.participant.id, ban_id=str(uuid.uuid4())
            ),
            metadata=host.metadata,
            timeout=10,
        )
        assert ban.created and ban.entry.seq == 4
        seen = [await events.message(), await events.message()]
    finally:
        await events.close()
    assert [(e.seq, e.kind) for e in seen] == [(4, messaging_pb2.ENTRY_KIND_BAN), (5, PAID_PIN_REMOVED)]
    removal = seen[1]
    assert (removal.paid_pin.id, removal.paid_pin.removed_reason) == (theirs.pin.id, "banned")
    assert pinned(removal.paid_pins) == [(kept.pin.id, message.seq, 100)]
    assert pinned((await server_a.history(keeper)).board.paid_pins) == [(kept.pin.id, message.seq, 100)]

    # Paid for before the ban, applied after it: refused (payments refunds it).
    late = await apply_pin(server_a, buyer, 500, target_seq=message.seq)
    assert (late.outcome, late.HasField("entry")) == (BANNED, False)
    assert (await server_a.history(keeper)).last_seq == 5


class RoomsBanningMeanwhile(FakeRooms):
    """Rooms answering "not banned" for a participant whose ban entry is appended right after."""

    def __init__(self, database_url: str) -> None:
        super().__init__()
        self.database_url = database_url
        self.ban_after_answer: set[tuple[str, str]] = set()

    async def GetParticipant(
        self, request: rooms_pb2.GetParticipantRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.GetParticipantResponse:
        answer = await super().GetParticipant(request, context)
        key = (request.room_id, request.participant_id)
        if key in self.ban_after_answer:
            self.ban_after_answer.discard(key)
            await append_ban_entry(self.database_url, request.room_id, answer.participant)
        return answer


async def append_ban_entry(database_url: str, room_id: str, participant: rooms_pb2.Participant) -> None:
    """A ban entry for the participant, appended as AppendBan appends it."""
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "messaging"})
    try:
        await connection.execute(
            "WITH c AS (INSERT INTO room_counters AS c (room_id, last_seq) VALUES ($1, 1) "
            "ON CONFLICT (room_id) DO UPDATE SET last_seq = c.last_seq + 1 RETURNING last_seq) "
            "INSERT INTO messages (id, room_id, seq, sender_participant_id, sender_username, client_msg_id, "
            "text, kind, target_seq) SELECT $2, $1, c.last_seq, $3, $4, $5, '', $6, 0 FROM c",
            room_id,
            uuid.uuid4(),
            participant.id,
            participant.username,
            f"ban:{uuid.uuid4()}",
            messaging_pb2.ENTRY_KIND_BAN,
        )
    finally:
        await connection.close()


async def test_a_ban_made_while_rooms_answered_still_refuses_the_pin(
    database_url: str, redis_url: str
) -> None:
    """rooms said "not banned", and the ban's entry came before the pin was decided: the entry wins.
    A ban entry from before rooms was asked (the participant was unbanned since) does not count."""
    fake = RoomsBanningMeanwhile(database_url)
    server = grpc.aio.server()
    rooms_pb2_grpc.add_RoomsServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with messaging_server(
            database_url, redis_url, f"127.0.0.1:{port}", participant_cache_ttl=0, **GENEROUS_RATE_LIMIT
        ) as messaging:
            room = new_room()
            racer, unbanned = join(fake, room, "RacesTheBan"), join(fake, room, "Forgiven")
            message = (await messaging.send(racer, "mine")).message
            await append_ban_entry(database_url, room, unbanned.participant)
            assert (await apply_pin(messaging, unbanned, 100, target_seq=message.seq)).outcome == GRANTED

            fake.ban_after_answer.add((room, racer.participant.id))
            late = await apply_pin(messaging, racer, 200, target_seq=message.seq)
            assert (late.outcome, late.HasField("entry")) == (BANNED, False)
            assert not fake.ban_after_answer
            assert len((await quote(messaging, room)).paid_pins) == 1
    finally:
        await server.stop(0)


async def test_deleting_a_pinned_message_takes_its_pins_down_and_its_text_out_of_every_entry(
    server_a: Messaging, fake_rooms: FakeRooms, database_url: str
) -> None:
    room = new_room()
    author, buyer = join(fake_rooms, room, "Regretful"), join(fake_rooms, room, "Admirer")
    secret = (await server_a.send(author, "a secret worth deleting")).message
    other = (await server_a.send(buyer, "something else")).message
    on_secret = await apply_pin(server_a, buyer, 100, target_seq=secret.seq)
    on_other = await apply_pin(server_a, buyer, 200, target_seq=other.seq)
    assert [pin.message.text for pin in on_other.entry.paid_pins] == [
        "something else",
        "a secret worth deleting",
    ]

    deleted = await server_a.stub.DeleteMessage(
        messaging_pb2.DeleteMessageRequest(room_id=room, target_seq=secret.seq),
        metadata=author.metadata,
        timeout=10,
    )
    assert deleted.changed and deleted.entry.seq == 5
    resumed = await server_a.after(buyer, 4)
    assert [(m.seq, m.kind) for m in resumed.messages] == [
        (5, messaging_pb2.ENTRY_KIND_DELETION),
        (6, PAID_PIN_REMOVED),
    ]
    removal = resumed.messages[1]
    assert (removal.paid_pin.id, removal.paid_pin.removed_reason) == (on_secret.pin.id, "message_deleted")
    assert removal.paid_pin.message.state.deleted and removal.paid_pin.message.text == ""
    assert pinned(removal.paid_pins) == [(on_other.pin.id, other.seq, 200)]
    assert pinned((await server_a.history(buyer)).board.paid_pins) == [(on_other.pin.id, other.seq, 200)]

    # No entry, read from the hot cache or from Postgres, still carries the text (the hot cache
    # loses it in the background, at once unless Redis is away).
    deadline = time.monotonic() + 10
    while True:
        everything = await server_a.after(buyer, 0)
        carried = b"".join(m.SerializeToString() for m in everything.messages)
        if b"a secret worth deleting" not in carried or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert b"a secret worth deleting" not in carried
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "messaging"})
    try:
        rows = await connection.fetch("SELECT text, payload FROM messages WHERE room_id = $1", room)
    finally:
        await connection.close()
    assert not [
        row for row in rows if b"a secret worth deleting" in (row["payload"] or b"") + bytes(row["text"])
    ]
    assert len(rows) == 6


# --- who may call ---------------------------------------------------------------------------------


async def test_only_the_payments_service_fulfils_orders(server_a: Messaging, fake_rooms: FakeRooms) -> None:
    room = new_room()
    buyer = join(fake_rooms, room, "Sneaky", is_host=True)
    message = (await server_a.send(buyer, "free pin?")).message
    for metadata, status, code in (
        (buyer.metadata, grpc.StatusCode.PERMISSION_DENIED, "forbidden"),
        (as_service("rooms"), grpc.StatusCode.PERMISSION_DENIED, "forbidden"),
        (as_service("edge"), grpc.StatusCode.PERMISSION_DENIED, "forbidden"),
        ((), grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"),
    ):
        await refused(
            apply_pin(server_a, buyer, 100, target_seq=message.seq, metadata=metadata), status, code
        )
        await refused(apply_tip(server_a, buyer, 500, metadata=metadata), status, code)
    # The quote is for the room's own participants and payments.
    await refused(quote(server_a, room, as_service("rooms")), grpc.StatusCode.PERMISSION_DENIED, "forbidden")
    await refused(
        quote(server_a, room, join(fake_rooms, new_room()).metadata),
        grpc.StatusCode.PERMISSION_DENIED,
        "wrong_room",
    )
    await refused(
        apply_pin(server_a, buyer, 100, target_seq=message.seq, metadata=(("authorization", "Bearer x"),)),
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid_token",
    )
    page = await server_a.history(buyer)
    assert page.last_seq == 1 and list(page.board.paid_pins) == []


# --- tips -----------------------------------------------------------------------------------------


async def test_a_tip_is_an_entry_of_the_room_once_per_order(
    server_a: Messaging, fake_rooms: FakeRooms
) -> None:
    room = new_room()
    tipper, host = (
        join(fake_rooms, room, "Generous", verified=True),
        join(fake_rooms, room, "Host", is_host=True),
    )
    await server_a.send(host, "thanks for coming")
    events = server_a.subscribe(room, 1)
    order_id = str(uuid.uuid4())
    try:
        posted = await apply_tip(server_a, tipper, 500, "  great stream!  ", order_id=order_id)
        live = await events.message()
    finally:
        await events.close()
    entry = posted.entry
    assert posted.created and live == entry
    assert (entry.kind, entry.seq, entry.target_seq, entry.text) == (TIP, 2, 0, "")
    assert (entry.sender_participant_id, entry.sender_username, entry.sender_verified) == (
        tipper.participant.id,
        "Generous",
        True,
    )
    assert (entry.tip.order_id, entry.tip.amount_cents, entry.tip.currency, entry.tip.note) == (
        order_id,
        500,
        "usd",
        "great stream!",
    )
    again = await asyncio.gather(
        *(apply_tip(server_a, tipper, 500, "great stream!", order_id=order_id) for _ in range(3))
    )
    assert {(r.created, r.entry.seq) for r in again} == {(False, 2)}

    # History lists tips among the messages; a resume replays them.
    page = await server_a.history(host)
    assert [(m.seq, m.kind) for m in page.messages] == [(2, TIP), (1, messaging_pb2.ENTRY_KIND_MESSAGE)]
    assert page.messages[0].tip == entry.tip
    assert (await server_a.after(host, 1)).messages == [entry]

    quiet = await apply_tip(server_a, tipper, 100)
    assert quiet.entry.tip.note == "" and quiet.entry.seq == 3
    await refused(
        apply_tip(server_a, tipper, 100, "x" * 201), grpc.StatusCode.INVALID_ARGUMENT, "note_too_long"
    )
    await refused(
        apply_tip(server_a, tipper, 100, "bell\x07"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "note_invalid_characters",
    )
    await refused(apply_tip(server_a, tipper, 0), grpc.StatusCode.INVALID_ARGUMENT, "invalid_amount")
    stranger = join(fake_rooms, new_room(), "Elsewhere")
    stranger.room_id = room
    await refused(apply_tip(server_a, stranger, 100), grpc.StatusCode.NOT_FOUND, "participant_not_found")
    # An order id is a tip or a pin, never both.
    await refused(
        apply_pin(server_a, tipper, 100, target_seq=1, order_id=order_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "order_kind_mismatch",
    )
    assert (await server_a.history(host)).last_seq == 3


# --- live = resumed = fresh -----------------------------------------------------------------------


def _paid_view(pins: Sequence[messaging_pb2.PaidPin], now: float) -> list[tuple[str, int, int, int, str]]:
    """What a client shows of paid pins: the live ones (it drops each at its expires_at), top first."""
    return [
        (pin.id, pin.target_seq, pin.amount_cents, pin.expires_at.seconds, pin.message.text)
        for pin in pins
        if pin.expires_at.ToNanoseconds() / 1e9 > now
    ]


class PaidPinsView:
    """A client's paid pins and tips, built from entries (live or resumed) or from a history page."""

    def __init__(self) -> None:
        self.pins: list[messaging_pb2.PaidPin] = []
        self.state_seq = 0
        self.tips: dict[int, tuple[str, int, str]] = {}

    def apply(self, entry: messaging_pb2.Message) -> None:
        if entry.kind in (PAID_PIN, PAID_PIN_REMOVED) and entry.seq > self.state_seq:
            self.pins, self.state_seq = list(entry.paid_pins), entry.seq
        elif entry.kind == TIP:
            self.tips[entry.seq] = (entry.sender_participant_id, entry.tip.amount_cents, entry.tip.note)

    def load(self, page: messaging_pb2.ListMessagesResponse) -> None:
        if page.board.paid_pins_state_seq >= self.state_seq:
            self.pins, self.state_seq = list(page.board.paid_pins), page.board.paid_pins_state_seq
        for message in page.messages:
            self.apply(message)

    def shown(
        self, now: float
    ) -> tuple[list[tuple[str, int, int, int, str]], dict[int, tuple[str, int, str]]]:
        return _paid_view(self.pins, now), self.tips


async def test_paid_pins_and_tips_reach_live_resumed_and_fresh_clients_alike(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake, rooms_addr = rooms
    room = new_room()
    host = join(fake, room, "HostOfAll", is_host=True)
    fake.rooms[room] = rooms_pb2.Room(id=room, host_id=host.participant.subject)
    ann, ben, cat = (join(fake, room, name) for name in ("AnnPays", "BenPays", "CatPays"))
    async with (
        messaging_server(database_url, redis_url, rooms_addr, **GENEROUS_RATE_LIMIT) as one,
        messaging_server(database_url, redis_url, rooms_addr, **GENEROUS_RATE_LIMIT) as two,
    ):
        # From the room's start (it has no entries yet), not "from now": however late the stream
        # begins, it has every entry from the first.
        live_events: Events = one.subscribe(room, 0)
        live = PaidPinsView()
        try:
            m1 = (await one.send(ann, "first message")).message
            m2 = (await two.send(ben, "second message")).message
            m3 = (await one.send(cat, "third message")).message
            a = await apply_pin(one, ann, 100, target_seq=m1.seq)
            b = await apply_pin(two, ben, 200, target_seq=m2.seq)
            # A client that leaves here, holding everything so far.
            away = PaidPinsView()
            snapshot = await one.history(cat)
            away.load(snapshot)
            away_seq = snapshot.last_seq
            await apply_tip(two, cat, 300, "for the host")
            c = await apply_pin(one, cat, 500, target_seq=m3.seq)
            assert (a.outcome, b.outcome, c.outcome) == (GRANTED, GRANTED, GRANTED)
            assert (await apply_pin(two, cat, 500, extend=c.pin.id)).outcome == GRANTED
            assert (await apply_pin(one, ann, 200, target_seq=m1.seq)).outcome == OUTBID
            await remove_pin(two, host, b.pin.id)
            await two.stub.DeleteMessage(
                messaging_pb2.DeleteMessageRequest(room_id=room, target_seq=m3.seq),
                metadata=host.metadata,
                timeout=10,
            )
            d = await apply_pin(two, ann, 200, target_seq=m1.seq)
            await apply_tip(one, ben, 1000)
            banned = rooms_pb2.Participant()
            banned.CopyFrom(ann.participant)
            banned.banned = True
            fake.participants[(room, ann.participant.id)] = banned
            await one.stub.AppendBan(
                messaging_pb2.AppendBanRequest(
                    room_id=room, participant_id=ann.participant.id, ban_id=str(uuid.uuid4())
                ),
                metadata=host.metadata,
                timeout=10,
            )
            e = await apply_pin(two, ben, 100, target_seq=m2.seq)
            f = await apply_pin(one, cat, 200, target_seq=m1.seq)
            assert (d.outcome, e.outcome, f.outcome) == (GRANTED, GRANTED, GRANTED)

            last = (await one.history(host)).last_seq
            seen = 0
            while seen < last:
                entry = await live_events.message()
                live.apply(entry)
                seen = entry.seq
        finally:
            await live_events.close()

        resumed = await two.after(cat, away_seq)
        assert not resumed.reload and resumed.messages[-1].seq == last
        for entry in resumed.messages:
            away.apply(entry)

        fresh = PaidPinsView()
        before = 0
        while True:
            page = await two.history(ben, before_seq=before, limit=3)
            fresh.load(page)
            if not page.has_more:
                break
            before = page.low_seq
        # Seen once Ben's pin ran out (no entry says so) and before Cat's does.
        ends = sorted(pin.expires_at.ToNanoseconds() / 1e9 for pin in (e.pin, f.pin))
        assert ends[0] == e.pin.expires_at.ToNanoseconds() / 1e9 and ends[0] < ends[1]
        now = (ends[0] + ends[1]) / 2
        expected_pins = [(f.pin.id, m1.seq, 200, f.pin.expires_at.seconds, "first message")]
        assert fresh.shown(now)[0] == expected_pins
        assert sorted(fresh.tips) == sorted(live.tips) and len(fresh.tips) == 2
        assert live.shown(now) == away.shown(now) == fresh.shown(now)
        assert live.state_seq == away.state_seq == fresh.state_seq

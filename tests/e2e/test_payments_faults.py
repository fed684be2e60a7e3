"""A paid pin survives messaging dying in the middle of granting it.

Stripe's success webhook has made the order paid, and payments' outbox is handing it to messaging:
messaging is inside ApplyPaidPin, waiting for the room's board (its transaction open), when it is
killed (kill -9). Nothing of the pin was committed. payments' call waits for messaging to come back
until its deadline, then the attempt fails: the order stays paid, its `fulfil` row in the outbox with
the error. Once messaging runs again the outbox tries again and the pin is granted exactly once, and a
client whose socket stayed open sees it as one that resumes or reads history does.

To stop messaging at that point the test holds the room's board row (`messaging.room_boards`, the lock
every paid-pin decision takes) from a connection of its own until messaging is dead.
"""

from __future__ import annotations

import contextlib

import asyncpg
import httpx

from tests.e2e.conftest import Stack
from tests.e2e.money import (
    audience,
    enter,
    fake_of,
    fresh_view,
    host_with_room,
    intent_of,
    order,
    order_in,
    pay,
    read_order,
    say,
    until,
)

# The statement messaging waits in while another transaction holds the room's board row.
_WAITING_FOR_BOARD = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'
  AND query ILIKE '%room_boards%'
"""


async def _fulfil_row(database_url: str, order_id: str) -> asyncpg.Record:
    """The order's `fulfil` row in payments' outbox."""
    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow(
            "SELECT attempts, last_error, delivered_at FROM payments.outbox"
            " WHERE topic = 'fulfil' AND key = $1",
            f"fulfil:{order_id}",
        )
    finally:
        await connection.close()
    assert row is not None, "the paid order has no fulfil row in the outbox"
    return row


async def test_messaging_killed_while_granting_a_paid_pin_grants_it_once_after_it_restarts(
    stripe_stack: Stack, stripe_client: httpx.AsyncClient
) -> None:
    http, fake = stripe_client, fake_of(stripe_stack)
    host = await host_with_room(http, fake)
    async with audience(stripe_stack, http, host.code) as seen:
        buyer = await enter(http, host.code, "SurvivorSue")
        seq = await say(http, host.code, buyer, "pin me through the crash")
        await seen.leave()
        created = await order(http, host.code, buyer, {"pin": {"target_seq": seq, "tier_cents": 1000}})
        order_id = created["order"]["id"]

        board = await asyncpg.connect(stripe_stack.database_url)
        await board.execute(
            "INSERT INTO messaging.room_boards (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING",
            host.room_id,
        )
        holding = board.transaction()
        await holding.start()
        try:
            await board.execute(
                "SELECT 1 FROM messaging.room_boards WHERE room_id = $1 FOR UPDATE", host.room_id
            )
            assert (await pay(fake, intent_of(created)))["error"] is None
            # The webhook was applied: paid, and the fulfilment is under way in messaging.
            assert (await order_in(http, buyer.token, order_id, "paid", "fulfilled"))["state"] == "paid"

            async def granting() -> bool:
                return bool(await board.fetchval(_WAITING_FOR_BOARD))

            await until(granting, "messaging waiting for the room's board to grant the pin")
            await stripe_stack.akill("messaging")
        finally:
            with contextlib.suppress(asyncpg.PostgresError):
                await holding.rollback()
            await board.close()

        try:
            # payments' call waits for messaging until its deadline, then the attempt fails and the
            # order waits in the outbox, still paid.
            async def failed_attempt() -> asyncpg.Record | None:
                row = await _fulfil_row(stripe_stack.database_url, order_id)
                return row if row["attempts"] >= 1 else None

            failed = await until(failed_attempt, "a failed attempt to fulfil the order", timeout=40)
            assert failed["delivered_at"] is None and "messaging" in failed["last_error"], dict(failed)
            assert (await read_order(http, buyer.token, order_id))["state"] == "paid"
        finally:
            await stripe_stack.astart("messaging")

        frame = await seen.live_socket.wait_for(lambda f: f["type"] == "paid_pin", timeout=40)
        done = await order_in(http, buyer.token, order_id, "fulfilled", timeout=40)
        assert (frame["seq"], frame["paid_pin"]["id"], frame["paid_pin"]["amount_cents"]) == (
            done["fulfilled_seq"],
            order_id,
            1000,
        )
        # The pin is the room's next entry after the message: nothing half-done was left behind.
        assert frame["seq"] == seq + 1
        assert await say(http, host.code, host.me, "still here") == seq + 2
        live, resumed, fresh = await seen.views()

    # The relay marks the row delivered once the handler returned, a moment after the order's state.
    async def delivered() -> asyncpg.Record | None:
        row = await _fulfil_row(stripe_stack.database_url, order_id)
        return row if row["delivered_at"] is not None else None

    fulfil = await until(delivered, "the fulfil row marked delivered")
    assert fulfil["attempts"] >= 1, dict(fulfil)
    _, last = await fresh_view(http, host.code, buyer.token)
    assert last == seq + 2
    assert [(p[0], p[2]) for p in fresh.pinned()] == [(order_id, 1000)]
    assert live.pin_entries == resumed.pin_entries == [frame["seq"]]

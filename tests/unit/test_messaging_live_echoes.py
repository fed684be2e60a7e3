"""A messaging process hands the entries it commits to its own hubs at once and then hears them again
over pub/sub: that echo is recognised by the id in the payload's clear header and dropped as it is
read, while every other payload (another process's entry, one whose local hand-over was dropped, a
forgotten echo) still goes to the hub to be opened."""

from __future__ import annotations

import os
import uuid

import redis.asyncio as aioredis
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chatpop.messaging.v1 import messaging_pb2
from chatpop_messaging import fanout as fanout_module
from chatpop_messaging.fanout import Fanout, RoomHub, Subscription
from chatpop_messaging.hotcache import live_channel
from chatpop_messaging.keys import Sealer

ROOM = str(uuid.uuid4())


def _entry(seq: int) -> messaging_pb2.Message:
    return messaging_pb2.Message(id=str(uuid.uuid4()), room_id=ROOM, seq=seq, text=f"entry {seq}")


def _idle_hub() -> tuple[Fanout, RoomHub, Subscription]:
    """A fanout whose hub for ROOM is positioned at seq 0 and waits for its next event."""
    fanout = Fanout(
        aioredis.Redis(),  # never connected: nothing here talks to Redis
        store=None,  # type: ignore[arg-type]
        reader=None,  # type: ignore[arg-type]
        poll_interval=60,
        queue_size=100,
    )
    hub = RoomHub(fanout, ROOM)
    hub.last = 0
    hub._idle = True
    subscription = Subscription(hub, 100)
    hub.subscribers.add(subscription)
    fanout._hubs[ROOM] = hub
    return fanout, hub, subscription


def _sealed(message: messaging_pb2.Message) -> bytes:
    return Sealer(ROOM, 1, AESGCM(os.urandom(32))).entry(message)


def _inbox(hub: RoomHub) -> list[object]:
    return list(hub._inbox._queue)  # type: ignore[attr-defined]


async def test_the_echo_of_a_local_entry_is_dropped_as_it_is_read() -> None:
    fanout, hub, subscription = _idle_hub()
    first, second = _entry(1), _entry(2)
    fanout.deliver_local([first, second])
    assert hub.last == 2
    assert (await subscription.next())[1].batch.messages == [first, second]  # type: ignore[index]

    fanout._on_live(live_channel(ROOM), _sealed(second))
    fanout._on_live(live_channel(ROOM), _sealed(first))
    assert _inbox(hub) == []
    # Each echo is expected once: heard again (a repair republishing it), it goes to the hub.
    fanout._on_live(live_channel(ROOM), _sealed(first))
    assert len(_inbox(hub)) == 1


async def test_payloads_not_handed_over_here_go_to_the_hub() -> None:
    fanout, hub, _ = _idle_hub()
    fanout.deliver_local([_entry(1)])
    others = [_sealed(_entry(2)), b"not an envelope"]
    for payload in others:
        fanout._on_live(live_channel(ROOM), payload)
    assert [event.data for event in _inbox(hub)] == others  # type: ignore[attr-defined]


async def test_an_entry_the_hub_could_not_take_is_not_expected_back() -> None:
    fanout, hub, _ = _idle_hub()
    hub._idle = False  # busy: events queue in the inbox
    for _ in range(fanout_module._HUB_INBOX_SIZE):
        hub.offer(fanout_module._Check(0, False))
    dropped = _entry(1)
    fanout.deliver_local([dropped])
    # Its echo is the hub's next chance to have it: not taken for an echo.
    assert not hub.echo(dropped.id)


async def test_expected_echoes_are_bounded_oldest_first(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(fanout_module, "_ECHOES_LIMIT", 3)
    fanout, hub, _ = _idle_hub()
    entries = [_entry(seq) for seq in range(1, 6)]
    for entry in entries:
        fanout.deliver_local([entry])
    assert [hub.echo(entry.id) for entry in entries] == [False, False, True, True, True]

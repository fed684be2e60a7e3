"""Live fan-out inside one messaging process.

Every room with local Subscribe streams has one RoomHub, shared by those streams and subscribed once
to the room's Redis channel. A hub hands its subscribers a gap-free, ordered run of messages: it drops
what it already delivered and fills holes from the hot cache or Postgres before going on.

Redis pub/sub may lose messages (a dropped connection, Redis down), so it is only the fast path:
after a reconnect, and every `poll_interval` for rooms that were idle, the hubs compare their
position with `room_counters.last_seq` and fill what pub/sub missed.

A hub hands over what it has at once: the messages of a group commit (or of everything that arrived
while it was busy) reach each subscriber as one `batch` of consecutive entries.

On a Redis Cluster the room's live and signal channels are shard channels of the slot of the room's
keys (SSUBSCRIBE, through redis-py's ClusterPubSub: one connection per node serving a subscribed room,
each read by a task of its own). A process subscribes a room's channels when the room's first local
subscriber arrives and leaves them with the last, as with classic pub/sub. When a node's connection
fails, or Redis unsubscribes a channel this process still wants (its slot moved), the subscriber
re-homes: it reads the cluster's topology again, subscribes every room on the node now serving it,
and the hubs compare their position with Postgres (a forced poll) so nothing published meanwhile is
missed. Rooms whose node cannot be reached yet (a master failing over) are tried again with a backoff
while the others stay live.

Entries this process committed reach its own hubs at once (deliver_local), and come back over pub/sub
like everyone else's: a hub remembers the ids it was handed that way until their echo arrives, and the
echo is dropped as it is read (the id is in the sealed payload's clear header), without a turn of the
hub's task or opening it.

Hubs also listen on the room's signal channel (`signals.py`) and hand each signal straight to their
subscribers: signals are not sequenced, and a subscriber with too many waiting drops them rather
than falling behind on messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import DecodeError
from redis.asyncio.cluster import RedisCluster

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.datastores import RedisClient
from chatpop_messaging import crypto, keys
from chatpop_messaging.hotcache import REDIS_ERRORS, is_cluster, live_channel, room_from_channel
from chatpop_messaging.metrics import GAP_FILLS, REDIS_FAILURES, SIGNALS_DROPPED, SUBSCRIBERS
from chatpop_messaging.reader import MessageReader
from chatpop_messaging.signals import room_from_signal_channel, signal_channel
from chatpop_messaging.store import MessageStore

log = logging.getLogger(__name__)

Delivery = tuple[int, messaging_pb2.SubscribeResponse]
# The seq a signal carries in a subscriber's queue: signals have none, and never count as a gap.
SIGNAL_SEQ = -1
# Signals waiting per subscriber beyond which new ones are dropped.
_SIGNAL_BACKLOG = 256

_HUB_INBOX_SIZE = 10_000
# Ids of locally committed entries a hub waits to see echoed back over pub/sub (the oldest forgotten
# past it: Redis down, or publishing failed; a forgotten echo is then opened and dropped by its seq).
_ECHOES_LIMIT = 4_096
# Inbox events a hub takes in one go before handing their messages to its subscribers.
_HUB_DRAIN = 1_000
_POLL_BATCH = 5_000
_FILL_CHUNK = 500
_RECONNECT_DELAY_MAX = 2.0
_RETRY_DELAY = 1.0
# Nobody publishes here. Staying subscribed to it keeps the connection in subscribed mode for good,
# where redis-py sends later (un)subscribes without a health-check round trip of their own: only the
# listener task ever reads from the connection. Single Redis only: on a cluster each node's connection
# exists while it serves a subscribed room, and its first SSUBSCRIBE goes out before its reader starts.
_QUIET_CHANNEL = "msg:{fanout}:quiet"
# Seconds between the sharded subscriber's looks at its node readers and rooms waiting for a node.
_SUPERVISE_INTERVAL = 1.0
# Seconds between reads of the cluster's topology by the sharded subscriber, which re-homes when a
# subscribed room's slot is served elsewhere now without any sign on its connection (a node cut off
# by the network, not refusing connections).
_TOPOLOGY_CHECK_INTERVAL = 5.0


def responses(messages: list[messaging_pb2.Message]) -> list[messaging_pb2.SubscribeResponse]:
    """Ascending entries as Subscribe responses: each run of consecutive seqs one `batch` (a lone entry
    a `message`), so a batch never spans a hole."""
    found: list[messaging_pb2.SubscribeResponse] = []
    start = 0
    for index in range(1, len(messages) + 1):
        if index == len(messages) or messages[index].seq != messages[index - 1].seq + 1:
            run = messages[start:index]
            if len(run) == 1:
                found.append(messaging_pb2.SubscribeResponse(message=run[0]))
            elif run:
                found.append(messaging_pb2.SubscribeResponse(batch=messaging_pb2.MessageBatch(messages=run)))
            start = index
    return found


def carried(response: messaging_pb2.SubscribeResponse) -> list[messaging_pb2.Message]:
    """The entries a `message` or `batch` response carries, ascending."""
    if response.WhichOneof("event") == "batch":
        return list(response.batch.messages)
    return [response.message]


class Subscription:
    """One Subscribe stream's place in a hub: a queue of deliveries, bounded for messages and, apart
    from them, for signals."""

    def __init__(self, hub: RoomHub, queue_size: int) -> None:
        self.hub = hub
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._queue_size = queue_size
        self._messages = 0
        self._signals = 0
        self.overflowed = False
        self.left = False

    def push(self, delivery: Delivery, count: int = 1) -> bool:
        """Queue a delivery of `count` messages (a batch counts each); False once over the bound."""
        if self._messages >= self._queue_size:
            self.overflowed = True
            return False
        self._messages += count
        self._queue.put_nowait(delivery)
        return True

    def push_signal(self, response: messaging_pb2.SubscribeResponse) -> None:
        if self._signals >= _SIGNAL_BACKLOG:
            SIGNALS_DROPPED.inc()
            return
        self._signals += 1
        self._queue.put_nowait((SIGNAL_SEQ, response))

    async def next(self) -> Delivery | None:
        """The next live message or signal (seq SIGNAL_SEQ), or None once it fell too far behind."""
        if self.overflowed:
            return None
        delivery = await self._queue.get()
        if delivery[0] == SIGNAL_SEQ:
            self._signals -= 1
        else:
            response = delivery[1]
            self._messages -= len(response.batch.messages) if response.WhichOneof("event") == "batch" else 1
        return delivery


class _Sealed:
    """A live channel's payload, opened by the room's hub (opening may have to fetch a key)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Check:
    __slots__ = ("force", "observed")

    def __init__(self, observed: int, force: bool) -> None:
        self.observed = observed
        self.force = force


_Event = messaging_pb2.Message | list[messaging_pb2.Message] | _Check | _Sealed


class RoomHub:
    def __init__(self, fanout: Fanout, room_id: str) -> None:
        self.room_id = room_id
        self.subscribers: set[Subscription] = set()
        self.refs = 0
        # Highest seq handed to subscribers; everything at or below it was delivered in order.
        self.last: int | None = None
        self._fanout = fanout
        self._inbox: asyncio.Queue[_Event] = asyncio.Queue(maxsize=_HUB_INBOX_SIZE)
        # Messages dispatched but not handed to the subscribers yet (see _flush).
        self._pending: list[messaging_pb2.Message] = []
        self._live_since_check = False
        self._prev_observed = 0
        self.task: asyncio.Task[None] | None = None
        # Set once `last` is known: subscribers behind it catch up before taking live deliveries.
        self.positioned = asyncio.Event()
        # The hub's task waits for its next event with nothing in hand (see offer).
        self._idle = False
        # Ids of entries handed over by this process whose pub/sub echo has not come yet (ordered).
        self._echoes: dict[str, None] = {}

    def offer_local(self, messages: list[messaging_pb2.Message]) -> None:
        """Entries this process committed (ascending): handed over, and their echo expected."""
        if self.offer(messages):
            echoes = self._echoes
            for message in messages:
                echoes[message.id] = None
            while len(echoes) > _ECHOES_LIMIT:
                del echoes[next(iter(echoes))]

    def echo(self, message_id: str) -> bool:
        """Whether a live payload of this id is the echo of an entry handed over by deliver_local
        (then expected no more)."""
        return self._echoes.pop(message_id, False) is None

    def offer(self, event: _Event) -> bool:
        """Hand an event to the hub; False when its inbox was full and it was dropped."""
        if self._idle and isinstance(event, list) and self._inbox.empty() and self._continues(event):
            # Entries this process committed that continue the position, to a hub with nothing else
            # to do: handed to the subscribers now, without a turn of the hub's task in between.
            for message in event:
                self._dispatch(message)
            self._live_since_check = True
            self._flush()
            return True
        try:
            self._inbox.put_nowait(event)
        except asyncio.QueueFull:
            # Dropping is safe: a later message or the next poll finds the hole and fills it.
            return False
        return True

    def _continues(self, messages: list[messaging_pb2.Message]) -> bool:
        expected = self.last
        if expected is None:
            return False
        for message in messages:
            if message.seq != expected + 1:
                return False
            expected = message.seq
        return True

    async def run(self) -> None:
        await self._fanout.sync_subscription(self.room_id)
        while self.last is None:
            try:
                self.last = await self._fanout.store.last_seq(self.room_id)
            except Exception:
                log.exception("reading the position of room %s failed", self.room_id)
                await asyncio.sleep(_RETRY_DELAY)
        self.positioned.set()
        while True:
            self._idle = True
            try:
                first = await self._inbox.get()
            finally:
                self._idle = False
            events = [first]
            # Everything else already waiting goes out with it: one delivery per subscriber.
            while len(events) < _HUB_DRAIN and not self._inbox.empty():
                events.append(self._inbox.get_nowait())
            try:
                for event in events:
                    await self._handle(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Nothing was skipped: the position did not move, the next event or poll retries.
                log.exception("delivering to room %s failed", self.room_id)
            finally:
                self._flush()

    async def _handle(self, event: _Event) -> None:
        if isinstance(event, _Check):
            await self._check(event)
        elif isinstance(event, _Sealed):
            message = await self._open(event.data)
            if message is not None:
                await self._live(message)
        elif isinstance(event, list):
            for message in event:
                await self._live(message)
        else:
            await self._live(event)

    async def _open(self, data: bytes) -> messaging_pb2.Message | None:
        """The message a live payload carries; None (the next poll fills the hole) when it does not
        open with the room's keys."""
        opener = await keys.keyring().opener(self.room_id, [data])
        try:
            return opener.entry(data)
        except crypto.Unreadable:
            log.warning("ignoring a live payload of room %s that does not open", self.room_id)
            return None

    async def _live(self, message: messaging_pb2.Message) -> None:
        assert self.last is not None
        if message.seq <= self.last:
            return
        if message.seq > self.last + 1:
            GAP_FILLS.labels("live").inc()
            await self._fill(self.last + 1, message.seq - 1, newest=message.seq)
        self._dispatch(message)
        self._live_since_check = True

    async def _check(self, check: _Check) -> None:
        assert self.last is not None
        if check.observed > self.last and (
            check.force or not self._live_since_check or self.last < self._prev_observed
        ):
            GAP_FILLS.labels("reconnect" if check.force else "poll").inc()
            await self._fill(self.last + 1, check.observed, newest=check.observed)
        self._prev_observed = check.observed
        self._live_since_check = False

    async def _fill(self, low: int, high: int, *, newest: int) -> None:
        # In chunks: after a long outage the hole may be large, and subscribers that cannot take it
        # all are told to reload by their bounded queues anyway.
        for start in range(low, high + 1, _FILL_CHUNK):
            end = min(high, start + _FILL_CHUNK - 1)
            for message in await self._fanout.reader.read_range(self.room_id, start, end, newest=newest):
                self._dispatch(message)
            self._flush()
            # Seqs missing from Postgres were removed (retention): there is nothing to deliver for them.
            self.last = max(self.last or 0, end)

    def signal(self, signal: messaging_pb2.Signal) -> None:
        """Hand a signal to every subscriber at once: it has no place in the message order."""
        response = messaging_pb2.SubscribeResponse(signal=signal)
        for subscription in tuple(self.subscribers):
            subscription.push_signal(response)

    def _dispatch(self, message: messaging_pb2.Message) -> None:
        if self.last is not None and message.seq <= self.last:
            return
        self._pending.append(message)
        self.last = message.seq

    def _flush(self) -> None:
        """Hand the dispatched messages to every subscriber: consecutive ones as one batch."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        for response in responses(pending):
            delivery = (carried(response)[0].seq, response)
            count = len(response.batch.messages) if response.WhichOneof("event") == "batch" else 1
            for subscription in list(self.subscribers):
                if not subscription.push(delivery, count):
                    self.subscribers.discard(subscription)


class Fanout:
    def __init__(
        self,
        redis: RedisClient,
        store: MessageStore,
        reader: MessageReader,
        *,
        poll_interval: float,
        queue_size: int,
        on_room_updated: Callable[[rooms_pb2.Room], None] | None = None,
        on_kick: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.reader = reader
        # Told of every room update this process hears of, so what it enforces changes at once.
        self._on_room_updated = on_room_updated
        # Told of every kick (room id, participant id) it hears of: that participant's tokens were
        # revoked, so what this process cached about them is stale.
        self._on_kick = on_kick
        self._redis = redis
        self._sharded = is_cluster(redis)
        self._poll_interval = poll_interval
        self._queue_size = queue_size
        self._hubs: dict[str, RoomHub] = {}
        self._pubsub: Any = None
        self._subscription_lock = asyncio.Lock()
        self._poll_now = asyncio.Event()
        self._force_poll = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        # Sharded pub/sub (a cluster): the reader task of each node's connection, by node name; rooms
        # whose channels could not be subscribed yet (their node unreachable); shard channels whose
        # SUNSUBSCRIBE this process sent and whose confirmation has not come back (any other
        # sunsubscribe of a wanted room means its slot moved); set when the subscriber must re-home.
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._unhomed: set[str] = set()
        # The node each subscribed room's channels are on; nodes that refused a subscribe since the
        # subscriber last tried every node (a room arriving meanwhile does not wait on them again).
        self._homes: dict[str, str] = {}
        self._unreachable: set[str] = set()
        self._leaving: Counter[bytes] = Counter()
        self._trouble = asyncio.Event()

    def start(self) -> list[asyncio.Task[None]]:
        self._background = [
            asyncio.create_task(
                self._listen_sharded() if self._sharded else self._listen(), name="fanout listen"
            ),
            asyncio.create_task(self._poll(), name="fanout poll"),
        ]
        return list(self._background)

    def join(self, room_id: str) -> Subscription:
        hub = self._hubs.get(room_id)
        if hub is None:
            hub = RoomHub(self, room_id)
            self._hubs[room_id] = hub
            hub.task = self._spawn(hub.run(), f"hub {room_id}")
        subscription = Subscription(hub, self._queue_size)
        hub.refs += 1
        hub.subscribers.add(subscription)
        SUBSCRIBERS.inc()
        return subscription

    def leave(self, subscription: Subscription) -> None:
        """Synchronous, so it is safe from a stream's finaliser; the unsubscribe runs as a task."""
        if subscription.left:
            return
        subscription.left = True
        SUBSCRIBERS.dec()
        hub = subscription.hub
        hub.subscribers.discard(subscription)
        hub.refs -= 1
        if hub.refs > 0:
            return
        if self._hubs.get(hub.room_id) is hub:
            del self._hubs[hub.room_id]
        if hub.task is not None:
            hub.task.cancel()
        self._spawn(self.sync_subscription(hub.room_id), f"unsubscribe {hub.room_id}")

    def deliver_local(self, messages: list[messaging_pb2.Message]) -> None:
        """Hand entries of one room committed by this process (ascending) to its local subscribers
        without a Redis round trip."""
        hub = self._hubs.get(messages[0].room_id) if messages else None
        if hub is not None:
            hub.offer_local(messages)

    async def sync_subscription(self, room_id: str) -> None:
        """Make the Redis subscription of a room match whether it has a hub now.

        Serialised, so a late unsubscribe can never undo the subscribe of a hub created after it.
        """
        async with self._subscription_lock:
            pubsub = self._pubsub
            if pubsub is None:
                return
            if self._sharded:
                await self._sync_shard_channels(pubsub, room_id)
                return
            channels = (live_channel(room_id), signal_channel(room_id))
            try:
                if room_id in self._hubs:
                    await pubsub.subscribe(*channels)
                else:
                    await pubsub.unsubscribe(*channels)
            except Exception as exc:
                # The listener sees the broken connection too and resubscribes every room.
                REDIS_FAILURES.labels("subscribe").inc()
                log.warning("changing the subscription of room %s failed: %s", room_id, exc)

    async def _sync_shard_channels(self, pubsub: Any, room_id: str) -> None:
        """sync_subscription on a cluster (the subscription lock held)."""
        if room_id in self._hubs:
            self._unhomed |= await self._home(pubsub, [room_id])
            return
        self._unhomed.discard(room_id)
        self._homes.pop(room_id, None)
        channels = (live_channel(room_id), signal_channel(room_id))
        for channel in channels:
            if channel.encode() in pubsub.shard_channels:
                self._leaving[channel.encode()] += 1
        try:
            await pubsub.sunsubscribe(*channels)
        except REDIS_ERRORS as exc:
            # The node's reader sees its connection fail too, and the subscriber re-homes.
            REDIS_FAILURES.labels("subscribe").inc()
            log.warning("leaving the shard channels of room %s failed: %s", room_id, exc)

    async def _home(self, pubsub: Any, rooms: Iterable[str]) -> set[str]:
        """Subscribe the shard channels of `rooms` on the nodes serving them now (the subscription
        lock held); the rooms whose node could not be reached (tried once per node until the
        subscriber's next retry)."""
        assert isinstance(self._redis, RedisCluster)
        unreachable = self._unreachable
        unhomed: set[str] = set()
        for room_id in rooms:
            channels = (live_channel(room_id), signal_channel(room_id))
            try:
                node = self._redis.get_node_from_key(channels[0])
            except REDIS_ERRORS:
                unhomed.add(room_id)
                continue
            if node is None or node.name in unreachable:
                unhomed.add(room_id)
                continue
            try:
                await pubsub.ssubscribe(*channels)
            except REDIS_ERRORS as exc:
                REDIS_FAILURES.labels("subscribe").inc()
                log.warning("subscribing room %s on %s failed: %s", room_id, node.name, exc)
                unreachable.add(node.name)
                unhomed.add(room_id)
                continue
            self._homes[room_id] = node.name
        self._watch_nodes(pubsub)
        return unhomed

    def _watch_nodes(self, pubsub: Any) -> None:
        """A reader task for every node connection of `pubsub` that carries subscriptions."""
        assert isinstance(self._redis, RedisCluster)
        for name, node_pubsub in list(pubsub.node_pubsub_mapping.items()):
            task = self._readers.get(name)
            if (task is not None and not task.done()) or node_pubsub.connection is None:
                continue
            node = self._redis.get_node(node_name=name)
            if node is None:
                continue
            self._readers[name] = asyncio.create_task(
                self._read_node(pubsub, node, self._trouble), name=f"fanout shard reader {name}"
            )

    async def _read_node(self, pubsub: Any, node: Any, trouble: asyncio.Event) -> None:
        """Read one node's shard messages until its connection is dropped (no room left on it);
        a failure, or a wanted channel unsubscribed by Redis, makes the subscriber re-home."""
        try:
            while node.name in pubsub.node_pubsub_mapping and not trouble.is_set():
                event = await pubsub.get_sharded_message(target_node=node, timeout=1.0)
                if event is None:
                    continue
                kind = event["type"].decode() if isinstance(event["type"], bytes) else event["type"]
                channel = event["channel"]
                if kind == "smessage":
                    self._on_live(channel, event["data"])
                elif kind == "sunsubscribe":
                    name = channel if isinstance(channel, bytes) else str(channel).encode()
                    if self._leaving[name] > 0:
                        self._leaving[name] -= 1
                        if not self._leaving[name]:
                            del self._leaving[name]
                        continue
                    room_id = room_from_channel(name) or room_from_signal_channel(name)
                    if room_id is not None and room_id in self._hubs:
                        log.info("redis moved shard channel %s away from %s", name.decode(), node.name)
                        trouble.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            REDIS_FAILURES.labels("subscribe").inc()
            log.warning("redis shard pub/sub connection to %s lost: %s", node.name, exc)
            trouble.set()

    def _moved_rooms(self) -> bool:
        """Whether a subscribed room's slot is served by another node than the one its channels are
        on, in the topology just read."""
        assert isinstance(self._redis, RedisCluster)
        for room_id, name in list(self._homes.items()):
            try:
                node = self._redis.get_node_from_key(live_channel(room_id))
            except REDIS_ERRORS:
                continue
            if node is not None and node.name != name:
                log.info("room %s is served by %s now, not %s: re-homing", room_id, node.name, name)
                return True
        return False

    async def _listen_sharded(self) -> None:
        """On a cluster: keep every room with a hub subscribed on the node serving its slot; re-home
        after a node's failure or a moved slot, then look up what was published meanwhile."""
        cluster = self._redis
        assert isinstance(cluster, RedisCluster)
        loop = asyncio.get_running_loop()
        delay = 0.1
        connected_before = False
        failing = False
        while True:
            pubsub: Any = None
            self._trouble = trouble = asyncio.Event()
            try:
                # Which node serves each slot now: after a failover or a migration, not the one before.
                await cluster.nodes_manager.initialize()
                pubsub = cluster.pubsub()
                async with self._subscription_lock:
                    self._pubsub = pubsub
                    self._leaving.clear()
                    self._homes.clear()
                    self._unreachable.clear()
                    self._unhomed = await self._home(pubsub, list(self._hubs))
                if connected_before:
                    # Whatever was published while the subscriptions were elsewhere is lost: look it up.
                    self._request_poll(force=True)
                if failing:
                    log.info("redis shard pub/sub subscribed again")
                connected_before = True
                failing = False
                delay = 0.1
                retry_delay = 0.1
                retry_at = loop.time() + retry_delay
                check_at = loop.time() + _TOPOLOGY_CHECK_INTERVAL
                while not trouble.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(trouble.wait(), timeout=_SUPERVISE_INTERVAL)
                    if trouble.is_set():
                        break
                    async with self._subscription_lock:
                        self._watch_nodes(pubsub)
                    if not self._unhomed:
                        retry_delay = 0.1
                    now = loop.time()
                    retrying = bool(self._unhomed) and now >= retry_at
                    if not retrying and now < check_at:
                        continue
                    await cluster.nodes_manager.initialize()
                    check_at = now + _TOPOLOGY_CHECK_INTERVAL
                    if self._moved_rooms():
                        trouble.set()
                        break
                    if not retrying:
                        continue
                    # A master failing over: its rooms are served again once a replica took over.
                    async with self._subscription_lock:
                        self._unreachable.clear()
                        waiting = [room_id for room_id in self._unhomed if room_id in self._hubs]
                        self._unhomed = await self._home(pubsub, waiting)
                    if len(self._unhomed) < len(waiting):
                        self._request_poll(force=True)
                    retry_delay = min(retry_delay * 2, _RECONNECT_DELAY_MAX)
                    retry_at = loop.time() + retry_delay
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                REDIS_FAILURES.labels("subscribe").inc()
                if not failing:
                    log.warning("redis shard pub/sub unavailable: %s", exc)
                failing = True
            finally:
                async with self._subscription_lock:
                    if self._pubsub is pubsub:
                        self._pubsub = None
                readers = list(self._readers.values())
                self._readers.clear()
                for task in readers:
                    task.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_DELAY_MAX)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _request_poll(self, *, force: bool) -> None:
        self._force_poll = self._force_poll or force
        self._poll_now.set()

    def _on_signal(self, room_id: str, data: Any) -> None:
        hub = self._hubs.get(room_id)
        if hub is None or not isinstance(data, bytes):
            return
        try:
            signal = messaging_pb2.Signal.FromString(data)
        except DecodeError:
            log.warning("ignoring an undecodable signal for room %s", room_id)
            return
        if self._on_room_updated is not None and signal.WhichOneof("kind") == "room_updated":
            self._on_room_updated(signal.room_updated.room)
        if self._on_kick is not None and signal.WhichOneof("kind") == "kick":
            self._on_kick(room_id, signal.kick.participant_id)
        hub.signal(signal)

    def _on_live(self, channel: bytes | str, data: Any) -> None:
        room_id = room_from_channel(channel)
        if room_id is None:
            signal_room = room_from_signal_channel(channel)
            if signal_room is not None:
                self._on_signal(signal_room, data)
            return
        hub = self._hubs.get(room_id)
        if hub is None or not isinstance(data, bytes):
            return
        try:
            _, message_id, _ = crypto.envelope_header(data)
        except crypto.Unreadable:
            message_id = ""
        if message_id and hub.echo(message_id):
            return
        hub.offer(_Sealed(data))

    async def _listen(self) -> None:
        """Keep one pub/sub connection for every room with a hub; after a drop, resubscribe and poll."""
        delay = 0.1
        connected_before = False
        failing = False
        while True:
            pubsub: Any = self._redis.pubsub()
            try:
                await pubsub.subscribe(_QUIET_CHANNEL)
                async with self._subscription_lock:
                    self._pubsub = pubsub
                    channels = [
                        channel
                        for room_id in self._hubs
                        for channel in (live_channel(room_id), signal_channel(room_id))
                    ]
                    if channels:
                        await pubsub.subscribe(*channels)
                if connected_before:
                    # Whatever was published while the connection was down is lost: look it up.
                    self._request_poll(force=True)
                if failing:
                    log.info("redis pub/sub connected again")
                connected_before = True
                failing = False
                delay = 0.1
                while True:
                    event = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if event is not None and event.get("type") == "message":
                        self._on_live(event["channel"], event["data"])
            except Exception as exc:
                REDIS_FAILURES.labels("subscribe").inc()
                if not failing:
                    log.warning("redis pub/sub connection lost: %s", exc)
                failing = True
            finally:
                async with self._subscription_lock:
                    if self._pubsub is pubsub:
                        self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_DELAY_MAX)

    async def _poll(self) -> None:
        """Compare each hub's position with Postgres, every poll interval or right after a reconnect."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), timeout=self._poll_interval)
            self._poll_now.clear()
            force, self._force_poll = self._force_poll, False
            hubs = [hub for hub in self._hubs.values() if hub.last is not None]
            try:
                for start in range(0, len(hubs), _POLL_BATCH):
                    batch = hubs[start : start + _POLL_BATCH]
                    observed = await self.store.last_seqs([hub.room_id for hub in batch])
                    for hub in batch:
                        hub.offer(_Check(observed[hub.room_id], force))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checking room positions failed")
                self._force_poll = self._force_poll or force

    async def close(self) -> None:
        tasks = [*self._background, *self._tasks, *self._readers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None

"""messaging on a single Redis and on a Redis Cluster (REDIS_CLUSTER): every Redis user of messaging
(hot cache, live fan-out, signals, presence, rate limits and slow mode, erasure) against the session's
single Redis and the session's 3-master cluster, two messaging processes in-process each time; then
what only a cluster has: room channels spread over the shards, subscribed only where a room has local
subscribers, scripts a node does not know yet, and a master killed mid-traffic (a 3+3 cluster of the
test's own).

The servers, tokens and the fake RoomsService come from test_messaging_service.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from signal import SIGSTOP
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from test_messaging_batches import batched, send_batch, sent
from test_messaging_paid_pins import as_service
from test_messaging_service import (
    EVENT_TIMEOUT,
    GENEROUS_RATE_LIMIT,
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
)
from test_messaging_signals import instance, presence, report, signal, typing

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.datastores import RedisClient, create_redis
from chatpop_common.devstack import RedisCluster as ClusterServers
from chatpop_messaging.hotcache import live_channel, stream_key
from chatpop_messaging.signals import signal_channel

__all__ = ["fake_rooms", "rooms"]  # fixtures shared with test_messaging_service.py

HOT_CACHE_SIZE = 20


@dataclass(frozen=True)
class Target:
    """REDIS_URL and REDIS_CLUSTER for the servers under test."""

    url: str
    cluster: bool

    def client(self) -> RedisClient:
        return create_redis(self.url, cluster=self.cluster)


@pytest.fixture(scope="module", params=["single", "cluster"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "cluster":
        return Target(request.getfixturevalue("redis_cluster").url, cluster=True)
    return Target(request.getfixturevalue("redis_url"), cluster=False)


@pytest_asyncio.fixture(scope="module")
async def servers(
    database_url: str, target: Target, rooms: tuple[FakeRooms, str]
) -> AsyncIterator[tuple[Messaging, Messaging]]:
    """Two messaging processes on the same Postgres and Redis (single or cluster)."""
    values: dict[str, Any] = {
        "redis_cluster": target.cluster,
        "hot_cache_size": HOT_CACHE_SIZE,
        "room_policy_cache_ttl": 0,
        "participant_cache_ttl": 0,
        **GENEROUS_RATE_LIMIT,
    }
    async with (
        messaging_server(database_url, target.url, rooms[1], **values) as a,
        messaging_server(database_url, target.url, rooms[1], **values) as b,
    ):
        yield a, b


@pytest_asyncio.fixture
async def redis(target: Target) -> AsyncIterator[RedisClient]:
    client = target.client()
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def streams() -> AsyncIterator[Callable[[Messaging, str, int], Events]]:
    """Opens Subscribe streams, closed after the test."""
    opened: list[Events] = []

    def open_stream(server: Messaging, room_id: str, after_seq: int = -1) -> Events:
        events = server.subscribe(room_id, after_seq=after_seq)
        opened.append(events)
        return events

    yield open_stream
    for events in opened:
        await events.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = EVENT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


async def stream_seqs(redis: RedisClient, room_id: str) -> list[int]:
    entries = await redis.xrange(stream_key(room_id), "-", "+")
    return [int(entry_id.split(b"-")[0]) for entry_id, _ in entries]


async def live(events: Events, server: Messaging, member: Member) -> None:
    """Send typing until the stream hears it: its process is subscribed to the room's channels now."""
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        assert time.monotonic() < deadline, "the stream never heard the room's signals"
        await typing(server, member)
        try:
            event = await events.next(timeout=0.5)
        except TimeoutError:
            continue
        assert event.WhichOneof("event") == "signal", event
        break
    while True:
        try:
            event = await events.next(timeout=0.3)
        except TimeoutError:
            return
        assert event.WhichOneof("event") == "signal", event


async def messages_until(events: Events, last_seq: int) -> list[int]:
    """Seqs of the messages received until `last_seq` arrives (signals skipped)."""
    seqs: list[int] = []
    while not seqs or seqs[-1] < last_seq:
        event = await events.next()
        assert isinstance(event, messaging_pb2.SubscribeResponse), f"expected an event, got {event!r}"
        if event.WhichOneof("event") == "signal":
            continue
        assert event.WhichOneof("event") == "message", event
        seqs.append(event.message.seq)
    return seqs


# --- every Redis user, on a single Redis and on a cluster ---------------------------------------------


async def test_sends_are_acknowledged_cached_and_read_back(
    servers: tuple[Messaging, Messaging], fake_rooms: FakeRooms, redis: RedisClient
) -> None:
    a, b = servers
    room = new_room()
    member = join(fake_rooms, room)
    seqs = [(await a.send(member, f"m{i}")).message.seq for i in range(1, 26)]
    assert seqs == list(range(1, 26))

    # The hot stream holds the newest entries, contiguous up to the last.
    cached = await stream_seqs(redis, room)
    assert cached and cached[-1] == 25 and cached == list(range(cached[0], 26))
    assert len(cached) >= HOT_CACHE_SIZE

    page = await b.history(member, limit=10)
    assert [m.seq for m in page.messages] == list(range(25, 15, -1))
    resumed = await b.after(member, after_seq=20)
    assert [m.seq for m in resumed.messages] == [21, 22, 23, 24, 25]
    assert [m.text for m in resumed.messages] == [f"m{i}" for i in range(21, 26)]


async def test_a_batch_over_many_rooms_is_cached_and_published_in_one_go(
    servers: tuple[Messaging, Messaging],
    fake_rooms: FakeRooms,
    redis: RedisClient,
    streams: Callable[[Messaging, str, int], Events],
) -> None:
    a, b = servers
    members = [join(fake_rooms, new_room()) for _ in range(8)]
    listening = []
    for member in members:
        events = streams(b, member.room_id, 0)
        await live(events, b, member)
        listening.append(events)

    results = await send_batch(a, [batched(m, f"{n}-{m.room_id}") for m in members for n in range(3)])
    assert [sent(r).message.seq for r in results] == [1, 2, 3] * len(members)
    for member, events in zip(members, listening, strict=True):
        assert await messages_until(events, 3) == [1, 2, 3]
        assert await stream_seqs(redis, member.room_id) == [1, 2, 3]


async def test_scripts_a_node_does_not_know_are_sent_again(
    servers: tuple[Messaging, Messaging],
    fake_rooms: FakeRooms,
    redis: RedisClient,
    streams: Callable[[Messaging, str, int], Events],
) -> None:
    """After SCRIPT FLUSH (a restarted node, a promoted replica) sends, limits and publishing work
    as before, for pipelined scripts over several rooms (and nodes) too."""
    a, b = servers
    members = [join(fake_rooms, new_room()) for _ in range(6)]
    listening = []
    for member in members:
        events = streams(b, member.room_id, 0)
        await live(events, b, member)
        listening.append(events)
    if isinstance(redis, RedisCluster):
        await redis.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.PRIMARIES)
    else:
        await redis.script_flush()

    results = await send_batch(a, [batched(m, "after a flush") for m in members])
    assert [sent(r).message.seq for r in results] == [1] * len(members)
    for member, events in zip(members, listening, strict=True):
        assert await messages_until(events, 1) == [1]
        assert await stream_seqs(redis, member.room_id) == [1]


async def test_live_messages_cross_processes_in_order(
    servers: tuple[Messaging, Messaging],
    fake_rooms: FakeRooms,
    streams: Callable[[Messaging, str, int], Events],
) -> None:
    a, b = servers
    room = new_room()
    member = join(fake_rooms, room)
    on_b = streams(b, room, 0)
    on_a = streams(a, room, 0)
    await live(on_b, b, member)
    await live(on_a, a, member)

    async def send_all() -> None:
        for i in range(30):
            await (a if i % 2 else b).send(member, f"live {i}")

    await send_all()
    assert await messages_until(on_b, 30) == list(range(1, 31))
    assert await messages_until(on_a, 30) == list(range(1, 31))


async def test_typing_reaches_both_processes(
    servers: tuple[Messaging, Messaging],
    fake_rooms: FakeRooms,
    streams: Callable[[Messaging, str, int], Events],
) -> None:
    a, b = servers
    room = new_room()
    member = join(fake_rooms, room, "Typist")
    on_a, on_b = streams(a, room, -1), streams(b, room, -1)
    await live(on_a, a, member)
    await live(on_b, a, member)
    await typing(b, member)
    for events in (on_a, on_b):
        got = await signal(events, "typing")
        assert got.typing.participant_id == member.participant.id


async def test_presence_is_shared_by_both_processes(
    servers: tuple[Messaging, Messaging],
    fake_rooms: FakeRooms,
    streams: Callable[[Messaging, str, int], Events],
) -> None:
    a, b = servers
    rooms_ = [new_room() for _ in range(4)]
    members = [join(fake_rooms, room) for room in rooms_]
    on_b = streams(b, rooms_[0], -1)
    await live(on_b, b, members[0])
    edge = instance()
    # One report over several rooms: one pipelined script per room.
    response = await a.stub.ReportPresence(
        messaging_pb2.ReportPresenceRequest(
            instance_id=edge,
            ttl_seconds=30,
            rooms=[
                messaging_pb2.PresenceReport(room_id=m.room_id, joined=[m.participant.id], count=1)
                for m in members
            ],
        ),
        timeout=10,
    )
    assert response is not None
    for member in members:
        online, version = await presence(b, member)
        assert online == {member.participant.id} and version >= 1
    got = await signal(on_b, "presence")
    assert set(got.presence.online) == {members[0].participant.id}
    await report(a, edge, rooms_[0], left=[members[0].participant.id], count=0)
    assert (await presence(b, members[0]))[0] == set()


async def test_rate_limit_and_slow_mode(
    database_url: str, target: Target, rooms: tuple[FakeRooms, str], fake_rooms: FakeRooms
) -> None:
    room = new_room()
    fake_rooms.rooms[room] = rooms_pb2.Room(id=room, slow_mode_seconds=30)
    slowed = join(fake_rooms, room)
    other_room = new_room()
    hasty = join(fake_rooms, other_room)
    async with messaging_server(
        database_url,
        target.url,
        rooms[1],
        redis_cluster=target.cluster,
        room_policy_cache_ttl=0,
        send_rate_limit=3,
        send_rate_burst=3,
    ) as server:
        await server.send(slowed, "first")
        with pytest.raises(grpc.aio.AioRpcError) as held:
            await server.send(slowed, "too soon")
        assert failure(held.value)[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "slow_mode")

        for i in range(3):
            await server.send(hasty, f"quick {i}")
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await server.send(hasty, "one too many")
        assert failure(limited.value)[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")

        # The batched path: one script per room, pipelined.
        results = await send_batch(server, [batched(slowed, "still too soon"), batched(hasty, "still")])
        codes = [r.error.code for r in results]
        assert codes == ["slow_mode", "rate_limited"]


async def test_inspecting_and_rebuilding_a_rooms_hot_cache(
    servers: tuple[Messaging, Messaging], fake_rooms: FakeRooms, redis: RedisClient
) -> None:
    a, b = servers
    member = join(fake_rooms, new_room())
    room = member.room_id
    for i in range(6):
        await a.send(member, f"kept {i}")
    cli = as_service("cli")
    inspected = await b.stub.InspectRoom(
        messaging_pb2.InspectRoomRequest(room_id=room), metadata=cli, timeout=10
    )
    assert inspected.consistent and inspected.hot_cache.max_seq == 6

    # Entries lost from the stream (a failover before they reached the replica): a rebuild repairs it.
    await redis.xdel(stream_key(room), "5-0")
    broken = await b.stub.InspectRoom(
        messaging_pb2.InspectRoomRequest(room_id=room), metadata=cli, timeout=10
    )
    assert not broken.consistent and list(broken.missing_in_cache) == [5]
    rebuilt = await b.stub.RebuildHotCache(
        messaging_pb2.RebuildHotCacheRequest(room_id=room), metadata=cli, timeout=10
    )
    assert rebuilt.entries == 6
    assert await stream_seqs(redis, room) == [1, 2, 3, 4, 5, 6]
    inspected = await b.stub.InspectRoom(
        messaging_pb2.InspectRoomRequest(room_id=room), metadata=cli, timeout=10
    )
    assert inspected.consistent


async def test_erasing_a_room_leaves_no_key_of_it(
    servers: tuple[Messaging, Messaging], fake_rooms: FakeRooms, redis: RedisClient
) -> None:
    a, _ = servers
    host_id = str(uuid.uuid4())
    room = fake_rooms.open(host_id)
    room.retention_days = 0
    member = join(fake_rooms, room.id)
    for i in range(3):
        await a.send(member, f"to be erased {i}")
    await report(a, instance(), room.id, joined=[member.participant.id], count=1)
    pattern = f"msg:{{{room.id}}}:*"

    async def room_keys() -> list[Any]:
        if isinstance(redis, RedisCluster):
            return list(await redis.keys(pattern, target_nodes=RedisCluster.PRIMARIES))
        return list(await redis.keys(pattern))

    assert len(await room_keys()) >= 3  # the stream, presence, the rate limit
    room.closed = True
    request = messaging_pb2.EraseRoomRequest(room_id=room.id)
    assert (await a.stub.EraseRoom(request, metadata=as_service("rooms"), timeout=30)).erased
    assert await room_keys() == []


# --- a cluster only ------------------------------------------------------------------------------------


async def shard_channels(redis: RedisCluster) -> dict[str, set[str]]:
    """Each master's shard channels (PUBSUB SHARDCHANNELS asked of it), by node name."""
    found: dict[str, set[str]] = {}
    for node in redis.get_primaries():
        names = await redis.execute_command("PUBSUB SHARDCHANNELS", target_nodes=node)
        found[node.name] = {name.decode() for name in names}
    return found


async def test_room_channels_spread_over_shards_and_only_rooms_with_local_subscribers_are_subscribed(
    servers: tuple[Messaging, Messaging],
    target: Target,
    fake_rooms: FakeRooms,
    redis: RedisClient,
) -> None:
    if not target.cluster:
        pytest.skip("shard channels exist on a cluster only")
    assert isinstance(redis, RedisCluster)
    await redis.initialize()
    a, b = servers
    # Twelve rooms, four on each master, taken in turn from each: a and b both subscribe on every master.
    by_node: dict[str, list[str]] = {node.name: [] for node in redis.get_primaries()}
    assert len(by_node) == 3
    while any(len(rooms) < 4 for rooms in by_node.values()):
        room_id = new_room()
        rooms = by_node[redis.get_node_from_key(live_channel(room_id)).name]
        if len(rooms) < 4:
            rooms.append(room_id)
    in_turn = zip(*by_node.values(), strict=True)
    members = [join(fake_rooms, room_id) for taken in in_turn for room_id in taken]

    opened: list[Events] = []
    try:
        # Rooms 0-5 have a subscriber on a, 6-11 on b.
        for index, member in enumerate(members):
            server = a if index < 6 else b
            events = server.subscribe(member.room_id, after_seq=-1)
            opened.append(events)
            await live(events, server, member)

        channels = await shard_channels(redis)
        every = set().union(*channels.values())
        for member in members:
            room = member.room_id
            node = redis.get_node_from_key(live_channel(room)).name
            # On the room's node, next to the room's keys, and nowhere else.
            assert {live_channel(room), signal_channel(room)} <= channels[node]
            assert all(live_channel(room) not in names for name, names in channels.items() if name != node)
        assert all(live_channel(m.room_id) in every for m in members)

        # Each process subscribes only its own rooms: a shard channel has one subscriber.
        for member in members:
            node = redis.get_node_from_key(live_channel(member.room_id))
            counts = await redis.execute_command(
                "PUBSUB SHARDNUMSUB", live_channel(member.room_id), target_nodes=node
            )
            assert subscribers(counts) == 1
    finally:
        for events in opened:
            await events.close()

    async def none_left() -> bool:
        every = set().union(*(await shard_channels(redis)).values())
        return not any(live_channel(m.room_id) in every for m in members)

    await eventually(none_left, "the last subscriber of each room left its shard channels")


def subscribers(counts: Any) -> int:
    """The count of a PUBSUB SHARDNUMSUB answer for one channel."""
    # [(channel, count)] once redis-py parsed it, [channel, count] when raw.
    return int(counts[0][1]) if isinstance(counts[0], (list, tuple)) else int(counts[1])


# --- a master killed mid-traffic ---------------------------------------------------------------------


async def master_of(redis: RedisCluster, key: str) -> int:
    """The port of the master serving `key`'s slot (CLUSTER KEYSLOT, CLUSTER SLOTS)."""
    slot = int(await redis.execute_command("CLUSTER KEYSLOT", key))
    ranges = await redis.execute_command("CLUSTER SLOTS", target_nodes=redis.get_random_node())
    for entry in ranges if isinstance(ranges, list) else []:
        low, high, master = int(entry[0]), int(entry[1]), entry[2]
        if low <= slot <= high:
            return int(master[1])
    for (low, high), nodes in ranges.items() if isinstance(ranges, dict) else []:
        if int(low) <= slot <= int(high):
            return int(nodes["primary"][1])
    raise AssertionError(f"no master serves slot {slot}")


@pytest.mark.parametrize("fault", ["kill", "freeze"])
async def test_a_master_failing_mid_traffic_loses_no_acknowledged_message(
    database_url: str,
    redis_cluster_ha: ClusterServers,
    rooms: tuple[FakeRooms, str],
    fake_rooms: FakeRooms,
    fault: str,
) -> None:
    """Two messaging processes on a 3+3 cluster, live subscribers on rooms over every shard on both,
    a sender on each room sending all along; the master serving one room's slot is killed (its
    connections refused), or frozen (SIGSTOP: cut off, nothing refused, found out by the topology
    alone). Every acknowledged message is in Postgres, every subscriber gets every acknowledged
    message of its room in order without a gap, and sends keep being acknowledged through the
    failover, the subscriptions re-homed on the replica that took over."""
    url = redis_cluster_ha.url
    values: dict[str, Any] = {"redis_cluster": True, "hub_poll_interval": 0.5, **GENEROUS_RATE_LIMIT}
    redis = RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", port) for port in redis_cluster_ha.master_ports()]
    )
    await redis.initialize()
    members: list[Member] = []
    while len(members) < 6 or len({redis.get_node_from_key(stream_key(m.room_id)).name for m in members}) < 3:
        members.append(join(fake_rooms, new_room()))
    victim = members[0].room_id
    victim_port = await master_of(redis, stream_key(victim))

    acked: dict[str, list[int]] = {m.room_id: [] for m in members}
    failures: list[BaseException] = []
    stop = asyncio.Event()
    async with (
        messaging_server(database_url, url, rooms[1], **values) as a,
        messaging_server(database_url, url, rooms[1], **values) as b,
    ):
        listening: list[tuple[str, Events]] = []
        try:
            for member in members:
                for server in (a, b):
                    events = server.subscribe(member.room_id, after_seq=0)
                    listening.append((member.room_id, events))
                    await live(events, server, member)

            async def sender(member: Member, server: Messaging) -> None:
                while not stop.is_set():
                    try:
                        response = await server.send(member, "steady")
                    except grpc.aio.AioRpcError as exc:
                        failures.append(exc)
                        await asyncio.sleep(0.05)
                        continue
                    acked[member.room_id].append(response.message.seq)
                    await asyncio.sleep(0.02)

            senders = [
                asyncio.create_task(sender(member, a if index % 2 else b))
                for index, member in enumerate(members)
            ]
            try:
                await eventually(
                    lambda: _async(all(len(seqs) >= 5 for seqs in acked.values())), "sends before the kill"
                )
                if fault == "kill":
                    redis_cluster_ha.kill(victim_port)
                else:
                    assert redis_cluster_ha.processes is not None
                    # Stays stopped until the fixture kills the cluster.
                    redis_cluster_ha.processes[victim_port].send_signal(SIGSTOP)

                async def rehomed() -> bool:
                    # Both processes subscribed the victim room's channel again, on the replica that
                    # took over its slot.
                    await redis.nodes_manager.initialize()
                    node = redis.get_node_from_key(live_channel(victim))
                    if node.port == victim_port:
                        return False
                    counts = await redis.execute_command(
                        "PUBSUB SHARDNUMSUB", live_channel(victim), target_nodes=node
                    )
                    return subscribers(counts) == 2

                await eventually(rehomed, "the subscribers re-homed the victim room's channel", timeout=30)
                # Past the failover sends keep being acknowledged, in the victim's room and in every
                # other, and the victim room's hot cache is whole again on its new master.
                rehomed_at = {room: len(seqs) for room, seqs in acked.items()}
                await eventually(
                    lambda: _async(all(len(acked[r]) >= rehomed_at[r] + 20 for r in acked)),
                    "sends acknowledged after the failover",
                    timeout=30,
                )

                async def cached() -> bool:
                    seqs = await stream_seqs(redis, victim)
                    return (
                        bool(seqs)
                        and seqs[-1] > rehomed_at[victim]
                        and seqs == list(range(seqs[0], seqs[-1] + 1))
                    )

                await eventually(cached, "the victim room's hot cache healed")
            finally:
                stop.set()
                await asyncio.gather(*senders)

            assert not failures, failures[:3]
            conn = await asyncpg.connect(database_url)
            try:
                for room, seqs in acked.items():
                    assert seqs == list(range(1, len(seqs) + 1)), room
                    stored = [
                        row["seq"]
                        for row in await conn.fetch(
                            "SELECT seq FROM messaging.messages WHERE room_id = $1 ORDER BY seq", room
                        )
                    ]
                    assert stored[: len(seqs)] == seqs
            finally:
                await conn.close()
            for room, events in listening:
                last = acked[room][-1]
                assert await messages_until(events, last) == list(range(1, last + 1)), room
        finally:
            for _, events in listening:
                await events.close()
            await redis.aclose()


async def _async(value: bool) -> bool:
    return value


async def test_a_slot_moved_to_another_master_is_followed_by_the_subscribers(
    database_url: str,
    redis_cluster_ha: ClusterServers,
    rooms: tuple[FakeRooms, str],
    fake_rooms: FakeRooms,
) -> None:
    """A room's slot migrates to another master (its keys with it): Redis unsubscribes the room's
    shard channels on the old master, both processes subscribe them on the new one, and their
    subscribers get every message, before, during and after, in order."""
    url = redis_cluster_ha.url
    values: dict[str, Any] = {"redis_cluster": True, **GENEROUS_RATE_LIMIT}
    redis = RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", port) for port in redis_cluster_ha.master_ports()]
    )
    await redis.initialize()
    member = join(fake_rooms, new_room())
    room = member.room_id
    async with (
        messaging_server(database_url, url, rooms[1], **values) as a,
        messaging_server(database_url, url, rooms[1], **values) as b,
    ):
        listening = [a.subscribe(room, after_seq=0), b.subscribe(room, after_seq=0)]
        try:
            for events, server in zip(listening, (a, b), strict=True):
                await live(events, server, member)
            for i in range(5):
                await a.send(member, f"before {i}")

            slot = int(await redis.execute_command("CLUSTER KEYSLOT", stream_key(room)))
            source = redis.get_node_from_key(stream_key(room))
            destination = next(node for node in redis.get_primaries() if node.name != source.name)
            source_id = _text(await redis.execute_command("CLUSTER MYID", target_nodes=source))
            destination_id = _text(await redis.execute_command("CLUSTER MYID", target_nodes=destination))
            await redis.execute_command(
                "CLUSTER SETSLOT", slot, "IMPORTING", source_id, target_nodes=destination
            )
            await redis.execute_command(
                "CLUSTER SETSLOT", slot, "MIGRATING", destination_id, target_nodes=source
            )
            keys = await redis.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000, target_nodes=source)
            if keys:
                await redis.execute_command(
                    "MIGRATE",
                    destination.host,
                    destination.port,
                    "",
                    0,
                    5000,
                    "KEYS",
                    *keys,
                    target_nodes=source,
                )
            for node in redis.get_primaries():
                await redis.execute_command(
                    "CLUSTER SETSLOT", slot, "NODE", destination_id, target_nodes=node
                )

            async def moved() -> bool:
                counts = await redis.execute_command(
                    "PUBSUB SHARDNUMSUB", live_channel(room), target_nodes=destination
                )
                return subscribers(counts) == 2

            await eventually(moved, "both processes subscribed the room on its new master")
            for i in range(10):
                await b.send(member, f"after {i}")
            for events in listening:
                assert await messages_until(events, 15) == list(range(1, 16))
            # The hot cache heals: sends after a Redis hiccup find it behind and rebuild it.
            last = 15

            async def healed() -> bool:
                nonlocal last
                last = (await b.send(member, "later")).message.seq
                return await stream_seqs(redis, room) == list(range(1, last + 1))

            await eventually(healed, "the room's hot cache holds every entry on its new master")
            for events in listening:
                assert await messages_until(events, last) == list(range(16, last + 1))
        finally:
            for events in listening:
                await events.close()
            await redis.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

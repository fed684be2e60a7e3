"""The platform on a real Redis Cluster, with two edge and two messaging processes.

One room's members sit on different edges and its Subscribe streams on different messaging
processes: every message sent through either edge reaches everyone, in order, and a member who
reconnects to the other edge resumes with exactly what it missed; rooms whose fan-out channels
(`msg:{<room_id>}:live`, sharded pub/sub) hash to each of the three shards all work. On a 3+3 cluster
the master of one room's shard is killed (kill -9) mid-traffic: no acknowledged message is lost,
every live member ends up with every message in order (a `reload` frame is followed by a reload of
the history over REST, as the web client does), and sends go on being acknowledged after the
replica took over.

Writers follow the client contract: a send answered `retryable: true` (or not answered in time) is
sent again with the same client_msg_id until it is acknowledged.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as ClusterClient

from chatpop_common.datastores import create_redis
from chatpop_common.devstack import RedisCluster
from tests.e2e.chat import ChatSocket, Frame, Room, history, join, new_id, open_room
from tests.e2e.conftest import Stack

SHARDS = 3
# Rooms created at most to find one whose channel lives on each shard (each lands on one of three).
ROOM_ATTEMPTS = 40
ACK_TIMEOUT = 6.0
# Seconds between one writer's acknowledged send and its next one: steady traffic, not a flood.
WRITE_PAUSE = 0.05
SUBSCRIBERS = re.compile(r"^chatpop_subscribers (\S+)$", re.MULTILINE)


def live_channel(room_id: str) -> str:
    return f"msg:{{{room_id}}}:live"


async def _cluster_client(cluster: RedisCluster) -> ClusterClient:
    client = create_redis(cluster.url, cluster=True)
    assert isinstance(client, ClusterClient)
    await client.initialize()
    return client


async def _shard_of(client: ClusterClient, room_id: str) -> tuple[int, int]:
    """(slot, port of the master serving it) of the room's live channel, as the cluster says."""
    slot = int(await client.cluster_keyslot(live_channel(room_id)))
    node = client.get_node_from_key(live_channel(room_id))
    assert node is not None, f"no node serves slot {slot}"
    return slot, int(node.port)


async def _rooms_on_every_shard(
    http: httpx.AsyncClient, client: ClusterClient
) -> list[tuple[Room, int, int]]:
    """One room (and its slot and master port) whose live channel hashes to each master."""
    found: dict[int, tuple[Room, int, int]] = {}
    for _ in range(ROOM_ATTEMPTS):
        room = await open_room(http)
        slot, port = await _shard_of(client, room.id)
        found.setdefault(port, (room, slot, port))
        if len(found) == SHARDS:
            return list(found.values())
    raise AssertionError(f"{ROOM_ATTEMPTS} rooms hashed to {len(found)} shards only: {sorted(found)}")


async def _until(condition: Callable[[], bool], timeout: float, what: str, tasks: list[Any]) -> None:
    """Poll `condition` until it holds; a task that failed ends the wait with its error."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        for task in tasks:
            if task.done():
                task.result()
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _subscribers(metrics: str) -> float:
    match = SUBSCRIBERS.search(metrics)
    assert match is not None, "messaging exports no chatpop_subscribers gauge"
    return float(match.group(1))


async def _shard_channels(ports: list[int]) -> dict[int, set[str]]:
    """The shard channels each master has subscribers for (PUBSUB SHARDCHANNELS on that node)."""
    found: dict[int, set[str]] = {}
    for port in ports:
        node = Redis(host="127.0.0.1", port=port)
        try:
            channels = await node.execute_command("PUBSUB SHARDCHANNELS")
        finally:
            await node.aclose()
        found[port] = {c.decode() if isinstance(c, bytes) else str(c) for c in channels}
    return found


# -- traffic crossing processes -----------------------------------------------------------------


async def _send_acked(socket: ChatSocket, text: str) -> tuple[str, int]:
    msg_id = await socket.send(text)
    frame = await socket.ack_or_error(msg_id, timeout=15)
    assert frame["type"] == "ack", frame
    return msg_id, int(frame["seq"])


async def test_a_rooms_members_on_both_edges_get_every_message_in_order_on_every_shard(
    cluster_stack: Stack, redis_cluster: RedisCluster
) -> None:
    """Per shard one room: members on edge 1 and edge 2 send through their own edge, everyone gets
    every message once and in seq order, the acks hand out gap-free seqs, and a member who drops off
    edge 2 and reconnects to edge 1 resumes with exactly the messages it missed."""
    first, second = cluster_stack.edge_urls[:2]
    ws_first, ws_second = cluster_stack.edge_ws_urls[:2]
    client = await _cluster_client(redis_cluster)
    opened: list[ChatSocket] = []
    try:
        async with (
            httpx.AsyncClient(base_url=first, timeout=15) as one,
            httpx.AsyncClient(base_url=second, timeout=15) as two,
        ):
            rooms = await _rooms_on_every_shard(one, client)
            for room, slot, port in rooms:
                alice = await join(one, room.code, "AliceOne")
                bob = await join(two, room.code, "BobTwo")
                carol = await join(two, room.code, "CarolTwo")
                a = await ChatSocket.open(ws_first, room.code, alice["room_token"])
                b = await ChatSocket.open(ws_second, room.code, bob["room_token"])
                c = await ChatSocket.open(ws_second, room.code, carol["room_token"])
                opened += [a, b, c]
                where = f"room on slot {slot} (master :{port})"

                # Both edges take sends at once; each is acked with its own seq.
                sent = await asyncio.gather(
                    *(_send_acked(s, f"{name} {i}") for i in range(8) for s, name in ((a, "a"), (b, "b")))
                )
                by_seq = {seq: msg_id for msg_id, seq in sent}
                assert sorted(by_seq) == list(range(1, 17)), f"{where}: acked seqs {sorted(by_seq)}"
                for s in (a, b, c):
                    await s.wait_for_seq(16)
                    assert s.seqs() == list(range(1, 17)), f"{where}: {s.seqs()}"
                    assert [m["client_msg_id"] for m in s.messages()] == [by_seq[q] for q in range(1, 17)]

                # Carol drops off edge 2; the room goes on through both edges; she comes back on edge 1.
                await c.close()
                more = [await _send_acked(s, f"while away {i}") for i in range(3) for s in (a, b)]
                assert [seq for _id, seq in more] == list(range(17, 23)), f"{where}: {more}"
                back = await ChatSocket.open(ws_first, room.code, carol["room_token"], after_seq=16)
                opened.append(back)
                after = await _send_acked(b, "after the resume")
                await back.wait_for_seq(after[1])
                assert back.seqs() == list(range(17, 24)), f"{where}: resumed with {back.seqs()}"
                assert [m["client_msg_id"] for m in back.messages()] == [
                    *(msg_id for msg_id, _seq in more),
                    after[0],
                ]
                for s in (a, b):
                    await s.wait_for_seq(23)
                    assert s.seqs() == list(range(1, 24)), f"{where}: {s.seqs()}"
                stored = await history(two, room.code, bob["room_token"])
                assert [m["seq"] for m in stored] == list(range(1, 24))
    finally:
        for s in opened:
            await s.close()
        await client.aclose()


async def test_room_streams_land_on_both_messaging_processes_and_on_every_shard(
    cluster_stack: Stack, redis_cluster: RedisCluster
) -> None:
    """Rooms open on both edges: the edges' Subscribe streams are spread over both messaging
    processes (each counts live streams), each room's live channel is subscribed on the master
    serving its slot (PUBSUB SHARDCHANNELS), and once its last member leaves it is unsubscribed."""
    ws_urls = cluster_stack.edge_ws_urls[:2]
    metrics = [cluster_stack.metrics_url(name) for name in cluster_stack.messaging_names]
    assert len(metrics) >= 2
    client = await _cluster_client(redis_cluster)
    sockets: dict[str, list[ChatSocket]] = {}
    try:
        async with httpx.AsyncClient(base_url=cluster_stack.edge_urls[0], timeout=15) as http:
            rooms = [room for room, _slot, _port in await _rooms_on_every_shard(http, client)]

            async def open_everywhere(room: Room) -> None:
                people = [await join(http, room.code, f"Member{n}x") for n in range(len(ws_urls))]
                sockets[room.id] = [
                    await ChatSocket.open(url, room.code, person["room_token"])
                    for url, person in zip(ws_urls, people, strict=True)
                ]

            for room in rooms:
                await open_everywhere(room)

            async def streams() -> list[float]:
                """Live Subscribe streams per messaging process, once every open room's are counted
                (each edge holds one per room; the last may still be starting)."""
                deadline = asyncio.get_running_loop().time() + 10
                while True:
                    counts = [_subscribers((await http.get(url)).text) for url in metrics]
                    if sum(counts) >= len(ws_urls) * len(rooms):
                        return counts
                    assert asyncio.get_running_loop().time() < deadline, (
                        f"{len(rooms)} rooms open on {len(ws_urls)} edges, Subscribe streams: {counts}"
                    )
                    await asyncio.sleep(0.1)

            # Each stream goes to whichever messaging process the balancer picks: more rooms until
            # both processes hold some (with two processes, a handful of rooms is plenty).
            counts = await streams()
            for _ in range(12):
                if all(count > 0 for count in counts):
                    break
                extra = await open_room(http)
                rooms.append(extra)
                await open_everywhere(extra)
                counts = await streams()
            assert all(count > 0 for count in counts), f"Subscribe streams per messaging process: {counts}"

            masters = redis_cluster.master_ports()
            assert len(masters) == SHARDS
            homes = {room.id: (await _shard_of(client, room.id))[1] for room in rooms}
            assert set(homes.values()) == set(masters)
            deadline = asyncio.get_running_loop().time() + 15
            while True:
                channels = await _shard_channels(masters)
                missing = [r for r, port in homes.items() if live_channel(r) not in channels[port]]
                if not missing:
                    break
                assert asyncio.get_running_loop().time() < deadline, (
                    f"live channels not subscribed on their shard: {missing}; per node: {channels}"
                )
                await asyncio.sleep(0.1)

            # The last member of the first room leaves both edges: its channel is let go.
            gone = rooms[0].id
            for s in sockets.pop(gone):
                await s.close()
            deadline = asyncio.get_running_loop().time() + 15
            while live_channel(gone) in (await _shard_channels([homes[gone]]))[homes[gone]]:
                assert asyncio.get_running_loop().time() < deadline, "the room's channel was never let go"
                await asyncio.sleep(0.1)
    finally:
        for group in sockets.values():
            for s in group:
                await s.close()
        await client.aclose()


# -- a master killed mid-traffic ----------------------------------------------------------------


@dataclass
class Member:
    """A live member of a room on one edge, which may also write.

    When its socket closes it comes back on the other edge, resuming after the last seq it has (the
    client contract); every socket it had is kept, so what it received can be checked afterwards."""

    name: str
    code: str
    room_token: str
    edge: int
    ws_urls: list[str]
    sockets: list[ChatSocket] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    refusals: dict[str, int] = field(default_factory=dict)

    @property
    def socket(self) -> ChatSocket:
        return self.sockets[-1]

    async def connect(self) -> None:
        after = self.last_seq() if self.sockets else None
        url = self.ws_urls[self.edge % len(self.ws_urls)]
        self.sockets.append(await ChatSocket.open(url, self.code, self.room_token, after_seq=after))

    def last_seq(self) -> int:
        """The highest seq this member has: from a message, or a `reload` (it reloads up to there)."""
        last = 0
        for socket in self.sockets:
            for frame in socket.frames:
                if frame["type"] == "message":
                    last = max(last, int(frame["seq"]))
                elif frame["type"] == "reload":
                    last = max(last, int(frame["last_seq"]))
        return last

    def view(self, stored: list[Frame]) -> list[int]:
        """The seqs in the order this member shows them; a `reload` brings the missing ones from
        the history (`stored`) as the web client's reload does."""
        seqs: list[int] = []
        for socket in self.sockets:
            for frame in socket.frames:
                if frame["type"] == "message":
                    seqs.append(int(frame["seq"]))
                elif frame["type"] == "reload":
                    last = seqs[-1] if seqs else 0
                    seqs += [m["seq"] for m in stored if last < m["seq"] <= int(frame["last_seq"])]
        return seqs

    async def keep_connected(self) -> None:
        """Until cancelled: whenever the socket closes, reconnect to the other edge and resume."""
        while True:
            socket = self.socket
            async with socket.changed:
                await socket.changed.wait_for(functools.partial(getattr, socket, "closed"))
            self.reconnects += 1
            self.edge += 1
            await self.connect()

    async def write(self, stop: asyncio.Event) -> None:
        """One message after another until `stop`; each is retried with its id until acknowledged."""
        i = 0
        while not stop.is_set():
            i += 1
            msg_id = new_id()
            while True:
                socket = self.socket
                if socket.closed:
                    await asyncio.sleep(0.05)
                    continue
                await socket.send(f"{self.name} {i}", client_msg_id=msg_id)
                try:
                    frame = await socket.ack_or_error(msg_id, timeout=ACK_TIMEOUT)
                except (TimeoutError, AssertionError):
                    # Not answered in time, or the socket closed first: send it again (same id).
                    continue
                socket.frames.remove(frame)
                if frame["type"] == "ack":
                    self.acked[msg_id] = int(frame["seq"])
                    break
                code = str(frame.get("code"))
                self.refusals[code] = self.refusals.get(code, 0) + 1
                assert frame.get("retryable"), f"a send was refused for good: {frame}"
                await asyncio.sleep(min(float(frame.get("retry_after") or 0.2), 0.5))
            await asyncio.sleep(WRITE_PAUSE)


@dataclass
class LiveRoom:
    room: Room
    slot: int
    master: int
    members: list[Member]

    def acked(self) -> dict[str, int]:
        return {msg_id: seq for m in self.members for msg_id, seq in m.acked.items()}


async def _stored(database_url: str, room_id: str) -> list[tuple[int, str]]:
    """(seq, client_msg_id) of every message of the room in messaging's log in Postgres."""
    async with await psycopg.AsyncConnection.connect(database_url) as connection:
        cursor = await connection.execute(
            "SELECT seq, client_msg_id FROM messaging.messages WHERE room_id = %s ORDER BY seq", (room_id,)
        )
        return [(int(seq), str(msg_id)) for seq, msg_id in await cursor.fetchall()]


async def _until_subscribed(channel: str, port: int, tasks: list[asyncio.Task[None]]) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while channel not in (await _shard_channels([port]))[port]:
        for task in tasks:
            if task.done():
                task.result()
        assert asyncio.get_running_loop().time() < deadline, f"{channel} never subscribed on :{port}"
        await asyncio.sleep(0.1)


def _has_up_to(member: Member, seq: int) -> bool:
    return member.last_seq() >= seq


def _failed_over(cluster: RedisCluster, killed: int) -> bool:
    masters = cluster.master_ports()
    return killed not in masters and len(masters) == SHARDS


async def test_a_shard_master_killed_mid_traffic_loses_no_acknowledged_message(
    cluster_ha_stack: Stack, redis_cluster_ha: RedisCluster
) -> None:
    """A room on every shard of a 3+3 cluster, each with a writer on each edge and every member
    live; the master of the first room's shard is killed (kill -9) while they write. Every
    acknowledged message is in Postgres with its seq, the seqs stay gap-free, every member ends up
    with every message in order, and sends are acknowledged again once the replica took over."""
    stack, cluster = cluster_ha_stack, redis_cluster_ha
    ws_urls = stack.edge_ws_urls[:2]
    client = await _cluster_client(cluster)
    stop = asyncio.Event()
    writers: list[asyncio.Task[None]] = []
    keepers: list[asyncio.Task[None]] = []
    live: list[LiveRoom] = []
    try:
        async with httpx.AsyncClient(base_url=stack.edge_urls[0], timeout=15) as http:
            for room, slot, port in await _rooms_on_every_shard(http, client):
                members = []
                for n, edge in enumerate((0, 1, 0, 1)):
                    person = await join(http, room.code, f"Member{n}x")
                    members.append(Member(f"m{n}", room.code, person["room_token"], edge, ws_urls))
                for member in members:
                    await member.connect()
                live.append(LiveRoom(room, slot, port, members))
            for room_live in live:
                for member in room_live.members:
                    keepers.append(asyncio.create_task(member.keep_connected()))
                # The first two write, one through each edge; the other two only read.
                for member in room_live.members[:2]:
                    writers.append(asyncio.create_task(member.write(stop)))
            tasks = [*writers, *keepers]

            await _until(lambda: all(len(r.acked()) >= 20 for r in live), 30, "traffic", tasks)
            doomed = live[0].master
            await asyncio.to_thread(cluster.kill, doomed)
            killed_at = {r.room.id: len(r.acked()) for r in live}

            # The replica takes over (node timeout 2 s): poll the cluster's view, off the event loop.
            deadline = asyncio.get_running_loop().time() + 30
            while not await asyncio.to_thread(_failed_over, cluster, doomed):
                for task in tasks:
                    if task.done():
                        task.result()
                assert asyncio.get_running_loop().time() < deadline, "no replica took over"
                await asyncio.sleep(0.2)
            await asyncio.to_thread(cluster.wait_ready, 30)
            over_at = {r.room.id: len(r.acked()) for r in live}
            # The messaging processes subscribed the room's live channel again on the promoted
            # replica, which serves the slot now.
            promoted = set(await asyncio.to_thread(cluster.master_ports)) - {r.master for r in live}
            assert len(promoted) == 1, f"masters now: {promoted}"
            await _until_subscribed(live_channel(live[0].room.id), promoted.pop(), tasks)
            # Sends go on being acknowledged in every room, the failed-over shard's included.
            await _until(
                lambda: all(len(r.acked()) >= over_at[r.room.id] + 30 for r in live),
                40,
                "acks after the failover",
                tasks,
            )
            stop.set()
            await asyncio.wait_for(asyncio.gather(*writers), 30)

            report = []
            for room_live in live:
                acked = room_live.acked()
                rows = await _stored(stack.database_url, room_live.room.id)
                by_id = {msg_id: seq for seq, msg_id in rows}
                where = f"room on slot {room_live.slot} (master :{room_live.master})"
                lost = {msg_id: seq for msg_id, seq in acked.items() if by_id.get(msg_id) != seq}
                assert not lost, f"{where}: acknowledged but not in Postgres with its seq: {lost}"
                assert len(by_id) == len(rows), f"{where}: a message was stored twice"
                assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1)), f"{where}: a gap"
                last = len(rows)
                reader = room_live.members[-1]
                stored = await history(http, room_live.room.code, reader.room_token)
                for member in room_live.members:
                    caught_up = functools.partial(_has_up_to, member, last)
                    await _until(caught_up, 30, f"{where}: {member.name} to reach {last}", keepers)
                    seqs = member.view(stored)
                    assert seqs == list(range(1, last + 1)), f"{where}: {member.name} saw {_gaps(seqs, last)}"
                report.append(
                    {
                        "slot": room_live.slot,
                        "master": room_live.master,
                        "killed": room_live.master == doomed,
                        "acked": len(acked),
                        "acked_before_kill": killed_at[room_live.room.id],
                        "acked_before_failover_done": over_at[room_live.room.id],
                        "reloads": sum(
                            f["type"] == "reload"
                            for m in room_live.members
                            for s in m.sockets
                            for f in s.frames
                        ),
                        "reconnects": sum(m.reconnects for m in room_live.members),
                        "refusals": [m.refusals for m in room_live.members if m.refusals],
                    }
                )
            print(json.dumps({"failover": report}))
    finally:
        stop.set()
        for task in [*writers, *keepers]:
            task.cancel()
        await asyncio.gather(*writers, *keepers, return_exceptions=True)
        for room_live in live:
            for member in room_live.members:
                for s in member.sockets:
                    await s.close()
        await client.aclose()


def _gaps(seqs: list[int], last: int) -> str:
    """What is wrong with a member's seqs: missing, repeated or out of order (short)."""
    missing = sorted(set(range(1, last + 1)) - set(seqs))
    repeated = sorted(seq for seq, times in Counter(seqs).items() if times > 1)
    disorder = [(a, b) for a, b in itertools.pairwise(seqs) if b <= a]
    return f"missing {missing[:20]}, repeated {repeated[:20]}, out of order {disorder[:10]}, of {last}"

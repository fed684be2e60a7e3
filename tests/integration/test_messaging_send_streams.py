"""SendStream: an edge's batches on one long-lived stream, each answered by its batch id exactly as
SendMessages would answer it, and the stream drained when messaging begins to shut down.

Messaging runs in-process against the session's Postgres and Redis with the fake rooms service of
test_messaging_service.py, as in test_messaging_batches.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
import pytest_asyncio
from test_messaging_batches import (
    INVALID_ARGUMENT,
    PERMISSION_DENIED,
    batched,
    edge_credential,
    error,
    send_batch,
    sent,
    stored_seqs,
)
from test_messaging_service import (
    GENEROUS_RATE_LIMIT,
    FakeRooms,
    Messaging,
    failure,
    join,
    messaging_server,
    new_room,
    rooms,
)

from chatpop.messaging.v1 import messaging_pb2

__all__ = ["rooms"]  # the module-scoped fake rooms server, shared with test_messaging_service.py


@pytest_asyncio.fixture(scope="module")
async def server(database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]) -> AsyncIterator[Messaging]:
    async with messaging_server(database_url, redis_url, rooms[1], **GENEROUS_RATE_LIMIT) as server:
        yield server


@pytest.fixture
def fake_rooms(rooms: tuple[FakeRooms, str]) -> FakeRooms:
    return rooms[0]


def request(batch_id: int, sends: Sequence[messaging_pb2.BatchedSend]) -> messaging_pb2.SendStreamRequest:
    return messaging_pb2.SendStreamRequest(batch_id=batch_id, sends=sends, timeout_ms=20_000)


async def answers(call: grpc.aio.StreamStreamCall, count: int) -> dict[int, list[messaging_pb2.SendResult]]:
    found: dict[int, list[messaging_pb2.SendResult]] = {}
    while len(found) < count:
        response = await asyncio.wait_for(call.read(), timeout=20)
        assert response is not grpc.aio.EOF and not response.draining, response
        found[response.batch_id] = list(response.results)
    return found


async def test_each_batch_on_a_stream_is_answered_by_its_id_as_send_messages_would_answer_it(
    server: Messaging, fake_rooms: FakeRooms, database_url: str
) -> None:
    room, other_room = new_room(), new_room()
    member, other = join(fake_rooms, room, "Member"), join(fake_rooms, other_room, "Other")
    banned = join(fake_rooms, room, "Banned", banned=True)
    call = server.stub.SendStream(metadata=edge_credential())
    await call.write(request(7, [batched(member, "one"), batched(banned, "no"), batched(member, "two")]))
    await call.write(request(8, [batched(other, "elsewhere")]))
    await call.write(request(9, [batched(member, "   ")]))
    found = await answers(call, 3)
    assert [sent(r).message.seq for r in (found[7][0], found[7][2])] == [1, 2]
    assert error(found[7][1])[:2] == (PERMISSION_DENIED, "banned")
    assert (sent(found[8][0]).message.seq, sent(found[8][0]).message.room_id) == (1, other_room)
    assert error(found[9][0])[:2] == (INVALID_ARGUMENT, "message_empty")
    # A batch retried on the stream (an unknown outcome elsewhere) is answered with the original.
    original = found[7][0].sent.message
    await call.write(
        request(
            10,
            [
                messaging_pb2.BatchedSend(
                    send=messaging_pb2.SendMessageRequest(
                        room_id=room, client_msg_id=original.client_msg_id, text="one"
                    ),
                    participant_id=member.participant.id,
                    token_version=member.participant.version,
                )
            ],
        )
    )
    (again,) = (await answers(call, 1))[10]
    assert (sent(again).message.seq, sent(again).created) == (1, False)
    await call.done_writing()
    assert await asyncio.wait_for(call.read(), timeout=20) is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    assert await stored_seqs(database_url, room) == ([1, 2], 2)
    # The same sends as a SendMessages call are answered the same way.
    (single,) = await send_batch(server, [batched(member, "three")])
    assert sent(single).message.seq == 3


async def test_a_batch_send_messages_would_refuse_whole_refuses_each_send_and_the_stream_goes_on(
    server: Messaging, fake_rooms: FakeRooms
) -> None:
    member = join(fake_rooms, new_room())
    call = server.stub.SendStream(metadata=edge_credential())
    await call.write(request(1, [batched(member, f"m{i}") for i in range(1001)]))
    (too_many,) = (await answers(call, 1)).values()
    assert len(too_many) == 1001
    assert {error(result)[:2] for result in too_many} == {(INVALID_ARGUMENT, "invalid_batch_size")}
    await call.write(request(2, []))
    assert (await answers(call, 1))[2] == []
    await call.write(request(3, [batched(member, "fine")]))
    assert sent((await answers(call, 1))[3][0]).message.seq == 1
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.OK


async def test_only_the_edge_may_open_a_send_stream(server: Messaging, fake_rooms: FakeRooms) -> None:
    member = join(fake_rooms, new_room())
    for metadata in (member.metadata, edge_credential("payments"), ()):
        call = server.stub.SendStream(metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.write(request(1, [batched(member, "hello")]))
            await asyncio.wait_for(call.read(), timeout=20)
        assert failure(refused.value)[0] in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
        )
    # Nothing was stored.
    assert (await server.after(member, 0)).messages == []


async def test_a_stream_is_told_to_drain_at_shutdown_and_answers_every_batch_it_was_sent(
    database_url: str, redis_url: str, rooms: tuple[FakeRooms, str]
) -> None:
    fake, rooms_addr = rooms
    member = join(fake, new_room())
    async with messaging_server(
        database_url, redis_url, rooms_addr, shutdown_grace=20.0, **GENEROUS_RATE_LIMIT
    ) as stopping:
        assert stopping.stop is not None
        call = stopping.stub.SendStream(metadata=edge_credential())
        await call.write(request(1, [batched(member, "before")]))
        assert sent((await answers(call, 1))[1][0]).message.seq == 1
        stopping.stop.set()
        notice = await asyncio.wait_for(call.read(), timeout=20)
        assert notice.draining and not notice.results
        # What the edge sent before it heard is still answered; then it half-closes.
        await call.write(request(2, [batched(member, "in flight")]))
        assert sent((await answers(call, 1))[2][0]).message.seq == 2
        await call.done_writing()
        assert await asyncio.wait_for(call.read(), timeout=20) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK

"""When the edge's send batcher calls messaging: at once when idle, coalesced while a call is in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from chatpop.messaging.v1 import messaging_pb2
from chatpop_edge.realtime.batcher import SendBatcher

# Far longer than any test may take: a send that waited for the tick would time the test out.
_TICK = 3600.0


class FakeMessaging:
    """SendMessages that records each call's client_msg_ids and answers when `release` is set."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.called = asyncio.Event()

    async def SendMessages(
        self, request: messaging_pb2.SendMessagesRequest, metadata: object, timeout: float
    ) -> messaging_pb2.SendMessagesResponse:
        self.calls.append([send.send.client_msg_id for send in request.sends])
        self.called.set()
        await self.release.wait()
        response = messaging_pb2.SendMessagesResponse()
        for send in request.sends:
            result = response.results.add()
            result.sent.message.client_msg_id = send.send.client_msg_id
            result.sent.created = True
        return response


async def _no_metadata() -> Sequence[tuple[str, str]]:
    return ()


def _send(client_msg_id: str) -> messaging_pb2.BatchedSend:
    return messaging_pb2.BatchedSend(
        send=messaging_pb2.SendMessageRequest(room_id="r", client_msg_id=client_msg_id, text="hi"),
        participant_id="p",
    )


async def test_a_send_to_an_idle_batcher_goes_without_waiting_for_a_tick() -> None:
    messaging = FakeMessaging()
    batcher = SendBatcher(messaging, _no_metadata, delay=_TICK)
    (future,) = batcher.submit([_send("a")])
    sent = await asyncio.wait_for(future, timeout=30)
    assert sent.message.client_msg_id == "a"
    assert messaging.calls == [["a"]]
    await batcher.close()


async def test_sends_of_one_turn_leave_together_when_idle() -> None:
    messaging = FakeMessaging()
    batcher = SendBatcher(messaging, _no_metadata, delay=_TICK)
    futures = [*batcher.submit([_send("a")]), *batcher.submit([_send("b"), _send("c")])]
    await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
    assert messaging.calls == [["a", "b", "c"]]
    await batcher.close()


async def test_sends_arriving_while_a_call_is_in_flight_leave_together_after_it() -> None:
    messaging = FakeMessaging()
    messaging.release.clear()
    batcher = SendBatcher(messaging, _no_metadata, delay=_TICK, max_calls=1)
    first = batcher.submit([_send("a")])
    await asyncio.wait_for(messaging.called.wait(), timeout=30)
    later = [*batcher.submit([_send("b")]), *batcher.submit([_send("c")])]
    messaging.release.set()
    answers = await asyncio.wait_for(asyncio.gather(*first, *later), timeout=30)
    assert [answer.message.client_msg_id for answer in answers] == ["a", "b", "c"]
    assert messaging.calls == [["a"], ["b", "c"]]
    await batcher.close()

"""Group commit: the sends of a room that wait at the same time reach Postgres together.

Each room with sends waiting has one writer task. It takes everything queued for the room (up to
`max_group`), in the order queued, and stores it in one statement (store.insert_group: the counter
updated once, consecutive seqs, one multi-row insert); sends queued meanwhile form the next group.
So concurrent SendMessage calls of a room coalesce as well as the sends of one SendMessages call, and
the room's seqs are handed out in the order its groups commit, without gaps.

Within a group: a send whose (sender, client_msg_id) the room already holds is answered with the
original (created=false), and so is a second send of the same key in the group (the first wins). A
message carrying media is stored on its own (its media row is locked first), in its place in the order.
A passing datastore failure is retried until the sends' deadlines; any other failure of a group is
retried send by send, so one bad send cannot fail the others.

Rooms' groups ready at the same time share a transaction (RoomsInserts): while a statement is in
flight, the groups that become ready meanwhile wait and then go to Postgres together, in one round
trip and one commit (each room's statement executed in turn, pipelined). A failure there runs each
room's statement again on its own, so one room's failure stays its own.

After the commit the group's entries go to the publisher (PublishQueue): every group waiting there is
appended to the hot cache and published in one Redis round trip, rooms in commit order. A send is
answered once its group was published (or publishing failed: readers and hubs catch up from Postgres).

Tracing: a send carries the span that handles it (`PendingSend.span`); the work sends share runs in
spans of its own: a room group's commit ("messaging.group_commit") and a publishing round trip
("messaging.publish") link every send span they served, and the Postgres and Redis spans are their
children. Work that served a single send is a child of that send's span (its trace is then whole);
otherwise it starts a trace of its own, reached from each send through the links.

Admission: at most `max_in_flight` sends are in messaging at a time (from their arrival to their
answer); past that they are refused at once, RESOURCE_EXHAUSTED `overloaded`, instead of queueing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.util.types import AttributeValue

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.errors import ResourceExhausted, ServiceError, Unavailable
from chatpop_common.transient import is_transient
from chatpop_messaging.fanout import Fanout
from chatpop_messaging.hotcache import AppendResult, HotCache
from chatpop_messaging.metrics import (
    GROUP_COMMIT_ROOMS,
    GROUP_COMMIT_SENDS,
    MESSAGES_ACCEPTED,
    SENDS_OVERLOADED,
)
from chatpop_messaging.store import (
    CLIENT_MSG_ID_CONSTRAINT,
    DuplicateClientMsgId,
    MessageStore,
    NewMessage,
    SealedGroup,
    constraint_of,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

T = TypeVar("T")

# Milliseconds an overloaded sender is asked to wait before trying again.
OVERLOAD_RETRY_AFTER_MS = 200
# Times a group runs again after a retry of one of its sends committed elsewhere meanwhile.
_RACE_RETRIES = 3
_BACKOFF_FIRST = 0.05
_BACKOFF_LIMIT = 0.8


@contextmanager
def shared_span(
    name: str, served: Sequence[trace.SpanContext], attributes: dict[str, AttributeValue]
) -> Iterator[trace.Span]:
    """The current span, for `name`d work done once for several sends: linked to each send's span
    (`served`), a child of the send's span when it served only one, else the root of its own trace."""
    sends = list({context.span_id: context for context in served if context.is_valid}.values())
    parent = trace.set_span_in_context(trace.NonRecordingSpan(sends[0])) if len(sends) == 1 else Context()
    with tracer.start_as_current_span(
        name,
        context=parent,
        links=[trace.Link(context) for context in sends],
        attributes={**attributes, "chatpop.sends": len(sends)},
    ) as span:
        yield span


def overloaded() -> ResourceExhausted:
    SENDS_OVERLOADED.inc()
    return ResourceExhausted(
        "ChatPop is very busy right now. Please try again in a moment.", code="overloaded", retry_after=1
    )


@dataclass(frozen=True, slots=True)
class Committed:
    message: messaging_pb2.Message
    created: bool


@dataclass(slots=True)
class PendingSend:
    new: NewMessage
    # Loop time until which a passing datastore failure is retried.
    deadline: float
    # The span of the send's handling (invalid when not traced): shared work links to it.
    span: trace.SpanContext = trace.INVALID_SPAN_CONTEXT
    future: asyncio.Future[Committed] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def key(self) -> tuple[str, str]:
        return self.new.sender_participant_id, self.new.client_msg_id

    def answer(self, committed: Committed) -> None:
        if not self.future.done():
            self.future.set_result(committed)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
            # Retrieved by the caller; if it went away meanwhile, nobody has to hear of it.
            self.future.exception()


class PublishQueue:
    """Committed entries to the local hubs (at once), the hot cache and pub/sub: everything waiting
    goes in one Redis round trip, in the order it was committed."""

    def __init__(self, cache: HotCache, fanout: Fanout, on_gap: Callable[[str], None]) -> None:
        self._cache = cache
        self._fanout = fanout
        self._on_gap = on_gap
        self._waiting: list[_Waiting] = []
        self._task: asyncio.Task[None] | None = None

    def publish(
        self, entries: Sequence[messaging_pb2.Message], served: Sequence[trace.SpanContext] | None = None
    ) -> asyncio.Future[None]:
        """Publish committed entries (ascending); the future is done once they were (it never fails).
        `served`: the spans of the sends the entries answer, which the publishing span links (by
        default the current span: the call that changed something)."""
        if served is None:
            served = [trace.get_current_span().get_span_context()]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        groups: dict[str, list[messaging_pb2.Message]] = {}
        for entry in entries:
            groups.setdefault(entry.room_id, []).append(entry)
        if not groups:
            future.set_result(None)
            return future
        # The local hubs have them at once, in the order committed, without waiting behind a Redis
        # round trip in flight (as before, ahead of the hot cache: a hub that gets them twice drops
        # the second).
        for group in groups.values():
            try:
                self._fanout.deliver_local(group)
            except Exception:
                log.exception("handing %d entries to the local hubs failed", len(group))
        last = len(groups) - 1
        for index, group in enumerate(groups.values()):
            # One future per call (and its sends' spans): the last group of the call carries them.
            self._waiting.append(
                _Waiting(group, future if index == last else _done(), served if index == last else ())
            )
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="publish committed entries")
        return future

    async def _run(self) -> None:
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, []
                served = [context for item in waiting for context in item.served]
                with shared_span("messaging.publish", served, {"chatpop.groups": len(waiting)}):
                    await self._publish([item.entries for item in waiting])
                for item in waiting:
                    if not item.future.done():
                        item.future.set_result(None)
        finally:
            self._task = None
            # Cancelled (shut down): nobody waits forever.
            for item in self._waiting:
                if not item.future.done():
                    item.future.set_result(None)

    async def _publish(self, groups: list[list[messaging_pb2.Message]]) -> None:
        """Never fails: readers and hubs catch up from Postgres."""
        try:
            for group, result in zip(groups, await self._cache.append_groups(groups), strict=True):
                if result is AppendResult.GAP:
                    self._on_gap(group[0].room_id)
        except Exception as exc:
            trace.get_current_span().record_exception(exc)
            log.exception("publishing %d groups of entries failed", len(groups))

    async def close(self) -> None:
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class _Waiting:
    """Entries of one room waiting to be published, the future of the call they came in, and the
    spans of the sends they answer."""

    entries: list[messaging_pb2.Message]
    future: asyncio.Future[None]
    served: Sequence[trace.SpanContext]


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class RoomsInserts:
    """Rooms' group inserts that wait at the same time go to Postgres in one transaction: at most
    `max_calls` round trips in flight, each carrying every group that was waiting (at most
    `max_rooms`) when it left."""

    def __init__(self, store: MessageStore, *, max_rooms: int, max_calls: int = 2) -> None:
        self._store = store
        self._max_rooms = max(1, max_rooms)
        self._max_calls = max(1, max_calls)
        self._calls = 0
        self._waiting: list[tuple[SealedGroup, asyncio.Future[list[messaging_pb2.Message | None]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def insert_group(
        self, room_id: str, news: Sequence[NewMessage]
    ) -> list[messaging_pb2.Message | None]:
        """MessageStore.insert_group, in a transaction shared with other rooms' groups."""
        group = await self._store.seal_group(room_id, news)
        if self._max_rooms == 1:
            GROUP_COMMIT_ROOMS.observe(1)
            return (await self._store.insert_sealed([group]))[0]
        future: asyncio.Future[list[messaging_pb2.Message | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting.append((group, future))
        self._next()
        return await future

    def _next(self) -> None:
        while self._waiting and self._calls < self._max_calls:
            batch = self._waiting[: self._max_rooms]
            del self._waiting[: self._max_rooms]
            self._calls += 1
            task = asyncio.create_task(self._insert(batch), name="insert rooms' groups")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _insert(
        self, batch: list[tuple[SealedGroup, asyncio.Future[list[messaging_pb2.Message | None]]]]
    ) -> None:
        GROUP_COMMIT_ROOMS.observe(len(batch))
        try:
            try:
                stored = await self._store.insert_sealed([group for group, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    return
                # Nothing was stored: each room on its own, so that only the failing one fails.
                await asyncio.gather(*(self._alone(group, future) for group, future in batch))
                return
            for (_, future), found in zip(batch, stored, strict=True):
                _settle(future, found)
        finally:
            self._calls -= 1
            for _, future in batch:
                # Cancelled (shut down): nobody waits forever.
                _settle(future, _shutting_down())
            self._next()

    async def _alone(
        self, group: SealedGroup, future: asyncio.Future[list[messaging_pb2.Message | None]]
    ) -> None:
        try:
            _settle(future, (await self._store.insert_sealed([group]))[0])
        except Exception as exc:
            _settle(future, exc)

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _shutting_down() -> Unavailable:
    return Unavailable("Messaging is shutting down; try again.", code="service_unavailable")


def _settle(future: asyncio.Future[T], outcome: T | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
        # Retrieved by the caller; if it went away meanwhile, nobody has to hear of it.
        future.exception()
    else:
        future.set_result(outcome)


class GroupCommitter:
    def __init__(
        self,
        store: MessageStore,
        publisher: PublishQueue,
        *,
        max_group: int,
        max_in_flight: int,
        max_rooms: int = 32,
    ) -> None:
        self._store = store
        self._inserts = RoomsInserts(store, max_rooms=max_rooms)
        self._publisher = publisher
        self._max_group = max_group
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._rooms: dict[str, list[PendingSend]] = {}
        self._writers: set[asyncio.Task[None]] = set()

    # --- admission ---------------------------------------------------------------------------------

    def admit(self, count: int) -> int:
        """How many of `count` sends may start now (the rest are to be refused `overloaded`)."""
        admitted = max(0, min(count, self._max_in_flight - self._in_flight))
        self._in_flight += admitted
        return admitted

    def release(self, count: int) -> None:
        self._in_flight -= count

    # --- committing ------------------------------------------------------------------------------

    def submit(self, sends: Sequence[PendingSend]) -> None:
        """Queue sends (of any rooms; each room's in the order given) for their rooms' next groups."""
        for send in sends:
            room_id = send.new.room_id
            queue = self._rooms.get(room_id)
            if queue is None:
                queue = self._rooms[room_id] = []
                task = asyncio.create_task(self._write(room_id, queue), name=f"group commit {room_id}")
                self._writers.add(task)
                task.add_done_callback(self._writers.discard)
            queue.append(send)

    async def _write(self, room_id: str, queue: list[PendingSend]) -> None:
        try:
            while queue:
                group = queue[: self._max_group]
                del queue[: self._max_group]
                try:
                    with shared_span(
                        "messaging.group_commit", [send.span for send in group], {"chatpop.room_id": room_id}
                    ):
                        await self._commit(room_id, group)
                except Exception as exc:
                    log.exception("group commit of room %s failed", room_id)
                    for send in group:
                        send.fail(exc)
        finally:
            if self._rooms.get(room_id) is queue:
                del self._rooms[room_id]
            for send in queue:
                send.fail(_shutting_down())

    async def _commit(self, room_id: str, group: list[PendingSend]) -> None:
        GROUP_COMMIT_SENDS.observe(len(group))
        answers: dict[int, tuple[messaging_pb2.Message, bool]] = {}
        # Runs in order: consecutive sends without media in one statement, one with media alone.
        run: list[PendingSend] = []
        for send in [*group, None]:
            if send is not None and send.new.media_id is None:
                run.append(send)
                continue
            if run:
                await self._commit_run(room_id, run, answers)
                run = []
            if send is not None:
                await self._commit_media(send, answers)
        created = sorted(
            (found[0] for found in answers.values() if found[1]), key=lambda message: message.seq
        )
        if created:
            MESSAGES_ACCEPTED.inc(len(created))
            published = self._publisher.publish(created, [send.span for send in group])
        else:
            published = _done()

        def answer(_: asyncio.Future[None]) -> None:
            for send in group:
                found = answers.get(id(send))
                if found is not None:
                    send.answer(Committed(found[0], found[1]))

        published.add_done_callback(answer)

    async def _commit_run(
        self,
        room_id: str,
        run: list[PendingSend],
        answers: dict[int, tuple[messaging_pb2.Message, bool]],
    ) -> None:
        firsts: dict[tuple[str, str], PendingSend] = {}
        for send in run:
            firsts.setdefault(send.key, send)
        uniques = list(firsts.values())
        try:
            stored = await self._retrying(uniques, lambda: self._insert(room_id, uniques))
        except Exception as exc:
            if len(uniques) == 1 or is_transient(exc):
                for send in run:
                    send.fail(exc)
                return
            # Something in the group cannot be stored: each send on its own, so only it fails.
            log.warning(
                "group of %d sends in room %s failed (%s); storing them one by one",
                len(uniques),
                room_id,
                exc,
            )
            for send in uniques:
                await self._commit_run(room_id, [send], answers)
            for send in run:
                first = firsts[send.key]
                if send is not first:
                    self._copy(first, send, answers)
            return
        for send, message in zip(uniques, stored, strict=True):
            answers[id(send)] = message
        for send in run:
            first = firsts[send.key]
            if send is not first:
                self._copy(first, send, answers)

    @staticmethod
    def _copy(
        first: PendingSend, send: PendingSend, answers: dict[int, tuple[messaging_pb2.Message, bool]]
    ) -> None:
        """A second send of the same key in a group: the first's message, never created by it."""
        found = answers.get(id(first))
        if found is not None:
            answers[id(send)] = (found[0], False)
        elif first.future.done() and first.future.exception() is not None:
            send.fail(first.future.exception() or RuntimeError())
        else:
            first.future.add_done_callback(lambda done: _follow(done, send))

    async def _insert(
        self, room_id: str, sends: list[PendingSend]
    ) -> list[tuple[messaging_pb2.Message, bool]]:
        for attempt in range(_RACE_RETRIES + 1):
            try:
                stored = await self._inserts.insert_group(room_id, [send.new for send in sends])
                break
            except asyncpg.UniqueViolationError as exc:
                # A retry committed by another process while this group waited: run it again.
                if constraint_of(exc) != CLIENT_MSG_ID_CONSTRAINT or attempt == _RACE_RETRIES:
                    raise
        missing = [send.key for send, message in zip(sends, stored, strict=True) if message is None]
        originals = await self._store.find_by_client_msg_ids(room_id, missing) if missing else {}
        found: list[tuple[messaging_pb2.Message, bool]] = []
        for send, message in zip(sends, stored, strict=True):
            if message is not None:
                found.append((message, True))
                continue
            original = originals.get(send.key)
            if original is None:
                raise Unavailable("The message could not be stored; try again.", code="service_unavailable")
            found.append((original, False))
        return found

    async def _commit_media(
        self, send: PendingSend, answers: dict[int, tuple[messaging_pb2.Message, bool]]
    ) -> None:
        new = send.new

        async def insert() -> tuple[messaging_pb2.Message, bool]:
            try:
                return await self._store.insert(new), True
            except (DuplicateClientMsgId, ServiceError):
                # A concurrent retry won the race, or a retry's media is on its original (media_in_use).
                original = await self._store.find_by_client_msg_id(
                    new.room_id, new.sender_participant_id, new.client_msg_id
                )
                if original is None:
                    raise
                return original, False

        try:
            answers[id(send)] = await self._retrying([send], insert)
        except Exception as exc:
            send.fail(exc)

    async def _retrying(self, sends: Sequence[PendingSend], action: Callable[[], Awaitable[T]]) -> T:
        """Run `action`, again after a passing datastore failure while the sends' deadlines allow."""
        loop = asyncio.get_running_loop()
        deadline = max(send.deadline for send in sends)
        delay = _BACKOFF_FIRST
        while True:
            try:
                return await action()
            except Exception as exc:
                if isinstance(exc, ServiceError) or not is_transient(exc) or loop.time() + delay >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_LIMIT)

    async def close(self) -> None:
        writers = list(self._writers)
        await asyncio.gather(*writers, return_exceptions=True)
        await self._inserts.close()


def _follow(done: asyncio.Future[Committed], send: PendingSend) -> None:
    if done.cancelled():
        send.fail(Unavailable("The message could not be stored; try again.", code="service_unavailable"))
    elif done.exception() is not None:
        send.fail(done.exception() or RuntimeError())
    else:
        committed = done.result()
        send.answer(Committed(committed.message, False))

"""Who may write: participants looked up at rooms, cached briefly per participant (refreshed in the
background while the participant is sending: refresh_ahead.py). Lookups made in the same turn of the
event loop (a batch of sends with new writers, refreshes coming due together, a crowd's first sends)
go to rooms as one GetParticipants call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence

import grpc

from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.auth import Principal
from chatpop_common.errors import NotFound, PermissionDenied, Unavailable
from chatpop_messaging.refresh_ahead import REFRESH_AFTER, RefreshAhead
from chatpop_messaging.rooms_lookup import LOOKUP_TIMEOUT

log = logging.getLogger(__name__)

# Lookups in one GetParticipants call at most (rooms' limit).
LOOKUPS_PER_CALL = 1000
# Seconds a background refresh waits for others to share its call: the writers of a crowd that
# arrived together come due together, one send at a time, and would otherwise each make a call.
REFRESH_GATHER = 0.05


class _NoSuchParticipant(Exception):
    """Rooms answered a lookup of many: no such participant (or its room was taken down)."""


def _fail(future: asyncio.Future[rooms_pb2.Participant], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
        future.exception()  # retrieved: when every asker gave up, nothing is logged about it


class ParticipantLookups:
    """Participant lookups at rooms, those asked for in the same turn of the event loop in one
    GetParticipants call; one lookup per participant at a time (a second asker shares the first's).
    A rooms that does not know GetParticipants yet (an older version, mid-upgrade) is asked one
    GetParticipant at a time instead."""

    def __init__(self, stub: rooms_pb2_grpc.RoomsServiceStub) -> None:
        self._stub = stub
        self._waiting: dict[tuple[str, str], asyncio.Future[rooms_pb2.Participant]] = {}
        # The flush scheduled (and when, on the loop's clock).
        self._flush_at: tuple[asyncio.Handle, float] | None = None
        self._batches = True
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(
        self, room_id: str, participant_id: str, *, background: bool = False
    ) -> rooms_pb2.Participant:
        """The participant; grpc.aio.AioRpcError when rooms failed, _NoSuchParticipant when none.
        A `background` lookup (a refresh nobody waits for) may wait REFRESH_GATHER for others."""
        key = (room_id, participant_id)
        loop = asyncio.get_running_loop()
        future = self._waiting.get(key)
        if future is None:
            future = self._waiting[key] = loop.create_future()
        when = loop.time() + (REFRESH_GATHER if background else 0.0)
        if self._flush_at is None or when < self._flush_at[1]:
            if self._flush_at is not None:
                self._flush_at[0].cancel()
            handle = loop.call_at(when, self._flush) if background else loop.call_soon(self._flush)
            self._flush_at = (handle, when)
        return await asyncio.shield(future)

    def _flush(self) -> None:
        self._flush_at = None
        waiting, self._waiting = self._waiting, {}
        keys = list(waiting)
        for start in range(0, len(keys), LOOKUPS_PER_CALL):
            chunk = {key: waiting[key] for key in keys[start : start + LOOKUPS_PER_CALL]}
            task = asyncio.get_running_loop().create_task(self._call(chunk), name="look up participants")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, chunk: dict[tuple[str, str], asyncio.Future[rooms_pb2.Participant]]) -> None:
        try:
            if self._batches and len(chunk) > 1:
                try:
                    await self._many(chunk)
                    return
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                        raise
                    log.info("rooms has no GetParticipants: looking participants up one at a time")
                    self._batches = False
            await asyncio.gather(*(self._one(key, future) for key, future in chunk.items()))
        except asyncio.CancelledError:
            for future in chunk.values():
                future.cancel()
            raise
        except Exception as exc:
            for future in chunk.values():
                _fail(future, exc)

    async def _many(self, chunk: dict[tuple[str, str], asyncio.Future[rooms_pb2.Participant]]) -> None:
        response = await self._stub.GetParticipants(
            rooms_pb2.GetParticipantsRequest(
                lookups=[rooms_pb2.GetParticipantRequest(room_id=r, participant_id=p) for r, p in chunk]
            ),
            timeout=LOOKUP_TIMEOUT,
        )
        for future, result in zip(chunk.values(), response.results, strict=True):
            if future.done():
                continue
            if result.HasField("participant"):
                future.set_result(result.participant)
            else:
                _fail(future, _NoSuchParticipant(result.error_code))

    async def _one(self, key: tuple[str, str], future: asyncio.Future[rooms_pb2.Participant]) -> None:
        try:
            response = await self._stub.GetParticipant(
                rooms_pb2.GetParticipantRequest(room_id=key[0], participant_id=key[1]),
                timeout=LOOKUP_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            _fail(future, exc)
            return
        if not future.done():
            future.set_result(response.participant)

    async def close(self) -> None:
        if self._flush_at is not None:
            self._flush_at[0].cancel()
            self._flush_at = None
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            future.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class ParticipantDirectory:
    """Authorizes writers against rooms' view of the participant.

    A cached entry is trusted for `ttl` seconds; a miss (or an entry older than the caller's token)
    means "may have changed", so rooms is asked again. A writer's entry past half its TTL is looked up
    again in the background.
    """

    def __init__(self, channel: grpc.aio.Channel, *, ttl: float, max_entries: int = 50_000) -> None:
        self._stub = rooms_pb2_grpc.RoomsServiceStub(channel)
        self._lookups = ParticipantLookups(self._stub)
        self._ttl = ttl
        self._max_entries = max_entries
        # (room id, participant id) → (refresh after, expires at, participant), monotonic seconds.
        self._cache: OrderedDict[tuple[str, str], tuple[float, float, rooms_pb2.Participant]] = OrderedDict()
        self._ahead = RefreshAhead()
        # Counts forgets (bans): a lookup that started before one must not bring the old state back.
        self._forgotten = 0

    async def _lookup(
        self,
        room_id: str,
        participant_id: str,
        metadata: Sequence[tuple[str, str]],
        *,
        background: bool = False,
    ) -> rooms_pb2.Participant:
        key = (room_id, participant_id)
        forgotten = self._forgotten
        try:
            if metadata:
                response = await self._stub.GetParticipant(
                    rooms_pb2.GetParticipantRequest(room_id=room_id, participant_id=participant_id),
                    metadata=metadata,
                    timeout=LOOKUP_TIMEOUT,
                )
                participant: rooms_pb2.Participant = response.participant
            else:
                participant = await self._lookups.get(room_id, participant_id, background=background)
        except (grpc.aio.AioRpcError, _NoSuchParticipant) as exc:
            if isinstance(exc, _NoSuchParticipant) or exc.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.PERMISSION_DENIED,
            ):
                self._cache.pop(key, None)
                raise PermissionDenied(
                    "You are not a participant of this room.", code="not_a_participant"
                ) from exc
            raise Unavailable("Rooms could not be reached; try again.", code="rooms_unavailable") from exc
        if self._ttl > 0 and forgotten == self._forgotten:
            now = time.monotonic()
            self._cache[key] = (now + self._ttl * REFRESH_AFTER, now + self._ttl, participant)
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return participant

    def forget(self, room_id: str, participant_id: str) -> None:
        """Drop what is cached about a participant (it was just banned): the next check asks rooms."""
        self._forgotten += 1
        self._cache.pop((room_id, participant_id), None)

    async def in_room(
        self, room_id: str, participant_id: str, metadata: Sequence[tuple[str, str]]
    ) -> rooms_pb2.Participant:
        """Another participant of the room (banned or not), to act on them; NotFound otherwise."""
        cached = self._cache.get((room_id, participant_id))
        if cached is not None and cached[1] > time.monotonic():
            participant = cached[2]
        else:
            try:
                participant = await self._lookup(room_id, participant_id, metadata)
            except PermissionDenied as exc:
                raise NotFound(
                    "There is no such participant in this room.", code="participant_not_found"
                ) from exc
        if participant.room_id and participant.room_id != room_id:
            raise NotFound("There is no such participant in this room.", code="participant_not_found")
        return participant

    async def current(self, room_id: str, participant_id: str) -> rooms_pb2.Participant:
        """A participant of the room as rooms has it now, never from the cache (money is decided on
        it: a pin of a participant banned a moment ago must not stand); NotFound otherwise."""
        missing = NotFound("There is no such participant in this room.", code="participant_not_found")
        try:
            participant = await self._lookup(room_id, participant_id, ())
        except PermissionDenied as exc:
            raise missing from exc
        if participant.room_id and participant.room_id != room_id:
            raise missing
        return participant

    async def authorize_writer(
        self, principal: Principal, metadata: Sequence[tuple[str, str]]
    ) -> rooms_pb2.Participant:
        """The participant behind a room token, if it may still write to its room."""
        if not principal.participant_id:
            raise PermissionDenied("The token names no participant.", code="not_a_participant")
        participant = self.cached(principal)
        if participant is None:
            participant = await self._lookup(principal.room_id, principal.participant_id, metadata)
        return self.check_writer(principal, participant)

    def cached(self, principal: Principal) -> rooms_pb2.Participant | None:
        """The participant behind a room token as cached, when the cache may answer for that token
        (not expired, not older than the token); None means ask rooms (authorize_writer)."""
        key = (principal.room_id, principal.participant_id)
        cached = self._cache.get(key)
        if cached is None or cached[2].version < principal.version:
            return None
        now = time.monotonic()
        if cached[1] <= now:
            return None
        if cached[0] <= now:
            self._ahead.start(key, lambda: self._lookup(key[0], key[1], (), background=True))
        return cached[2]

    async def close(self) -> None:
        await self._ahead.close()
        await self._lookups.close()

    @staticmethod
    def check_writer(principal: Principal, participant: rooms_pb2.Participant) -> rooms_pb2.Participant:
        """The participant, if it may still write to the token's room; the precise refusal otherwise."""
        if participant.room_id and participant.room_id != principal.room_id:
            raise PermissionDenied("You are not a participant of this room.", code="not_a_participant")
        if participant.banned:
            raise PermissionDenied("You are banned from this room.", code="banned")
        if participant.seat_removed:
            raise PermissionDenied("Your seat in this Back Room was removed.", code="seat_removed")
        if principal.version < participant.version:
            raise PermissionDenied("This room token was revoked; join again.", code="token_revoked")
        return participant

"""What a room allows right now (open or closed, taken down, slow mode), looked up at rooms and
cached briefly (refreshed in the background while a room is busy: refresh_ahead.py).

Hosts change these while people are typing, so the cache is short (`ROOM_POLICY_CACHE_TTL`), and an
announced room update (AnnounceRoomUpdate, or its signal heard from another process) replaces the
cached state at once. A lookup that fails falls back to the last answer rather than refusing every
send while rooms restarts.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import grpc

from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.errors import NotFound, Unavailable
from chatpop_messaging.refresh_ahead import REFRESH_AFTER, RefreshAhead
from chatpop_messaging.rooms_lookup import LOOKUP_TIMEOUT


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    closed: bool
    slow_mode_seconds: int
    # An admin took the room down: none of its content is shown any more.
    taken_down: bool = False
    # The kinds of media the host allows (photo, voice, video).
    media_kinds: frozenset[str] = frozenset()


class RoomPolicies:
    def __init__(self, channel: grpc.aio.Channel, *, ttl: float, max_entries: int = 50_000) -> None:
        self._stub = rooms_pb2_grpc.RoomsServiceStub(channel)
        self._ttl = ttl
        self._max_entries = max_entries
        # room id → (refresh after, expires at, policy), monotonic seconds.
        self._cache: OrderedDict[str, tuple[float, float, RoomPolicy]] = OrderedDict()
        self._ahead = RefreshAhead()
        # Counts announced updates: a lookup that started before one must not replace what it taught.
        self._learned = 0

    def cached(self, room_id: str) -> RoomPolicy | None:
        """The room's policy if the cache holds it fresh, without a call; None otherwise. Past half its
        TTL it is looked up again in the background (refresh_ahead.py)."""
        cached = self._cache.get(room_id)
        if cached is None:
            return None
        now = time.monotonic()
        if cached[1] <= now:
            return None
        if cached[0] <= now:
            self._ahead.start(room_id, lambda: self._look_up(room_id, None))
        return cached[2]

    async def get(self, room_id: str) -> RoomPolicy:
        known = self.cached(room_id)
        if known is not None:
            return known
        last = self._cache.get(room_id)
        return await self._look_up(room_id, None if last is None else last[2])

    async def _look_up(self, room_id: str, fallback: RoomPolicy | None) -> RoomPolicy:
        learned = self._learned
        try:
            response = await self._stub.GetRoom(
                rooms_pb2.GetRoomRequest(room_id=room_id), timeout=LOOKUP_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                self._cache.pop(room_id, None)
                raise NotFound("There is no such room.", code="room_not_found") from exc
            if fallback is not None:
                return fallback
            raise Unavailable("Rooms could not be reached; try again.", code="rooms_unavailable") from exc
        policy = _policy(response.room)
        if learned == self._learned:
            self._remember(room_id, policy)
        return policy

    async def refuse_taken_down(self, room_id: str) -> None:
        """History and resume show nothing of a room an admin took down."""
        if (await self.get(room_id)).taken_down:
            raise NotFound("This room was taken down by ChatPop's moderators.", code="room_taken_down")

    def learn(self, room: rooms_pb2.Room) -> None:
        """The room as rooms just described it (an announced update): enforced from the next send."""
        self._learned += 1
        self._remember(room.id, _policy(room))

    def _remember(self, room_id: str, policy: RoomPolicy) -> None:
        now = time.monotonic()
        self._cache[room_id] = (now + self._ttl * REFRESH_AFTER, now + self._ttl, policy)
        self._cache.move_to_end(room_id)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    async def close(self) -> None:
        await self._ahead.close()


def _policy(room: rooms_pb2.Room) -> RoomPolicy:
    allowed = {"photo": room.media.photo, "voice": room.media.voice, "video": room.media.video}
    return RoomPolicy(
        closed=room.closed,
        slow_mode_seconds=room.slow_mode_seconds,
        taken_down=room.taken_down,
        media_kinds=frozenset(kind for kind, on in allowed.items() if on),
    )

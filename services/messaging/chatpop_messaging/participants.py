"""Who may write: participants looked up at rooms, cached briefly per participant (refreshed in the
background while the participant is sending: refresh_ahead.py)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

import grpc

from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.auth import Principal
from chatpop_common.errors import NotFound, PermissionDenied, Unavailable
from chatpop_messaging.refresh_ahead import REFRESH_AFTER, RefreshAhead
from chatpop_messaging.rooms_lookup import LOOKUP_TIMEOUT


class ParticipantDirectory:
    """Authorizes writers against rooms' view of the participant.

    A cached entry is trusted for `ttl` seconds; a miss (or an entry older than the caller's token)
    means "may have changed", so rooms is asked again. A writer's entry past half its TTL is looked up
    again in the background.
    """

    def __init__(self, channel: grpc.aio.Channel, *, ttl: float, max_entries: int = 50_000) -> None:
        self._stub = rooms_pb2_grpc.RoomsServiceStub(channel)
        self._ttl = ttl
        self._max_entries = max_entries
        # (room id, participant id) → (refresh after, expires at, participant), monotonic seconds.
        self._cache: OrderedDict[tuple[str, str], tuple[float, float, rooms_pb2.Participant]] = OrderedDict()
        self._ahead = RefreshAhead()
        # Counts forgets (bans): a lookup that started before one must not bring the old state back.
        self._forgotten = 0

    async def _lookup(
        self, room_id: str, participant_id: str, metadata: Sequence[tuple[str, str]]
    ) -> rooms_pb2.Participant:
        key = (room_id, participant_id)
        forgotten = self._forgotten
        try:
            response = await self._stub.GetParticipant(
                rooms_pb2.GetParticipantRequest(room_id=room_id, participant_id=participant_id),
                metadata=metadata,
                timeout=LOOKUP_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                self._cache.pop(key, None)
                raise PermissionDenied(
                    "You are not a participant of this room.", code="not_a_participant"
                ) from exc
            raise Unavailable("Rooms could not be reached; try again.", code="rooms_unavailable") from exc
        participant: rooms_pb2.Participant = response.participant
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
            self._ahead.start(key, lambda: self._lookup(key[0], key[1], ()))
        return cached[2]

    async def close(self) -> None:
        await self._ahead.close()

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

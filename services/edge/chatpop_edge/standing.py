"""Whether a room token still stands: its participant is not banned and the token's version is current.

A room token is signed for a participant and carries the participant's token version (`ver`); a ban
bumps the version at rooms, so every token issued before it stops working. The signature alone cannot
tell, so the edge asks rooms, caching each participant's standing for a couple of seconds. The cache
is dropped for a participant as soon as this process learns of their ban (it made the ban, or the
ban entry reached one of its room streams); another edge process that holds no socket of the room
learns it within the cache's lifetime.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import grpc

from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.auth import Principal
from chatpop_common.errors import NotFound, PermissionDenied, Unauthenticated, error_details

STANDING_TTL = 2.0
_MAX_ENTRIES = 50_000


def room_taken_down() -> NotFound:
    return NotFound("This room was taken down by ChatPop's moderators.", code="room_taken_down")


def banned_error() -> PermissionDenied:
    return PermissionDenied("You were banned from this room by its host.", code="banned")


def seat_removed_error() -> PermissionDenied:
    return PermissionDenied("Your seat in this Back Room was removed by its host.", code="seat_removed")


class ParticipantStanding:
    def __init__(
        self, rooms: rooms_pb2_grpc.RoomsServiceStub, *, timeout: float, ttl: float = STANDING_TTL
    ) -> None:
        self._rooms = rooms
        self._timeout = timeout
        self._ttl = ttl
        # (room id, participant id) -> (valid until, version, banned, seat removed)
        self._cache: OrderedDict[tuple[str, str], tuple[float, int, bool, bool]] = OrderedDict()

    def forget(self, room_id: str, participant_id: str) -> None:
        self._cache.pop((room_id, participant_id), None)

    def forget_room(self, room_id: str) -> None:
        """Everything cached about a room's participants (the room was taken down)."""
        for key in [key for key in self._cache if key[0] == room_id]:
            del self._cache[key]

    async def _lookup(self, room_id: str, participant_id: str) -> tuple[int, bool, bool]:
        key = (room_id, participant_id)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1], cached[2], cached[3]
        try:
            response = await self._rooms.GetParticipant(
                rooms_pb2.GetParticipantRequest(room_id=room_id, participant_id=participant_id),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND and error_details(exc)[0] == "room_taken_down":
                raise room_taken_down() from exc
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise PermissionDenied(
                    "You are not a participant of this room.", code="not_a_participant"
                ) from exc
            raise
        standing = (
            now + self._ttl,
            int(response.participant.version),
            bool(response.participant.banned),
            bool(response.participant.seat_removed),
        )
        self._cache[key] = standing
        self._cache.move_to_end(key)
        while len(self._cache) > _MAX_ENTRIES:
            self._cache.popitem(last=False)
        return standing[1], standing[2], standing[3]

    async def check_participant(self, room_id: str, participant_id: str) -> None:
        """Raise unless the participant still stands in the room: `banned` or `seat_removed` (403),
        `not_a_participant` (403), `room_taken_down` (404). For access that is not a room token
        (signed media URLs)."""
        _version, banned, seat_removed = await self._lookup(room_id, participant_id)
        if banned:
            raise banned_error()
        if seat_removed:
            raise seat_removed_error()

    async def check(self, principal: Principal) -> None:
        """Raise when the room token was revoked: `banned` (403), `seat_removed` (403: a Back Room
        token of a holder who lost their seat), `token_revoked` (401) for a token from before a lifted
        ban (joining again gives a new one), or `room_taken_down` (404)."""
        if not principal.participant_id:
            raise Unauthenticated("The token names no participant.", code="invalid_token")
        version, banned, seat_removed = await self._lookup(principal.room_id, principal.participant_id)
        if banned:
            raise banned_error()
        if seat_removed:
            raise seat_removed_error()
        if principal.version < version:
            raise Unauthenticated("This room token was revoked; join the room again.", code="token_revoked")

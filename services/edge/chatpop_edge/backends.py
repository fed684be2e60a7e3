"""gRPC clients for the four services, the token verifier, and the few small caches the edge keeps."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop.messaging.v1 import messaging_pb2_grpc
from chatpop.payments.v1 import payments_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.auth import TokenVerifier
from chatpop_common.clients import bearer, identity_key_cache, insecure_channel
from chatpop_edge.settings import EdgeSettings
from chatpop_edge.standing import ParticipantStanding

if TYPE_CHECKING:
    from chatpop_edge.realtime.batcher import SendBatcher

Metadata = tuple[tuple[str, str], ...]

# Full gRPC service names, as each server registers them with its health servicer.
SERVICE_NAMES = {
    "identity": "chatpop.identity.v1.IdentityService",
    "rooms": "chatpop.rooms.v1.RoomsService",
    "messaging": "chatpop.messaging.v1.MessagingService",
    "payments": "chatpop.payments.v1.PaymentsService",
}


def auth_metadata(token: str | None) -> Metadata:
    return tuple(bearer(token)) if token else ()


class Backends:
    """Channels and stubs for identity, rooms, messaging and payments. Create inside the event loop."""

    _ROOM_IDS_MAX = 10_000

    def __init__(self, settings: EdgeSettings) -> None:
        self.timeout = settings.rpc_timeout
        self._channels = {
            "identity": insecure_channel(settings.identity_addr),
            "rooms": insecure_channel(settings.rooms_addr),
            "messaging": insecure_channel(settings.messaging_addr),
            "payments": insecure_channel(settings.payments_addr),
        }
        self.identity = identity_pb2_grpc.IdentityServiceStub(self._channels["identity"])
        self.rooms = rooms_pb2_grpc.RoomsServiceStub(self._channels["rooms"])
        self.messaging = messaging_pb2_grpc.MessagingServiceStub(self._channels["messaging"])
        self.payments = payments_pb2_grpc.PaymentsServiceStub(self._channels["payments"])
        # Rooms' Subscribe streams get a channel (and so a round-robin balancer) of their own. On the
        # shared one every room opening makes the same calls in the same order (a ListMessages, then
        # the Subscribe), so with two messaging processes every stream would land on the same one.
        self._streams_channel = insecure_channel(settings.messaging_addr)
        self.messaging_streams = messaging_pb2_grpc.MessagingServiceStub(self._streams_channel)
        self.verifier = TokenVerifier(identity_key_cache(self._channels["identity"]))
        # Room tokens revoked by a ban (their participant's version went up) are refused at once.
        self.standing = ParticipantStanding(self.rooms, timeout=self.timeout)
        # The process's send batcher (set by the app's lifespan): sends go to messaging through it.
        self.sends: SendBatcher | None = None
        self._jwks_ttl = settings.jwks_cache_seconds
        self._jwks: tuple[float, identity_pb2.GetPublicKeysResponse] | None = None
        self._jwks_lock = asyncio.Lock()
        # A room's code never changes its id, so this mapping can be kept without expiry.
        self._room_ids: OrderedDict[str, str] = OrderedDict()

    async def get_room(self, code: str, token: str | None = None) -> rooms_pb2.Room:
        response: rooms_pb2.GetRoomResponse = await self.rooms.GetRoom(
            rooms_pb2.GetRoomRequest(code=code), metadata=auth_metadata(token), timeout=self.timeout
        )
        self._remember_room(response.room)
        return response.room

    async def room_id(self, code: str, token: str | None = None) -> str:
        room_id = self._room_ids.get(code)
        if room_id is not None:
            self._room_ids.move_to_end(code)
            return room_id
        return (await self.get_room(code, token)).id

    def _remember_room(self, room: rooms_pb2.Room) -> None:
        if not room.code or not room.id:
            return
        self._room_ids[room.code] = room.id
        self._room_ids.move_to_end(room.code)
        while len(self._room_ids) > self._ROOM_IDS_MAX:
            self._room_ids.popitem(last=False)

    def remember_room(self, room: rooms_pb2.Room) -> None:
        self._remember_room(room)

    async def public_keys(self) -> identity_pb2.GetPublicKeysResponse:
        """identity's public keys, reused for a short while so JWKS requests do not reach identity."""
        async with self._jwks_lock:
            now = time.monotonic()
            if self._jwks is not None and now - self._jwks[0] < self._jwks_ttl:
                return self._jwks[1]
            response: identity_pb2.GetPublicKeysResponse = await self.identity.GetPublicKeys(
                identity_pb2.GetPublicKeysRequest(), timeout=self.timeout
            )
            self._jwks = (now, response)
            return response

    async def health(self, deadline: float = 2.0) -> dict[str, bool]:
        """Whether each service reports SERVING through grpc.health.v1."""

        async def check(name: str) -> bool:
            stub = health_pb2_grpc.HealthStub(self._channels[name])
            try:
                response = await stub.Check(
                    health_pb2.HealthCheckRequest(service=SERVICE_NAMES[name]), timeout=deadline
                )
            except grpc.aio.AioRpcError:
                return False
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

        names = list(self._channels)
        results = await asyncio.gather(*(check(name) for name in names))
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        channels = [*self._channels.values(), self._streams_channel]
        await asyncio.gather(*(channel.close() for channel in channels))

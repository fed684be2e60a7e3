"""Where the services are and the CLI's credential: read from the environment, one channel per service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from chatpop.identity.v1 import identity_pb2_grpc
from chatpop.messaging.v1 import messaging_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2_grpc
from chatpop_common.service_auth import ServiceCredentials, check_secret

if TYPE_CHECKING:
    from chatpop.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub
    from chatpop.messaging.v1.messaging_pb2_grpc import MessagingServiceAsyncStub
    from chatpop.rooms.v1.rooms_pb2_grpc import RoomsServiceAsyncStub

SERVICE = "cli"
DEFAULT_ADDRESSES = {
    "IDENTITY_ADDR": "127.0.0.1:7101",
    "ROOMS_ADDR": "127.0.0.1:7102",
    "MESSAGING_ADDR": "127.0.0.1:7103",
}
# Long operations (retention over every room, re-encryption) answer within this by default.
DEFAULT_TIMEOUT = 300.0
_MAX_RECEIVE_BYTES = 64 * 1024 * 1024


class UsageError(Exception):
    """Something the operator has to fix before a call can be made; the message says what."""


@dataclass(frozen=True)
class Settings:
    identity_addr: str
    rooms_addr: str
    messaging_addr: str
    service_token_secret: str
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT) -> Settings:
        secret = env.get("SERVICE_TOKEN_SECRET", "")
        if not secret:
            raise UsageError(
                "SERVICE_TOKEN_SECRET is not set: give the CLI the secret the services share"
                " (make run keeps it in .data/secrets/service-token-secret)"
            )
        try:
            check_secret(secret)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        addresses = {
            name: env.get(name, "").strip() or default for name, default in DEFAULT_ADDRESSES.items()
        }
        return cls(
            identity_addr=addresses["IDENTITY_ADDR"],
            rooms_addr=addresses["ROOMS_ADDR"],
            messaging_addr=addresses["MESSAGING_ADDR"],
            service_token_secret=secret,
            timeout=timeout,
        )


def _channel(address: str) -> grpc.aio.Channel:
    # No wait-for-ready: a service that is down is reported at once (UNAVAILABLE), not waited for.
    return grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", _MAX_RECEIVE_BYTES)]
    )


class Services:
    """Stubs of identity, rooms and messaging, and the metadata carrying the CLI's service token."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.identity: IdentityServiceAsyncStub = identity_pb2_grpc.IdentityServiceStub(  # type: ignore[assignment]
            self._open(settings.identity_addr)
        )
        self.rooms: RoomsServiceAsyncStub = rooms_pb2_grpc.RoomsServiceStub(  # type: ignore[assignment]
            self._open(settings.rooms_addr)
        )
        self.messaging: MessagingServiceAsyncStub = messaging_pb2_grpc.MessagingServiceStub(  # type: ignore[assignment]
            self._open(settings.messaging_addr)
        )
        self._credentials = ServiceCredentials(self.identity, SERVICE, settings.service_token_secret)

    def _open(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = _channel(address)
        return self._channels[address]

    async def metadata(self) -> Sequence[tuple[str, str]]:
        return await self._credentials.metadata()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


@contextlib.asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[Services]:
    services = Services(settings)
    try:
        yield services
    finally:
        await services.close()

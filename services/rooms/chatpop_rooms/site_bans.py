"""Site-wide bans, as identity keeps them: JoinRoom refuses a banned identity or network in every room.

identity owns the bans; rooms asks CheckSiteBan and keeps each answer for a few seconds, so a burst of
joins costs one call, and a new ban reaches every join within that time.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import grpc

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop_common.errors import PermissionDenied, Unavailable
from chatpop_common.service_auth import ServiceCredentials

CHECK_TTL = 5.0
CHECK_TIMEOUT = 5.0
_MAX_ENTRIES = 50_000


def site_banned() -> PermissionDenied:
    return PermissionDenied("You were banned from ChatPop by its moderators.", code="site_banned")


class SiteBanCheck:
    def __init__(
        self,
        identity: identity_pb2_grpc.IdentityServiceStub,
        credentials: ServiceCredentials,
        *,
        ttl: float = CHECK_TTL,
    ) -> None:
        self._identity = identity
        self._credentials = credentials
        self._ttl = ttl
        self._cache: OrderedDict[tuple[str, str], tuple[float, bool]] = OrderedDict()

    async def refuse_banned(self, subject: str, client_ip_hash: str) -> None:
        """PERMISSION_DENIED `site_banned` when the identity or its network is banned site-wide."""
        key = (subject, client_ip_hash)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            banned = cached[1]
        else:
            try:
                response = await self._identity.CheckSiteBan(
                    identity_pb2.CheckSiteBanRequest(identity_id=subject, client_ip_hash=client_ip_hash),
                    metadata=await self._credentials.metadata(),
                    timeout=CHECK_TIMEOUT,
                )
            except grpc.aio.AioRpcError as exc:
                # Joining needs identity for the room token anyway: refuse now rather than let a ban slip.
                raise Unavailable(
                    "Could not check the join; try again.", code="identity_unavailable"
                ) from exc
            banned = bool(response.banned)
            self._cache[key] = (now + self._ttl, banned)
            self._cache.move_to_end(key)
            while len(self._cache) > _MAX_ENTRIES:
                self._cache.popitem(last=False)
        if banned:
            raise site_banned()

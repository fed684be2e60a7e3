"""Site-wide bans, as identity keeps them: JoinRoom refuses a banned identity or network in every room,
and the room tokens it already holds are revoked everywhere at once.

identity owns the bans; rooms asks CheckSiteBan and keeps each answer for a few seconds, so a burst of
joins costs one call, and a new ban reaches every join within that time (at once in the rooms process
that revokes the ban's room tokens, which forgets what it kept about them). Tokens issued before the ban
are revoked by RevokeSiteBanned, which the edge calls right after the ban: the token version of every
participant of the identity, or of everyone who joined from the network, goes up in one statement.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import asyncpg
import grpc

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.errors import InvalidArgument, PermissionDenied, Unavailable
from chatpop_common.service_auth import ServiceCredentials

CHECK_TTL = 5.0
CHECK_TIMEOUT = 5.0
_MAX_ENTRIES = 50_000
CLIENT_IP_HASH_MAX = 128
# The most revoked participants an answer names; all of them are revoked whatever their number. A
# person rarely sits in more rooms than this, and the edge closes the sockets of those it names.
REVOKED_LIST_MAX = 10_000

# Every participant is revoked; the answer names the most recently joined, and counts them all.
_REVOKE = """
    WITH revoked AS (
        UPDATE participants SET version = version + 1 WHERE {column} = $1
        RETURNING room_id, id, joined_at
    )
    SELECT room_id, id, count(*) OVER () AS total FROM revoked ORDER BY joined_at DESC, id LIMIT $2
"""
_REVOKE_IDENTITY = _REVOKE.format(column="subject")
_REVOKE_NETWORK = _REVOKE.format(column="client_ip_hash")


@dataclass(frozen=True, slots=True)
class Revocation:
    """Participants whose room tokens were revoked: `listed` (room id, participant id), of `total`."""

    listed: list[tuple[str, str]]
    total: int

    def message(self) -> rooms_pb2.RevokeSiteBannedResponse:
        return rooms_pb2.RevokeSiteBannedResponse(
            participants=[
                rooms_pb2.RevokedParticipant(room_id=room_id, participant_id=participant_id)
                for room_id, participant_id in self.listed
            ],
            total=self.total,
        )


def revocation_target(request: rooms_pb2.RevokeSiteBannedRequest) -> tuple[str, str]:
    """(identity id, network hash) of a RevokeSiteBanned request; exactly one is set."""
    target = request.WhichOneof("target")
    if target == "identity_id":
        try:
            return str(uuid.UUID(request.identity_id.strip())), ""
        except ValueError:
            raise InvalidArgument("identity_id must be a UUID.", code="invalid_argument") from None
    if target == "client_ip_hash":
        value = request.client_ip_hash.strip()
        if not value or len(value) > CLIENT_IP_HASH_MAX or "\x00" in value:
            raise InvalidArgument("client_ip_hash is not a hash.", code="invalid_client_ip_hash")
        return "", value
    raise InvalidArgument("Name an identity_id or a client_ip_hash.", code="invalid_argument")


class SiteBanRevocations:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def revoke(self, *, identity_id: str = "", client_ip_hash: str = "") -> Revocation:
        """Bump the token version of the identity's participants, or of the network's, in every room."""
        query, key = (_REVOKE_IDENTITY, identity_id) if identity_id else (_REVOKE_NETWORK, client_ip_hash)
        records = await self._pool.fetch(query, key, REVOKED_LIST_MAX)
        return Revocation(
            listed=[(str(record["room_id"]), str(record["id"])) for record in records],
            total=int(records[0]["total"]) if records else 0,
        )


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

    def forget(self, *, subject: str = "", client_ip_hash: str = "") -> None:
        """Drop the answers kept for an identity or a network that was just banned: the next join of
        theirs in this process asks identity again (other rooms processes learn it within the TTL)."""
        stale = [
            key
            for key in self._cache
            if (subject and key[0] == subject) or (client_ip_hash and key[1] == client_ip_hash)
        ]
        for key in stale:
            del self._cache[key]

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

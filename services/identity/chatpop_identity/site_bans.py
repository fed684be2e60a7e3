"""Site-wide bans: an admin keeps an identity (anonymous session or account) or a network off the site.

A banned identity's refresh tokens are revoked in the same transaction as the ban, and it can neither
sign in nor refresh from then on; its access tokens run out within their short lifetime, and rooms
refuses it on every join meanwhile (CheckSiteBan). A banned network (the edge's keyed hash of a
client IP, never the IP) starts no anonymous sessions, registers no account, signs in to none with a
password, and joins no room. The room tokens already issued are revoked by rooms and the live sockets
closed through messaging, which the edge asks right after the ban.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from chatpop.identity.v1 import identity_pb2
from chatpop_common.errors import InvalidArgument, NotFound, PermissionDenied

REASON_MAX = 500
IP_HASH_MAX = 128
LIST_DEFAULT = 100
LIST_MAX = 200

_COLUMNS = "id, identity_id, client_ip_hash, reason, banned_by, created_at, lifted_at"
_ACTIVE = f"SELECT {_COLUMNS} FROM site_bans WHERE lifted_at IS NULL"  # noqa: S608 - fixed columns
# A ban already in force for the identity or network inserts nothing (its partial unique index).
_INSERT = f"""
    INSERT INTO site_bans (id, identity_id, client_ip_hash, reason, banned_by) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT DO NOTHING RETURNING {_COLUMNS}
"""  # noqa: S608 - fixed columns
_LIFT = f"""
    UPDATE site_bans SET lifted_at = now(), lifted_by = $2 WHERE id = $1 AND lifted_at IS NULL
    RETURNING {_COLUMNS}
"""  # noqa: S608 - fixed columns


@dataclass(frozen=True, slots=True)
class SiteBan:
    id: uuid.UUID
    identity_id: uuid.UUID | None
    client_ip_hash: str | None
    reason: str
    banned_by: str
    created_at: datetime
    lifted_at: datetime | None

    def message(self) -> identity_pb2.SiteBan:
        message = identity_pb2.SiteBan(
            id=str(self.id),
            identity_id=str(self.identity_id) if self.identity_id else "",
            client_ip_hash=self.client_ip_hash or "",
            reason=self.reason,
            banned_by=self.banned_by,
        )
        message.created_at.FromDatetime(self.created_at)
        if self.lifted_at is not None:
            message.lifted_at.FromDatetime(self.lifted_at)
        return message


def _ban(record: asyncpg.Record) -> SiteBan:
    return SiteBan(**dict(record))


def site_banned() -> PermissionDenied:
    return PermissionDenied("You were banned from ChatPop by its moderators.", code="site_banned")


def check_reason(raw: str) -> str:
    reason = raw.strip()
    if not reason or len(reason) > REASON_MAX:
        raise InvalidArgument(f"A reason has 1 to {REASON_MAX} characters.", code="invalid_reason")
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in reason):
        raise InvalidArgument("A reason cannot contain control characters.", code="invalid_reason")
    return reason


def check_ip_hash(raw: str) -> str | None:
    value = raw.strip()
    if len(value) > IP_HASH_MAX or "\x00" in value:
        raise InvalidArgument("client_ip_hash is not a hash.", code="invalid_client_ip_hash")
    return value or None


def check_identity_id(raw: str) -> uuid.UUID | None:
    if not raw.strip():
        return None
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise InvalidArgument("identity_id must be a UUID.", code="invalid_argument") from None


def check_limit(limit: int) -> int:
    if not 0 <= limit <= LIST_MAX:
        raise InvalidArgument(f"Ask for 1 to {LIST_MAX} bans.", code="invalid_limit")
    return limit or LIST_DEFAULT


class SiteBans:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ban(
        self,
        *,
        identity_id: uuid.UUID | None,
        client_ip_hash: str | None,
        reason: str,
        banned_by: str,
        now: datetime,
    ) -> tuple[SiteBan, bool]:
        """The ban in force for this identity or network, and whether this call made it."""
        if (identity_id is None) == (client_ip_hash is None):
            raise InvalidArgument("Ban exactly one identity_id or client_ip_hash.", code="invalid_argument")
        async with self._pool.acquire() as conn, conn.transaction():
            if identity_id is not None:
                exists = await conn.fetchval("SELECT true FROM identities WHERE id = $1", identity_id)
                if not exists:
                    raise NotFound("No identity has this id.", code="identity_not_found")
            record = await conn.fetchrow(
                _INSERT,
                uuid.uuid4(),
                identity_id,
                client_ip_hash,
                reason,
                banned_by,
            )
            if record is None:
                existing = await conn.fetchrow(
                    _ACTIVE + " AND (identity_id = $1 OR client_ip_hash = $2)", identity_id, client_ip_hash
                )
                if existing is None:
                    raise InvalidArgument("The ban could not be made; try again.", code="conflict")
                return _ban(existing), False
            if identity_id is not None:
                await conn.execute(
                    "UPDATE refresh_tokens SET revoked_at = $2 WHERE identity_id = $1 AND revoked_at IS NULL",
                    identity_id,
                    now,
                )
        return _ban(record), True

    async def lift(self, ban_id: str, lifted_by: str) -> tuple[SiteBan, bool]:
        key = check_identity_id(ban_id)
        if key is None:
            raise InvalidArgument("ban_id is required.", code="invalid_argument")
        record = await self._pool.fetchrow(
            _LIFT,
            key,
            lifted_by,
        )
        if record is not None:
            return _ban(record), True
        record = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM site_bans WHERE id = $1", key)  # noqa: S608
        if record is None:
            raise NotFound("There is no such ban.", code="ban_not_found")
        return _ban(record), False

    async def in_force(self, limit: int) -> list[SiteBan]:
        records = await self._pool.fetch(_ACTIVE + " ORDER BY created_at DESC, id LIMIT $1", limit)
        return [_ban(record) for record in records]

    async def banned(
        self, *, identity_id: uuid.UUID | None = None, client_ip_hash: str | None = None
    ) -> bool:
        if identity_id is None and not client_ip_hash:
            return False
        found = await self._pool.fetchval(
            "SELECT true FROM site_bans WHERE lifted_at IS NULL"
            " AND (identity_id = $1 OR client_ip_hash = $2) LIMIT 1",
            identity_id,
            client_ip_hash or None,
        )
        return bool(found)

    async def token_owner_banned(self, token_hash: bytes) -> bool:
        """Whether the identity a refresh token belongs to is banned (an unknown token: no)."""
        found = await self._pool.fetchval(
            "SELECT true FROM refresh_tokens t JOIN site_bans b ON b.identity_id = t.identity_id"
            " WHERE t.token_hash = $1 AND b.lifted_at IS NULL LIMIT 1",
            token_hash,
        )
        return bool(found)

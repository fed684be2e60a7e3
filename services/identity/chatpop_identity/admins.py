"""The admin role: granted, revoked and listed by the admin CLI only (GrantAdmin, RevokeAdmin, ListAdmins
with the `cli` service credential); no API an account can call changes it.

A change is recorded in the audit log (actor `cli`) in the same transaction. It reaches the account's
access tokens at its next sign-in or token refresh (within ACCESS_TOKEN_TTL); identity's own admin
RPCs check the table as well, so a revocation stops them at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from chatpop_common.errors import NotFound
from chatpop_identity import audit
from chatpop_identity.store import USER

_LOCK_ACCOUNT = "SELECT id, is_admin FROM identities WHERE email = $1 AND kind = $2 FOR UPDATE"
# When each admin was made one: the newest grant in the audit log (the table keeps no date).
_ADMINS = """
SELECT i.id, i.email, i.reserved_username,
       (SELECT e.at FROM audit_events e
        WHERE e.target = i.id::text AND e.kind = $1 ORDER BY e.id DESC LIMIT 1) AS granted_at
FROM identities i
WHERE i.is_admin
ORDER BY i.email
"""


@dataclass(frozen=True)
class Change:
    account: uuid.UUID
    # False when the account already was (or was not) an admin.
    changed: bool


@dataclass(frozen=True)
class Admin:
    account: uuid.UUID
    email: str
    username: str | None
    granted_at: datetime | None


class Admins:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def set(self, email: str, admin: bool) -> Change:
        """Grant or revoke by the account's (normalized) email; NOT_FOUND `account_not_found`."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCK_ACCOUNT, email, USER)
            if row is None:
                raise NotFound("No account uses this email.", code="account_not_found")
            account: uuid.UUID = row["id"]
            if row["is_admin"] == admin:
                return Change(account, False)
            await conn.execute("UPDATE identities SET is_admin = $2 WHERE id = $1", account, admin)
            await audit.record(
                conn,
                audit.NewEvent(
                    kind=audit.ADMIN_GRANTED if admin else audit.ADMIN_REVOKED,
                    actor=audit.CLI_ACTOR,
                    target=str(account),
                ),
            )
        return Change(account, True)

    async def current(self) -> list[Admin]:
        rows = await self._pool.fetch(_ADMINS, audit.ADMIN_GRANTED)
        return [
            Admin(
                account=row["id"],
                email=row["email"],
                username=row["reserved_username"],
                granted_at=row["granted_at"],
            )
            for row in rows
        ]

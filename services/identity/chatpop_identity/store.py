"""SQL for the `identity` schema; the only code that touches its tables."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from chatpop_common.errors import AlreadyExists, FailedPrecondition, NotFound
from chatpop_identity import audit
from chatpop_identity.quarantine import (
    Quarantine,
    lock_reservations,
    quarantine_of,
    reclaim,
    refuse_if_held_for_another,
)

ANONYMOUS = "anonymous"
USER = "user"
IDENTITY_COLUMNS = "id, kind, email, password_hash, reserved_username, created_at, is_admin"
# The column list is a fixed constant; every value travels as a bind parameter.
_RESERVE_USERNAME = f"""
    UPDATE identities SET reserved_username = $2, reserved_username_lower = lower($2)
    WHERE id = $1 AND kind = $3 AND reserved_username IS NULL
    RETURNING {IDENTITY_COLUMNS}
"""  # noqa: S608
_CREATE_ANONYMOUS = f"INSERT INTO identities (id, kind) VALUES ($1, $2) RETURNING {IDENTITY_COLUMNS}"  # noqa: S608
_CREATE_USER = f"""
    INSERT INTO identities (id, kind, email, password_hash, reserved_username, reserved_username_lower)
    VALUES ($1, $2, $3, $4, $5, lower($5))
    RETURNING {IDENTITY_COLUMNS}
"""  # noqa: S608
_BY_ID = f"SELECT {IDENTITY_COLUMNS} FROM identities WHERE id = $1"  # noqa: S608
_USER_BY_EMAIL = f"SELECT {IDENTITY_COLUMNS} FROM identities WHERE email = $1 AND kind = $2"  # noqa: S608


# Families (at most $2) with no token that is still valid at $1; every row of them goes.
_PURGE_EXPIRED_FAMILIES = """
    DELETE FROM refresh_tokens WHERE family_id IN (
        SELECT DISTINCT expired.family_id FROM refresh_tokens AS expired
        WHERE expired.expires_at <= $1
          AND NOT EXISTS (
              SELECT 1 FROM refresh_tokens AS live
              WHERE live.family_id = expired.family_id AND live.expires_at > $1
          )
        LIMIT $2
    )
"""
_PURGE_BATCH = 1000


@dataclass(frozen=True)
class IdentityRecord:
    id: uuid.UUID
    kind: str
    email: str | None
    password_hash: str | None
    reserved_username: str | None
    created_at: datetime
    # Granted with the admin CLI (GrantAdmin); access tokens carry it from the next sign-in.
    is_admin: bool = False


@dataclass(frozen=True)
class NewRefreshToken:
    """A refresh token to store: only its hash is kept, never the token itself."""

    token_hash: bytes
    expires_at: datetime


class RotationStatus(enum.Enum):
    ROTATED = "rotated"
    # The token had been rotated before: someone replayed it, so its family is now revoked.
    REUSED = "reused"
    # Unknown, expired or revoked.
    INVALID = "invalid"


@dataclass(frozen=True)
class Rotation:
    status: RotationStatus
    identity: IdentityRecord | None = None


def identity_record(row: asyncpg.Record) -> IdentityRecord:
    return IdentityRecord(
        id=row["id"],
        kind=row["kind"],
        email=row["email"],
        password_hash=row["password_hash"],
        reserved_username=row["reserved_username"],
        created_at=row["created_at"],
        is_admin=row["is_admin"],
    )


async def insert_refresh_token(
    conn: asyncpg.Connection, identity_id: uuid.UUID, family_id: uuid.UUID, token: NewRefreshToken
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (id, family_id, identity_id, token_hash, expires_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        uuid.uuid4(),
        family_id,
        identity_id,
        token.token_hash,
        token.expires_at,
    )


class IdentityStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_anonymous(self, refresh: NewRefreshToken) -> IdentityRecord:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                _CREATE_ANONYMOUS,
                uuid.uuid4(),
                ANONYMOUS,
            )
            identity = identity_record(row)
            await insert_refresh_token(conn, identity.id, uuid.uuid4(), refresh)
        return identity

    async def create_user(
        self,
        *,
        email: str,
        password_hash: str,
        reserved_username: str | None,
        refresh: NewRefreshToken,
    ) -> IdentityRecord:
        """A new account and its first refresh token; AlreadyExists when the email or name is taken
        (or the name is in quarantine)."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if reserved_username is not None:
                    now = await lock_reservations(conn)
                    await refuse_if_held_for_another(conn, reserved_username.lower(), None, now)
                row = await conn.fetchrow(
                    _CREATE_USER,
                    uuid.uuid4(),
                    USER,
                    email,
                    password_hash,
                    reserved_username,
                )
                identity = identity_record(row)
                await insert_refresh_token(conn, identity.id, uuid.uuid4(), refresh)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "identities_reserved_username_lower_key":
                raise AlreadyExists("That username is already taken.", code="username_taken") from None
            if exc.constraint_name == "identities_email_key":
                raise AlreadyExists(
                    "An account with this email already exists.", code="email_taken"
                ) from None
            raise
        return identity

    async def get(self, identity_id: uuid.UUID) -> IdentityRecord | None:
        row = await self._pool.fetchrow(
            _BY_ID,
            identity_id,
        )
        return identity_record(row) if row is not None else None

    async def find_user_by_email(self, email: str) -> IdentityRecord | None:
        row = await self._pool.fetchrow(
            _USER_BY_EMAIL,
            email,
            USER,
        )
        return identity_record(row) if row is not None else None

    async def replace_password_hash(self, identity_id: uuid.UUID, old_hash: str, new_hash: str) -> None:
        """Store a stronger hash of the same password, unless the password changed meanwhile."""
        await self._pool.execute(
            "UPDATE identities SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
            identity_id,
            old_hash,
            new_hash,
        )

    async def start_family(
        self, identity_id: uuid.UUID, refresh: NewRefreshToken, event: audit.NewEvent | None = None
    ) -> None:
        """A new refresh-token family (a sign-in), recorded in the audit log as `event` if given."""
        async with self._pool.acquire() as conn, conn.transaction():
            await insert_refresh_token(conn, identity_id, uuid.uuid4(), refresh)
            if event is not None:
                await audit.record(conn, event)

    async def is_admin(self, identity_id: uuid.UUID) -> bool:
        """Whether the account is an admin now (a token's claim may be older)."""
        return bool(await self._pool.fetchval("SELECT is_admin FROM identities WHERE id = $1", identity_id))

    async def rotate(
        self, token_hash: bytes, replacement: NewRefreshToken, now: datetime, client_ip_hash: str = ""
    ) -> Rotation:
        """Swap a live refresh token for `replacement` in the same family, atomically.

        The row lock makes concurrent presentations of one token queue up: the first rotates it,
        every later one finds it used and counts as reuse. Reuse that revokes a family is recorded
        in the audit log in the same transaction (replays of an already revoked family are not).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT id, family_id, identity_id, expires_at, used_at, revoked_at"
                " FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
                token_hash,
            )
            if row is None:
                return Rotation(RotationStatus.INVALID)
            # A rotated token presented again is reuse even once its family is revoked, so every
            # replay is reported as such; a revoked token that was never rotated is just invalid.
            if row["used_at"] is not None:
                status = await conn.execute(
                    "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
                    row["family_id"],
                    now,
                )
                revoked = int(status.split()[-1])
                if revoked:
                    owner = str(row["identity_id"])
                    await audit.record(
                        conn,
                        audit.NewEvent(
                            kind=audit.REFRESH_TOKEN_REUSED,
                            target=owner,
                            ip_hash=client_ip_hash,
                            details={"family_id": str(row["family_id"]), "revoked_tokens": revoked},
                        ),
                    )
                return Rotation(RotationStatus.REUSED)
            if row["revoked_at"] is not None or row["expires_at"] <= now:
                return Rotation(RotationStatus.INVALID)
            identity_row = await conn.fetchrow(
                _BY_ID,
                row["identity_id"],
            )
            if identity_row is None:
                return Rotation(RotationStatus.INVALID)
            await conn.execute("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1", row["id"], now)
            await insert_refresh_token(conn, row["identity_id"], row["family_id"], replacement)
        return Rotation(RotationStatus.ROTATED, identity_record(identity_row))

    async def revoke_family_of(self, token_hash: bytes, now: datetime) -> None:
        """Revoke the family the token belongs to; nothing happens for an unknown token."""
        await self._pool.execute(
            "UPDATE refresh_tokens SET revoked_at = $2"
            " WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)"
            " AND revoked_at IS NULL",
            token_hash,
            now,
        )

    async def purge_expired_families(self, now: datetime, batch: int = _PURGE_BATCH) -> int:
        """Delete refresh-token families whose every token expired by `now`; returns tokens deleted.

        A family with one live token keeps all of its rows, since its rotated tokens are what reuse
        detection looks up. An expired family can never rotate again, so nothing races the delete.
        Works through the families `batch` at a time, so no statement holds many locks for long.
        """
        deleted = 0
        while True:
            status = await self._pool.execute(_PURGE_EXPIRED_FAMILIES, now, batch)
            count = int(status.split()[-1])
            deleted += count
            if count == 0:
                return deleted

    async def reserved_username_owner(self, username_lower: str) -> uuid.UUID | None:
        """The account holding this reserved username (compared in lower case), if any."""
        owner: uuid.UUID | None = await self._pool.fetchval(
            "SELECT id FROM identities WHERE reserved_username_lower = $1", username_lower
        )
        return owner

    async def reserved_among(self, usernames_lower: list[str]) -> set[str]:
        """Which of these lower-case usernames accounts have reserved, or hold back in quarantine."""
        rows = await self._pool.fetch(
            "SELECT reserved_username_lower AS name FROM identities"
            " WHERE reserved_username_lower = ANY($1::text[])"
            " UNION SELECT username_lower FROM released_usernames"
            " WHERE username_lower = ANY($1::text[]) AND held_until > now()",
            usernames_lower,
        )
        return {str(row["name"]) for row in rows}

    async def quarantine(self, username_lower: str) -> Quarantine | None:
        """Whether an account gave this name up recently, and until when it is held back."""
        return await quarantine_of(self._pool, username_lower)

    async def reserve_username(self, identity_id: uuid.UUID, username: str) -> IdentityRecord:
        """Give an account its reserved username; reserving the one it already holds changes nothing.

        AlreadyExists `username_taken` when another account holds it (`username_quarantined` when
        another account gave it up recently), FailedPrecondition `username_already_reserved` when
        this account holds a different one, NotFound when the account is gone.
        """
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                now = await lock_reservations(conn)
                held = await refuse_if_held_for_another(conn, username.lower(), identity_id, now)
                row = await conn.fetchrow(_RESERVE_USERNAME, identity_id, username, USER)
                if row is not None and held is not None:
                    await reclaim(conn, username.lower())
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "identities_reserved_username_lower_key":
                raise AlreadyExists("That username is already taken.", code="username_taken") from None
            raise
        if row is not None:
            return identity_record(row)
        current = await self.get(identity_id)
        if current is None or current.kind != USER:
            raise NotFound("This account no longer exists.", code="identity_not_found")
        if (current.reserved_username or "").lower() == username.lower():
            return current
        raise FailedPrecondition(
            f"This account already holds the username {current.reserved_username!r}.",
            code="username_already_reserved",
        )

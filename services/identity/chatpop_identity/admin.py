"""Admins and the audit log, from the command line. Reads DATABASE_URL (identity's database).

    python -m chatpop_identity.admin grant EMAIL      make the account an admin
    python -m chatpop_identity.admin revoke EMAIL     take the role away
    python -m chatpop_identity.admin list             the admins, as JSON lines
    python -m chatpop_identity.admin audit [--kind K] [--actor A] [--target T] [--room-id R]
                                           [--before ID] [--limit N]
                                                      audit events, newest first, as JSON lines

This is the only way to grant or revoke the admin role: no API can. A change is recorded in the
audit log (actor `cli`) in the same transaction, and reaches the account's access tokens at its
next sign-in or token refresh (within ACCESS_TOKEN_TTL). identity's own admin RPCs check the
table as well, so a revocation stops them at once.

Exit status: 0 done (or nothing to change), 1 no account uses that email, 2 a usage problem or no
DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from typing import Any

import asyncpg

from chatpop_common.datastores import create_pg_pool
from chatpop_common.errors import InvalidArgument
from chatpop_identity import audit
from chatpop_identity.credentials import normalize_email
from chatpop_identity.store import USER

AUDIT_LIMIT_MAX = 100_000


def _operator() -> str:
    """Who ran the command, as far as this machine can tell (the actor is `cli` in any case)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


async def set_admin(pool: asyncpg.Pool, email: str, admin: bool) -> tuple[str, bool] | None:
    """Grant or revoke; (account id, whether anything changed), or None when no account uses `email`."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT id, is_admin FROM identities WHERE email = $1 AND kind = $2 FOR UPDATE", email, USER
        )
        if row is None:
            return None
        account = str(row["id"])
        if row["is_admin"] == admin:
            return account, False
        await conn.execute("UPDATE identities SET is_admin = $2 WHERE id = $1", row["id"], admin)
        await audit.record(
            conn,
            audit.NewEvent(
                kind=audit.ADMIN_GRANTED if admin else audit.ADMIN_REVOKED,
                actor=audit.CLI_ACTOR,
                target=account,
                details={"operator": _operator()},
            ),
        )
    return account, True


async def _grant_or_revoke(pool: asyncpg.Pool, raw_email: str, admin: bool) -> int:
    try:
        email = normalize_email(raw_email)
    except InvalidArgument as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    outcome = await set_admin(pool, email, admin)
    if outcome is None:
        print(f"error: no account uses {email}", file=sys.stderr)
        return 1
    account, changed = outcome
    if not changed:
        print(f"{email} ({account}) {'is already' if admin else 'is not'} an admin; nothing changed")
    elif admin:
        print(f"{email} ({account}) is now an admin, from its next sign-in or token refresh")
    else:
        print(f"{email} ({account}) is no longer an admin")
    return 0


async def _list(pool: asyncpg.Pool) -> int:
    rows = await pool.fetch("SELECT id, email, created_at FROM identities WHERE is_admin ORDER BY email")
    for row in rows:
        admin = {"id": str(row["id"]), "email": row["email"], "created_at": row["created_at"].isoformat()}
        print(json.dumps(admin))
    return 0


async def _audit(pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    try:
        filters = audit.Filters(
            kind=audit.check_kind(args.kind or ""),
            actor=audit.check_text(args.actor or "", "actor"),
            target=audit.check_text(args.target or "", "target"),
            room_id=audit.check_room_id(args.room_id or ""),
        )
    except InvalidArgument as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    log = audit.AuditLog(pool)
    before: int | None = args.before
    left: int = args.limit
    while left > 0:
        page = await log.page(filters, before=before, limit=min(left, audit.PAGE_MAX))
        for event in page.events:
            print(json.dumps(event.as_json()))
        left -= len(page.events)
        if page.next_before is None:
            break
        before = page.next_before
    return 0


def _bounded(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chatpop_identity.admin",
        description="Grant or revoke the admin role, list admins, read the audit log (DATABASE_URL).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, what in (("grant", "make an account an admin"), ("revoke", "take the admin role away")):
        command = commands.add_parser(name, help=what)
        command.add_argument("email")
    commands.add_parser("list", help="the admins, as JSON lines")
    events = commands.add_parser("audit", help="audit events, newest first, as JSON lines")
    events.add_argument("--kind")
    events.add_argument("--actor")
    events.add_argument("--target")
    events.add_argument("--room-id")
    events.add_argument("--before", type=_bounded(1, 2**63 - 1), help="only events with a lower id")
    events.add_argument("--limit", type=_bounded(1, AUDIT_LIMIT_MAX), default=audit.PAGE_DEFAULT)
    return parser


async def run(args: argparse.Namespace, database_url: str) -> int:
    pool = await create_pg_pool(database_url, schema="identity", min_size=1, max_size=1)
    try:
        if args.command in ("grant", "revoke"):
            return await _grant_or_revoke(pool, args.email, args.command == "grant")
        if args.command == "list":
            return await _list(pool)
        return await _audit(pool, args)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    database_url = os.environ.get("DATABASE_URL", "").strip()
    if not database_url:
        print("error: DATABASE_URL is not set", file=sys.stderr)
        return 2
    return asyncio.run(run(args, database_url))


if __name__ == "__main__":
    raise SystemExit(main())

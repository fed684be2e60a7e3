"""The command line: groups and commands (see the package's docstring), dispatch and exit status."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from chatpop_common.admin import identity_ops, messaging_ops
from chatpop_common.admin.calls import CallFailed
from chatpop_common.admin.connection import DEFAULT_TIMEOUT, Settings, UsageError, connected
from chatpop_common.admin.output import emit, rpc_error

Handler = Callable[[Any, argparse.Namespace], Awaitable[None]]

OK, FAILED, USAGE = 0, 1, 2
AUDIT_LIMIT_MAX = 100_000
AUDIT_LIMIT_DEFAULT = 50


class _Parser(argparse.ArgumentParser):
    """Usage problems exit 2 with the message, like argparse, but as the CLI's other errors read."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        emit({"error": {"status": "USAGE", "message": message}}, sys.stderr)
        raise SystemExit(USAGE)


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}")
        return value

    return parse


def _time(text: str) -> Any:
    try:
        return identity_ops.timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None


def _command(group: Any, name: str, handler: Handler, what: str) -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = group.add_parser(name, help=what, description=what)
    command.set_defaults(handler=handler)
    return command


def parser() -> argparse.ArgumentParser:
    root = _Parser(
        prog="python -m chatpop_common.admin",
        description="ChatPop's admin CLI: operations over the services' gRPC APIs, as the `cli` service.",
    )
    root.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds each call may take (default 300)"
    )
    groups = root.add_subparsers(dest="group", required=True, parser_class=_Parser)

    room = groups.add_parser("room", help="a room's hot cache and erasure").add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )
    _command(
        room, "inspect", messaging_ops.room_inspect, "compare the Postgres log with the hot cache"
    ).add_argument("room", help="room id or code")
    _command(
        room, "rebuild-cache", messaging_ops.room_rebuild_cache, "rebuild the hot cache from Postgres"
    ).add_argument("room", help="room id or code")
    erase = _command(room, "erase", messaging_ops.room_erase, "crypto-shred a closed room (cannot be undone)")
    erase.add_argument("room", help="room id or code")
    erase.add_argument("--yes", action="store_true", help="confirm")

    retention = groups.add_parser("retention", help="delete what rooms keep no longer").add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )
    run = _command(
        retention, "run", messaging_ops.retention_run, "apply retention now (a dry run unless --apply)"
    )
    run.add_argument("--room", help="one room (id or code); every room when left out")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="count only (the default)")
    mode.add_argument("--apply", action="store_true", help="really delete")

    keys = groups.add_parser("keys", help="encryption keys").add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )
    _command(keys, "versions", messaging_ops.keys_versions, "key versions in use").add_argument(
        "--room", help="one room's data keys (id or code)"
    )
    _command(
        keys,
        "rotate-master",
        messaging_ops.keys_rotate_master,
        "re-wrap data keys with the current master key",
    )
    _command(
        keys, "rotate-rooms", messaging_ops.keys_rotate_rooms, "new data key versions for new messages"
    ).add_argument("--room", action="append", help="a room (id or code; repeat); every room when left out")
    reencrypt = _command(
        keys, "reencrypt", messaging_ops.keys_reencrypt, "move stored content to the newest data keys"
    )
    reencrypt.add_argument(
        "--room", action="append", help="a room (id or code; repeat); every room when left out"
    )
    reencrypt.add_argument(
        "--limit", type=_bounded(0, 10_000_000), default=0, help="rows per call (0: default)"
    )
    reencrypt.add_argument("--until-done", action="store_true", help="call again until nothing is left")

    admins = groups.add_parser("admins", help="the admin role").add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )
    _command(admins, "grant", identity_ops.admins_grant, "make an account an admin").add_argument("email")
    _command(admins, "revoke", identity_ops.admins_revoke, "take the admin role away").add_argument("email")
    _command(admins, "list", identity_ops.admins_list, "the admins, one a line")

    audit = groups.add_parser("audit", help="audit events, newest first, one a line")
    audit.set_defaults(handler=identity_ops.audit, command="audit")
    audit.add_argument("--kind")
    audit.add_argument("--actor")
    audit.add_argument("--target")
    audit.add_argument("--room", help="room id or code")
    audit.add_argument("--since", type=_time, help="ISO 8601 time (UTC unless it says)")
    audit.add_argument("--until", type=_time, help="ISO 8601 time (UTC unless it says)")
    audit.add_argument("--before", type=_bounded(1, 2**63 - 1), help="only events with a lower id")
    audit.add_argument("--limit", type=_bounded(1, AUDIT_LIMIT_MAX), default=AUDIT_LIMIT_DEFAULT)
    return root


async def _run(settings: Settings, handler: Handler, args: argparse.Namespace) -> None:
    async with connected(settings) as services:
        await handler(services, args)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ if env is None else env, timeout=args.timeout)
        asyncio.run(_run(settings, args.handler, args))
    except UsageError as exc:
        emit({"error": {"status": "USAGE", "message": str(exc)}}, sys.stderr)
        return USAGE
    except CallFailed as exc:
        emit(rpc_error(exc.error, exc.what), sys.stderr)
        return FAILED
    return OK

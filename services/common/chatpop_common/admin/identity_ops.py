"""Commands answered by identity: the admin role and the audit log."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from chatpop.identity.v1 import identity_pb2
from chatpop_common.admin.calls import call, room_id
from chatpop_common.admin.connection import Services
from chatpop_common.admin.output import emit, plain

# Events per call to ListAuditEvents (identity's page limit).
AUDIT_PAGE_MAX = 200


async def admins_grant(services: Services, args: argparse.Namespace) -> None:
    response = await call(
        services, services.identity.GrantAdmin, identity_pb2.GrantAdminRequest(email=args.email), "GrantAdmin"
    )
    emit({"email": args.email.strip(), **plain(response)})


async def admins_revoke(services: Services, args: argparse.Namespace) -> None:
    response = await call(
        services,
        services.identity.RevokeAdmin,
        identity_pb2.RevokeAdminRequest(email=args.email),
        "RevokeAdmin",
    )
    emit({"email": args.email.strip(), **plain(response)})


async def admins_list(services: Services, args: argparse.Namespace) -> None:
    response = await call(
        services, services.identity.ListAdmins, identity_pb2.ListAdminsRequest(), "ListAdmins"
    )
    for admin in response.admins:
        emit(plain(admin))


def timestamp(text: str) -> datetime:
    """An ISO 8601 time; without a zone, UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def audit(services: Services, args: argparse.Namespace) -> None:
    request = identity_pb2.ListAuditEventsRequest(
        kind=args.kind or "",
        actor=args.actor or "",
        target=args.target or "",
        room_id=await room_id(services, args.room) if args.room else "",
        before_id=args.before or 0,
    )
    if args.since is not None:
        request.since.FromDatetime(args.since)
    if args.until is not None:
        request.until.FromDatetime(args.until)
    left: int = args.limit
    while left > 0:
        request.page_size = min(left, AUDIT_PAGE_MAX)
        page = await call(services, services.identity.ListAuditEvents, request, "ListAuditEvents")
        for event in page.events:
            shown = plain(event)
            shown["details"] = json.loads(shown.pop("details_json") or "{}")
            emit(shown)
        left -= len(page.events)
        if not page.next_before_id:
            return
        request.before_id = page.next_before_id

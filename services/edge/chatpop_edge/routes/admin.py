"""Admin resources: the audit log, room takedowns, site-wide bans. The admin claim of the caller's
access token says who is an admin; the services check it again, and every admin action goes into the
audit log (RecordAuditEvents, with the admin's own token)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Path, Query

from chatpop.identity.v1 import identity_pb2
from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.auth import Principal
from chatpop_edge import admin_models, models
from chatpop_edge.backends import Backends, auth_metadata
from chatpop_edge.client_ip import hash_ip, parse_ip
from chatpop_edge.deps import BackendsDep, RequiredToken, SettingsDep
from chatpop_edge.errors import ApiError, error_responses
from chatpop_edge.metrics import WS_CONNECTIONS
from chatpop_edge.realtime.hub import SITE_BANNED
from chatpop_edge.room_events import announce_room_update
from chatpop_edge.routes.rooms import RoomCode

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])

_Text = Annotated[
    str | None, Query(min_length=1, max_length=admin_models.AUDIT_TEXT_MAX_LENGTH, description="Exact match.")
]


@router.get(
    "/audit",
    response_model=admin_models.AuditPage,
    responses=error_responses(401, 403),
    summary="The audit log of security events, newest first (admins)",
    description="""Needs the access token of an admin account. The admin role is granted and revoked only
with the admin CLI (`python -m chatpop_common.admin admins grant|revoke <email>`); a grant reaches
the account's access token at its next sign-in or token refresh. Anyone else gets 403 `forbidden`
(also an admin whose role was revoked, at once, even with a token issued before).

Events are never changed or removed. identity records `identity.login_succeeded`,
`identity.login_failed` (counted per email and network over a window of a minute: `details.failures`,
`first_at`, `last_at`; they appear within about two minutes), `identity.refresh_token_reused` (the
token's family was revoked), `identity.password_reset_requested`, `identity.password_reset_completed`,
`identity.password_changed`, `identity.admin_granted` and `identity.admin_revoked` (actor `cli`);
other services add their own kinds.

Filters are exact matches and combine. Pages go back in time: pass `next_before` as `before` for the
next one.""",
)
async def audit_events(
    backends: BackendsDep,
    token: RequiredToken,
    kind: Annotated[
        str | None,
        Query(
            max_length=admin_models.AUDIT_KIND_MAX_LENGTH,
            pattern=admin_models.AUDIT_KIND_PATTERN,
            description="e.g. `identity.login_failed`.",
        ),
    ] = None,
    actor: _Text = None,
    target: _Text = None,
    room_id: Annotated[
        str | None, Query(max_length=36, pattern=admin_models.UUID_PATTERN, description="A room id.")
    ] = None,
    before: Annotated[
        int | None,
        Query(ge=1, le=admin_models.AUDIT_ID_MAX, description="Only events with a lower id (`next_before`)."),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=admin_models.AUDIT_PAGE_MAX, description="Events per page.")
    ] = admin_models.AUDIT_PAGE_DEFAULT,
) -> admin_models.AuditPage:
    response = await backends.identity.ListAuditEvents(
        identity_pb2.ListAuditEventsRequest(
            kind=kind or "",
            actor=actor or "",
            target=target or "",
            room_id=room_id or "",
            before_id=before or 0,
            page_size=limit,
        ),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return admin_models.AuditPage(
        events=[admin_models.AuditEvent.from_proto(event) for event in response.events],
        next_before=response.next_before_id or None,
    )


# --- every admin action ---------------------------------------------------------------------------


async def require_admin(backends: Backends, token: str) -> Principal:
    """The caller's access token must carry the admin claim (403 `forbidden` otherwise)."""
    principal = await backends.verifier.verify(token)
    if principal.token_type != "access" or not principal.is_admin:
        raise ApiError(403, "forbidden", "Only admins may do this.")
    return principal


async def record_action(
    backends: Backends,
    token: str,
    admin: Principal,
    *,
    kind: str,
    key: str,
    target: str = "",
    room_id: str = "",
    ip_hash: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    """One admin action into the audit log. The action is done already; a failure here fails the
    request so the admin retries it, and the retry (every admin action is idempotent) is recorded
    once, by its idempotency key."""
    await backends.identity.RecordAuditEvents(
        identity_pb2.RecordAuditEventsRequest(
            events=[
                identity_pb2.NewAuditEvent(
                    kind=kind,
                    actor=admin.subject,
                    target=target,
                    room_id=room_id,
                    ip_hash=ip_hash,
                    details_json=json.dumps(details or {}, separators=(",", ":")),
                    idempotency_key=key,
                )
            ]
        ),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )


async def _announce(backends: Backends, room_id: str, token: str) -> None:
    if not await announce_room_update(backends, room_id, token):
        raise ApiError(
            503,
            "service_unavailable",
            "The change is saved, but the room's live clients could not be told yet; try again.",
            retry_after=1,
        )


# --- room takedowns ---------------------------------------------------------------------------------

_TAKEDOWN = """An admin takes a room down: it is closed like the host's close and marked taken down
with the reason, and everyone is disconnected at once: every socket of the room, on every edge, gets
`room_updated` with the room `closed` and `taken_down`, then closes with 4410 `room_taken_down`. From
then on joining, history, the room's info and every room token of it answer 404 `room_taken_down`,
and a socket opened on it closes with 4410. Recorded in the audit log as `admin.room_taken_down`
(target and `room_id`: the room; `details.reason`). Idempotent: a room already taken down is returned
as it is (`changed` false). Admins only (403 `forbidden`)."""


@router.post(
    "/rooms/{code}/takedown",
    response_model=admin_models.TakenDownRoom,
    responses=error_responses(401, 403, 404, 422),
    summary="Take a room down (admins)",
    description=_TAKEDOWN,
)
async def take_down_room(
    code: RoomCode,
    body: admin_models.TakedownRequest,
    backends: BackendsDep,
    settings: SettingsDep,
    token: RequiredToken,
) -> admin_models.TakenDownRoom:
    admin = await require_admin(backends, token)
    response = await backends.rooms.TakeDownRoom(
        rooms_pb2.TakeDownRoomRequest(code=code, reason=body.reason),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    taken = response.taken_down
    room_id = taken.room.id
    backends.standing.forget_room(room_id)
    await _announce(backends, room_id, token)
    await record_action(
        backends,
        token,
        admin,
        kind="admin.room_taken_down",
        key=f"admin:takedown:{room_id}:{taken.taken_down_at.ToNanoseconds()}",
        target=room_id,
        room_id=room_id,
        details={"code": taken.room.code, "reason": taken.reason},
    )
    return admin_models.TakenDownRoom.from_proto(taken, settings.public_url, changed=response.changed)


@router.post(
    "/rooms/{code}/restore",
    response_model=models.Room,
    responses=error_responses(401, 403, 404),
    summary="Lift a room's takedown (admins)",
    description="""The room's content shows again and it can be joined again; it is reopened unless its
host had closed it before the takedown. Recorded as `admin.room_restored`. Idempotent (a room not
taken down is returned as it is). Admins only (403 `forbidden`).""",
)
async def restore_room(
    code: RoomCode, backends: BackendsDep, settings: SettingsDep, token: RequiredToken
) -> models.Room:
    admin = await require_admin(backends, token)
    response = await backends.rooms.RestoreRoom(
        rooms_pb2.RestoreRoomRequest(code=code), metadata=auth_metadata(token), timeout=backends.timeout
    )
    room = response.room
    backends.standing.forget_room(room.id)
    await _announce(backends, room.id, token)
    await record_action(
        backends,
        token,
        admin,
        kind="admin.room_restored",
        key=f"admin:restore:{room.id}:{room.updated_at.ToNanoseconds()}",
        target=room.id,
        room_id=room.id,
        details={"code": room.code},
    )
    return models.Room.from_proto(room, settings.public_url)


@router.get(
    "/rooms/taken-down",
    response_model=admin_models.TakenDownRooms,
    responses=error_responses(401, 403),
    summary="Rooms taken down, most recently first (admins)",
)
async def taken_down_rooms(
    backends: BackendsDep,
    settings: SettingsDep,
    token: RequiredToken,
    limit: Annotated[
        int, Query(ge=1, le=admin_models.TAKEDOWN_LIST_MAX, description="Rooms per answer.")
    ] = admin_models.TAKEDOWN_LIST_DEFAULT,
) -> admin_models.TakenDownRooms:
    await require_admin(backends, token)
    response = await backends.rooms.ListTakenDownRooms(
        rooms_pb2.ListTakenDownRoomsRequest(limit=limit),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return admin_models.TakenDownRooms(
        rooms=[admin_models.TakenDownRoom.from_proto(taken, settings.public_url) for taken in response.rooms]
    )


# --- site-wide bans ---------------------------------------------------------------------------------

# The most revoked participants rooms names per RevokeSiteBanned (its REVOKED_LIST_MAX): the sockets
# of those are closed; everyone's tokens are revoked.
REVOKED_LIST_MAX = 10_000


async def _ban_target(
    body: admin_models.SiteBanRequest, backends: Backends, token: str, ip_key: bytes
) -> tuple[str, str]:
    """(identity id, network hash): exactly one is set."""
    by_participant = body.room_code is not None or body.participant_id is not None
    chosen = [body.identity_id is not None, by_participant, body.ip is not None, body.ip_hash is not None]
    if sum(chosen) != 1 or (by_participant and (body.room_code is None or body.participant_id is None)):
        raise ApiError(
            422,
            "invalid_argument",
            "Name exactly one of: identity_id, room_code with participant_id, ip, ip_hash.",
        )
    if body.identity_id is not None:
        return body.identity_id, ""
    if body.room_code is not None and body.participant_id is not None:
        room_id = await backends.room_id(body.room_code, token)
        found = await backends.rooms.GetParticipant(
            rooms_pb2.GetParticipantRequest(room_id=room_id, participant_id=body.participant_id),
            metadata=auth_metadata(token),
            timeout=backends.timeout,
        )
        return found.participant.subject, ""
    if body.ip is not None:
        address = parse_ip(body.ip)
        if address is None:
            raise ApiError(422, "invalid_argument", "ip is not an IP address.")
        return "", hash_ip(ip_key, str(address))
    return "", body.ip_hash or ""


async def _revoke_and_kick(backends: Backends, token: str, ban: identity_pb2.SiteBan) -> None:
    """The banned identity's (or network's) room tokens stop working in every room, and its live
    sockets on every edge close. Both steps are idempotent, so re-sending the ban finishes the job."""
    metadata = auth_metadata(token)
    revoked = await backends.rooms.RevokeSiteBanned(
        rooms_pb2.RevokeSiteBannedRequest(identity_id=ban.identity_id)
        if ban.identity_id
        else rooms_pb2.RevokeSiteBannedRequest(client_ip_hash=ban.client_ip_hash),
        metadata=metadata,
        timeout=backends.timeout,
    )
    targets = [
        messaging_pb2.KickTarget(room_id=revoked_one.room_id, participant_id=revoked_one.participant_id)
        for revoked_one in revoked.participants
    ]
    for target in targets:
        backends.standing.forget(target.room_id, target.participant_id)
    if not targets:
        return
    try:
        await backends.messaging.KickParticipants(
            messaging_pb2.KickParticipantsRequest(targets=targets, code=SITE_BANNED),
            metadata=metadata,
            timeout=backends.timeout,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
            raise
        raise ApiError(
            503,
            "service_unavailable",
            "The ban is in force, but the banned person's open chats could not all be closed yet;"
            " send the ban again.",
            retry_after=1,
        ) from exc


@router.post(
    "/site-bans",
    response_model=admin_models.SiteBan,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Ban an identity or a network from the whole site (admins)",
    description=f"""Name exactly one target: `identity_id`, a participant (`room_code` and
`participant_id`: the identity behind them), a client `ip` (hashed at once with the same key as every
client IP, never stored) or its `ip_hash`.

The ban takes effect at once, in every room:
- A banned identity is signed out everywhere (its refresh tokens are revoked): signing in, refreshing
  and joining any room answer 403 `site_banned`, and its access token runs out within minutes.
- From a banned network, new anonymous sessions, registering, signing in with a password and joins
  answer 403 `site_banned`.
- The room tokens of the identity's participants (for a network: of everyone who joined a room from
  it) are revoked in every room: REST calls with them answer 401 `token_revoked`, and joining again
  answers 403 `site_banned`.
- Their open WebSockets, on every edge, get an `error` frame `site_banned` and close with 4403
  `site_banned` within moments. At most {REVOKED_LIST_MAX:,} participants are disconnected per
  request (those who joined most recently); the tokens of any beyond are revoked all the same.

Recorded in the audit log as `admin.site_ban_created`. Idempotent: banning what is banned returns that
ban (`changed` false) and revokes and disconnects again. 503 `service_unavailable` when the ban is in
force but its sockets could not all be closed yet: send the same request again to finish. Admins only
(403 `forbidden`).""",
)
async def ban_site(
    body: admin_models.SiteBanRequest, backends: BackendsDep, settings: SettingsDep, token: RequiredToken
) -> admin_models.SiteBan:
    admin = await require_admin(backends, token)
    identity_id, ip_hash = await _ban_target(body, backends, token, settings.ip_hash_secret)
    response = await backends.identity.BanSite(
        identity_pb2.BanSiteRequest(identity_id=identity_id, client_ip_hash=ip_hash, reason=body.reason),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    ban = response.ban
    await record_action(
        backends,
        token,
        admin,
        kind="admin.site_ban_created",
        key=f"admin:site-ban:{ban.id}",
        target=ban.identity_id,
        ip_hash=ban.client_ip_hash,
        details={"ban_id": ban.id, "reason": ban.reason},
    )
    await _revoke_and_kick(backends, token, ban)
    return admin_models.SiteBan.from_proto(ban, changed=response.changed)


@router.delete(
    "/site-bans/{ban_id}",
    response_model=admin_models.SiteBan,
    responses=error_responses(401, 403, 404),
    summary="Lift a site-wide ban (admins)",
    description="Recorded as `admin.site_ban_lifted`. Idempotent. Admins only (403 `forbidden`).",
)
async def lift_site_ban(
    ban_id: Annotated[
        str, Path(max_length=36, pattern=admin_models.UUID_PATTERN, description="The ban's id.")
    ],
    backends: BackendsDep,
    token: RequiredToken,
) -> admin_models.SiteBan:
    admin = await require_admin(backends, token)
    response = await backends.identity.LiftSiteBan(
        identity_pb2.LiftSiteBanRequest(ban_id=ban_id),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    ban = response.ban
    await record_action(
        backends,
        token,
        admin,
        kind="admin.site_ban_lifted",
        key=f"admin:site-unban:{ban.id}",
        target=ban.identity_id,
        ip_hash=ban.client_ip_hash,
        details={"ban_id": ban.id},
    )
    return admin_models.SiteBan.from_proto(ban, changed=response.changed)


@router.get(
    "/site-bans",
    response_model=admin_models.SiteBans,
    responses=error_responses(401, 403),
    summary="Site-wide bans in force, newest first (admins)",
)
async def site_bans(
    backends: BackendsDep,
    token: RequiredToken,
    limit: Annotated[
        int, Query(ge=1, le=admin_models.SITE_BAN_LIST_MAX, description="Bans per answer.")
    ] = admin_models.SITE_BAN_LIST_DEFAULT,
) -> admin_models.SiteBans:
    await require_admin(backends, token)
    response = await backends.identity.ListSiteBans(
        identity_pb2.ListSiteBansRequest(limit=limit), metadata=auth_metadata(token), timeout=backends.timeout
    )
    return admin_models.SiteBans(bans=[admin_models.SiteBan.from_proto(ban) for ban in response.bans])


# --- stats ----------------------------------------------------------------------------------------------


def _open_sockets() -> int:
    return int(sum(sample.value for metric in WS_CONNECTIONS.collect() for sample in metric.samples))


@router.get(
    "/stats",
    response_model=admin_models.Stats,
    responses=error_responses(401, 403),
    summary="Platform counts (admins)",
    description="""Rooms (total, open, created today), WebSockets open on the edge process that answered
(each edge knows its own; add them up across edges from the `chatpop_ws_connections` metric), messages
sent on each of the last 7 UTC days, open reports and audit events recorded today. Each count also
has a gRPC call for internal teams (RoomsService.GetRoomStats, MessagingService.GetMessagingStats,
IdentityService.GetAuditStats; admin token required). Admins only (403 `forbidden`).""",
)
async def stats(backends: BackendsDep, token: RequiredToken) -> admin_models.Stats:
    await require_admin(backends, token)
    metadata = auth_metadata(token)
    rooms, messaging, audit = await asyncio.gather(
        backends.rooms.GetRoomStats(
            rooms_pb2.GetRoomStatsRequest(), metadata=metadata, timeout=backends.timeout
        ),
        backends.messaging.GetMessagingStats(
            messaging_pb2.GetMessagingStatsRequest(), metadata=metadata, timeout=backends.timeout
        ),
        backends.identity.GetAuditStats(
            identity_pb2.GetAuditStatsRequest(), metadata=metadata, timeout=backends.timeout
        ),
    )
    return admin_models.Stats(
        rooms=admin_models.RoomCounts(total=rooms.total, open=rooms.open, created_today=rooms.created_today),
        open_sockets=_open_sockets(),
        messages_per_day=[
            admin_models.DayCount(day=day.day, messages=day.count) for day in messaging.messages_per_day
        ],
        open_reports=messaging.open_reports,
        audit_events_today=audit.events_today,
    )

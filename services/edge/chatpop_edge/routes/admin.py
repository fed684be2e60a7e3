"""Admin resources: the audit log. identity decides who is an admin; the edge passes the token on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from chatpop.identity.v1 import identity_pb2
from chatpop_edge import admin_models
from chatpop_edge.backends import auth_metadata
from chatpop_edge.deps import BackendsDep, RequiredToken
from chatpop_edge.errors import error_responses

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
with `python -m chatpop_identity.admin grant|revoke <email>` on identity's database; a grant reaches
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

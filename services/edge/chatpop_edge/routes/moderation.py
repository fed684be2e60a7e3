"""What the room's host shows above its messages (pins, the sticky message, taking paid pins down) and
reports of messages.

Each change is an entry of the room's log (messaging): every live socket gets it as a frame with its
own seq, a client that resumes after that seq gets it too, and the newest history page carries the
room's board (host pins, paid pins and the sticky message) as of its `last_seq`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from chatpop.messaging.v1 import messaging_pb2
from chatpop_edge import models
from chatpop_edge.backends import auth_metadata
from chatpop_edge.deps import BackendsDep, RequiredToken
from chatpop_edge.errors import error_responses
from chatpop_edge.routes.bans import UUID_PATTERN
from chatpop_edge.routes.room_changes import MessageSeq
from chatpop_edge.routes.rooms import BeforeSeq, PageLimit, RoomCode, room_principal

router = APIRouter(prefix="/api/v1/rooms", tags=["moderation"])

PaidPinId = Annotated[
    str,
    Path(
        min_length=36, max_length=36, pattern=UUID_PATTERN, description="The paid pin's id (its order's id)."
    ),
]


async def _set_pin(code: str, seq: int, pinned: bool, backends: BackendsDep, token: str) -> models.PinsState:
    room_id, _principal = await room_principal(backends, code, token)
    result = await backends.messaging.SetPin(
        messaging_pb2.SetPinRequest(room_id=room_id, target_seq=seq, pinned=pinned),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.PinsState(
        target_seq=seq,
        pinned_seqs=list(result.pinned_seqs),
        pins_state_seq=result.pins_state_seq,
        changed=result.changed,
    )


@router.put(
    "/{code}/pins/{seq}",
    response_model=models.PinsState,
    responses=error_responses(401, 403, 404, 409),
    summary="Pin a message above everything (the host's room token); idempotent",
)
async def pin_message(
    code: RoomCode, seq: MessageSeq, backends: BackendsDep, token: RequiredToken
) -> models.PinsState:
    return await _set_pin(code, seq, True, backends, token)


@router.delete(
    "/{code}/pins/{seq}",
    response_model=models.PinsState,
    responses=error_responses(401, 403, 404, 409),
    summary="Unpin a message (the host's room token); unpinning what is not pinned changes nothing",
)
async def unpin_message(
    code: RoomCode, seq: MessageSeq, backends: BackendsDep, token: RequiredToken
) -> models.PinsState:
    return await _set_pin(code, seq, False, backends, token)


@router.delete(
    "/{code}/paid-pins/{pin_id}",
    response_model=models.PaidPinRemoval,
    responses=error_responses(401, 403, 404),
    summary="Take a paid pin down before its time (the host's room token); the payment is not refunded",
    description="Every socket of the room gets a `paid_pin_removed` frame with the room's live paid pins. "
    "A pin that ran out or came down already changes nothing (`changed: false`). 403 `forbidden` for "
    "anyone but the host, 404 `paid_pin_not_found`.",
)
async def remove_paid_pin(
    code: RoomCode, pin_id: PaidPinId, backends: BackendsDep, token: RequiredToken
) -> models.PaidPinRemoval:
    room_id, _principal = await room_principal(backends, code, token)
    result = await backends.messaging.RemovePaidPin(
        messaging_pb2.RemovePaidPinRequest(room_id=room_id, pin_id=pin_id),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.PaidPinRemoval(
        pin_id=pin_id, seq=result.entry.seq if result.changed else None, changed=result.changed
    )


async def _set_sticky(code: str, text: str, backends: BackendsDep, token: str) -> models.StickyState:
    room_id, _principal = await room_principal(backends, code, token)
    result = await backends.messaging.SetSticky(
        messaging_pb2.SetStickyRequest(room_id=room_id, text=text),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.StickyState(text=result.text, sticky_seq=result.sticky_seq, changed=result.changed)


@router.put(
    "/{code}/sticky",
    response_model=models.StickyState,
    responses=error_responses(401, 403, 404, 409, 422),
    summary="Set the room's sticky broadcast message (the host's room token); empty text clears it",
)
async def set_sticky(
    code: RoomCode, body: models.SetStickyRequest, backends: BackendsDep, token: RequiredToken
) -> models.StickyState:
    return await _set_sticky(code, body.text, backends, token)


@router.delete(
    "/{code}/sticky",
    response_model=models.StickyState,
    responses=error_responses(401, 403, 404, 409),
    summary="Clear the room's sticky broadcast message (the host's room token)",
)
async def clear_sticky(code: RoomCode, backends: BackendsDep, token: RequiredToken) -> models.StickyState:
    return await _set_sticky(code, "", backends, token)


@router.post(
    "/{code}/messages/{seq}/reports",
    response_model=models.ReportReceipt,
    responses=error_responses(401, 403, 404, 409, 429),
    summary="Report a message (room token); once per person and message, a second report changes nothing",
)
async def report_message(
    code: RoomCode, seq: MessageSeq, body: models.ReportRequest, backends: BackendsDep, token: RequiredToken
) -> models.ReportReceipt:
    room_id, _principal = await room_principal(backends, code, token)
    result = await backends.messaging.ReportMessage(
        messaging_pb2.ReportMessageRequest(
            room_id=room_id, target_seq=seq, reason=models.REPORT_REASONS[body.reason], text=body.text
        ),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.ReportReceipt(target_seq=seq, created=result.created, hidden=result.hidden)


@router.get(
    "/{code}/reports",
    response_model=models.ReportQueue,
    responses=error_responses(401, 403, 404),
    summary="Reported messages awaiting review, with who reported them (the host's room token)",
    description="""Newest reported message first, at most `limit` (1-100, 50 by default) a page. When
`has_more` is true, older ones wait: ask again with `before_seq` set to the last item's seq (1 to
2^53-1), and so on until `has_more` is false.""",
)
async def list_reports(
    code: RoomCode,
    backends: BackendsDep,
    token: RequiredToken,
    before_seq: BeforeSeq = None,
    limit: PageLimit = 50,
) -> models.ReportQueue:
    room_id, _principal = await room_principal(backends, code, token)
    queue = await backends.messaging.ListReports(
        messaging_pb2.ListReportsRequest(room_id=room_id, before_seq=before_seq or 0, limit=limit),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.ReportQueue(
        items=[models.ReportedMessage.from_proto(item) for item in queue.items], has_more=queue.has_more
    )


@router.post(
    "/{code}/reports/{seq}/resolution",
    response_model=models.ReportsResolved,
    responses=error_responses(401, 403, 404, 409),
    summary="Resolve a reported message: restore, delete or dismiss (the host's room token)",
)
async def resolve_reports(
    code: RoomCode,
    seq: MessageSeq,
    body: models.ResolveReportsRequest,
    backends: BackendsDep,
    token: RequiredToken,
) -> models.ReportsResolved:
    room_id, _principal = await room_principal(backends, code, token)
    result = await backends.messaging.ResolveReports(
        messaging_pb2.ResolveReportsRequest(
            room_id=room_id, target_seq=seq, resolution=models.REPORT_ACTIONS[body.action]
        ),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.ReportsResolved(
        target_seq=seq, action=body.action, closed=result.closed, changed=len(result.entries) > 0
    )

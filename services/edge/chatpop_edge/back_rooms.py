"""What the edge does around a room's Back Room besides asking rooms: a host turns it on only when
they can receive money (payments says so), and a holder who lost their seat is disconnected from it.

Seats are sold for money, so switching a Back Room on is refused with 409 `payments_not_enabled` until
the host's payout account can take payments (anonymous hosts are refused by rooms itself, 403
`anonymous_host`). A seat removed at rooms revokes the holder's Back Room tokens at once; their open
Back Room sockets, on every edge process, close through messaging's kick (4403 `seat_removed`).
"""

from __future__ import annotations

import grpc

from chatpop.messaging.v1 import messaging_pb2
from chatpop.payments.v1 import payments_pb2
from chatpop_edge.backends import Backends, auth_metadata
from chatpop_edge.errors import ApiError
from chatpop_edge.models import BackRoomSettings
from chatpop_edge.realtime.hub import SEAT_REMOVED

ANONYMOUS_HOST = "anonymous_host"


def _payments_not_enabled() -> ApiError:
    return ApiError(
        409,
        "payments_not_enabled",
        "A Back Room sells seats: set up payouts first, so that you can receive the money.",
    )


def _switches_on(settings: BackRoomSettings | None) -> bool:
    return settings is not None and settings.enabled is True


async def require_payouts_for_new_room(
    backends: Backends, token: str, settings: BackRoomSettings | None
) -> None:
    """Before creating a room with its Back Room on: the caller's own payout account must take payments."""
    if not _switches_on(settings):
        return
    principal = await backends.verifier.verify(token)
    if principal.token_type != "access" or principal.kind == "anonymous":
        # rooms refuses these with its own precise error.
        return
    found = await backends.payments.GetPayoutAccount(
        payments_pb2.GetPayoutAccountRequest(), metadata=auth_metadata(token), timeout=backends.timeout
    )
    if not (found.HasField("account") and found.account.can_receive):
        raise _payments_not_enabled()


async def require_payouts_for_room(
    backends: Backends, room_id: str, settings: BackRoomSettings | None
) -> None:
    """Before switching an existing room's Back Room on: its host must be able to receive money."""
    if not _switches_on(settings):
        return
    sales = await backends.payments.GetRoomSales(
        payments_pb2.GetRoomSalesRequest(room_id=room_id), timeout=backends.timeout
    )
    if not sales.enabled and sales.disabled_reason != ANONYMOUS_HOST:
        raise _payments_not_enabled()


async def disconnect_from_back_room(
    backends: Backends, back_room_id: str, participant_id: str, token: str
) -> None:
    """Close the former holder's Back Room sockets on every edge (with the host's token). Idempotent:
    a 503 asks the caller to send the removal again, which finishes it."""
    if not back_room_id or not participant_id:
        return
    backends.standing.forget(back_room_id, participant_id)
    try:
        await backends.messaging.KickParticipants(
            messaging_pb2.KickParticipantsRequest(
                targets=[messaging_pb2.KickTarget(room_id=back_room_id, participant_id=participant_id)],
                code=SEAT_REMOVED,
            ),
            metadata=auth_metadata(token),
            timeout=backends.timeout,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
            raise
        raise ApiError(
            503,
            "service_unavailable",
            "The seat is removed, but the holder's open Back Room could not be closed yet; send it again.",
            retry_after=1,
        ) from exc

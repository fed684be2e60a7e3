"""GetRoomSales: whether a room sells paid pins and tips now, and at what prices.

A room sells when it is open and its host's payout account can receive money in the mode payments
run in. Why not, when not: `room_closed`; `anonymous_host` (the host is an anonymous session, which
can never hold a payout account; told when the caller is that host, the only one who can tell);
`host_not_onboarded` otherwise.
"""

from __future__ import annotations

import uuid

import asyncpg

from chatpop.payments.v1 import payments_pb2
from chatpop.rooms.v1 import rooms_pb2_grpc
from chatpop_common import pricing
from chatpop_common.auth import Principal
from chatpop_common.service_auth import ServiceCredentials
from chatpop_payments import payouts
from chatpop_payments.orders import parse_id
from chatpop_payments.purchases import lookup_room, room_is_open

PIN_TIERS = [
    payments_pb2.PinTier(amount_cents=cents, minutes=minutes) for cents, minutes in pricing.PIN_TIERS
]


def _caller_is_anonymous_host(principal: Principal | None, room_id: str, host_id: str) -> bool:
    if principal is None or principal.kind != "anonymous" or principal.subject != host_id:
        return False
    return principal.token_type == "access" or (
        principal.token_type == "room" and principal.room_id == room_id
    )


class Sales:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        rooms: rooms_pb2_grpc.RoomsServiceStub,
        credentials: ServiceCredentials,
        test_mode: bool,
        currency: str,
        tip_presets_cents: tuple[int, ...],
        tip_min_cents: int,
        tip_max_cents: int,
    ) -> None:
        self._pool = pool
        self._rooms = rooms
        self._credentials = credentials
        self._test_mode = test_mode
        self._currency = currency
        self._presets = tip_presets_cents
        self._tip_min = tip_min_cents
        self._tip_max = tip_max_cents

    async def of_room(
        self, room_id_text: str, principal: Principal | None
    ) -> payments_pb2.GetRoomSalesResponse:
        room_id = parse_id(room_id_text, "room_id")
        room = await lookup_room(self._rooms, self._credentials, room_id)
        reason = ""
        if not room_is_open(room):
            reason = "room_closed"
        else:
            host = _host(room.host_id)
            account = await payouts.receiving(self._pool, host, test_mode=self._test_mode) if host else None
            if account is None:
                reason = (
                    "anonymous_host"
                    if _caller_is_anonymous_host(principal, str(room_id), room.host_id)
                    else "host_not_onboarded"
                )
        return payments_pb2.GetRoomSalesResponse(
            enabled=not reason,
            disabled_reason=reason,
            currency=self._currency,
            pin_tiers=PIN_TIERS,
            tip_presets_cents=list(self._presets),
            tip_min_cents=self._tip_min,
            tip_max_cents=self._tip_max,
            mode=payments_pb2.MODE_TEST if self._test_mode else payments_pb2.MODE_STRIPE,
        )


def _host(host_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(host_id)
    except ValueError:
        return None

"""GetEarnings: what a host earned, per room and overall, read from the ledger: paid pins (with
their extensions), tips and Back Room seats apart, and their total.

For each group of orders: gross is what buyers paid less what was refunded, the fee is the platform's
fees less those given back, net is the host's share (gross less fee), refunded is what went back to
buyers, and count is the orders paid and not refunded. Only orders of the mode payments run in now
(Stripe or test) and of its currency are counted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg

from chatpop.payments.v1 import payments_pb2
from chatpop_payments.states import Kind

_QUERY = """
SELECT o.room_id, o.kind,
       coalesce(sum(e.amount_cents) FILTER (WHERE e.kind = 'charge'), 0) AS charged,
       coalesce(sum(e.amount_cents) FILTER (WHERE e.kind = 'refund'), 0) AS refunded,
       coalesce(sum(e.amount_cents) FILTER (WHERE e.kind = 'fee'), 0) AS fees,
       coalesce(sum(e.amount_cents) FILTER (WHERE e.kind = 'fee_refund'), 0) AS fees_back,
       count(DISTINCT o.id) FILTER (WHERE e.kind = 'charge') AS charges,
       count(DISTINCT o.id) FILTER (WHERE e.kind = 'refund') AS refunds
FROM ledger_entries e JOIN orders o ON o.id = e.order_id
WHERE o.host_identity_id = $1 AND o.test_mode = $2 AND o.currency = $3
GROUP BY o.room_id, o.kind
"""


@dataclass
class Sums:
    gross: int = 0
    fee: int = 0
    refunded: int = 0
    count: int = 0

    def add(self, other: Sums) -> None:
        self.gross += other.gross
        self.fee += other.fee
        self.refunded += other.refunded
        self.count += other.count

    def to_proto(self) -> payments_pb2.Amounts:
        return payments_pb2.Amounts(
            gross_cents=self.gross,
            fee_cents=self.fee,
            net_cents=self.gross - self.fee,
            refunded_cents=self.refunded,
            count=self.count,
        )


@dataclass
class Totals:
    pins: Sums = field(default_factory=Sums)
    tips: Sums = field(default_factory=Sums)
    seats: Sums = field(default_factory=Sums)

    def of_kind(self, kind: str) -> Sums:
        if kind == Kind.TIP:
            return self.tips
        if kind == Kind.SEAT:
            return self.seats
        return self.pins

    @property
    def total(self) -> Sums:
        every = Sums()
        for sums in (self.pins, self.tips, self.seats):
            every.add(sums)
        return every


async def earnings(
    pool: asyncpg.Pool, host: uuid.UUID, *, test_mode: bool, currency: str
) -> payments_pb2.GetEarningsResponse:
    rooms: dict[uuid.UUID, Totals] = {}
    overall = Totals()
    for row in await pool.fetch(_QUERY, host, test_mode, currency):
        sums = Sums(
            gross=int(row["charged"]) - int(row["refunded"]),
            fee=int(row["fees"]) - int(row["fees_back"]),
            refunded=int(row["refunded"]),
            count=int(row["charges"]) - int(row["refunds"]),
        )
        room = rooms.setdefault(row["room_id"], Totals())
        for totals in (room, overall):
            totals.of_kind(row["kind"]).add(sums)
    ranked = sorted(
        rooms.items(), key=lambda item: (-(item[1].total.gross - item[1].total.fee), str(item[0]))
    )
    return payments_pb2.GetEarningsResponse(
        currency=currency,
        pins=overall.pins.to_proto(),
        tips=overall.tips.to_proto(),
        seats=overall.seats.to_proto(),
        total=overall.total.to_proto(),
        rooms=[
            payments_pb2.RoomEarnings(
                room_id=str(room_id),
                pins=totals.pins.to_proto(),
                tips=totals.tips.to_proto(),
                seats=totals.seats.to_proto(),
                total=totals.total.to_proto(),
            )
            for room_id, totals in ranked
        ],
    )

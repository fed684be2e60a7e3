"""Counts for admins: messages per UTC day over the last week, and reports still open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.auth import require_principal
from chatpop_common.errors import PermissionDenied

DAYS = 7
# Entries of kind 1 are messages; the others are changes (reactions, deletions, ...).
_PER_DAY = """
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM messages
    WHERE kind = 1 AND created_at >= $1 GROUP BY day
"""
_OPEN_REPORTS = "SELECT count(*) FROM reports WHERE closed_at IS NULL"


class MessagingStats:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def answer(self) -> messaging_pb2.GetMessagingStatsResponse:
        principal = require_principal()
        if principal.token_type != "access" or not principal.is_admin:
            raise PermissionDenied("Only admins may do this.", code="forbidden")
        today = datetime.now(UTC).date()
        first = today - timedelta(days=DAYS - 1)
        since = datetime(first.year, first.month, first.day, tzinfo=UTC)
        counts = {row["day"]: int(row["n"]) for row in await self._pool.fetch(_PER_DAY, since)}
        open_reports = int(await self._pool.fetchval(_OPEN_REPORTS) or 0)
        days = [first + timedelta(days=offset) for offset in range(DAYS)]
        return messaging_pb2.GetMessagingStatsResponse(
            messages_per_day=[
                messaging_pb2.DailyCount(day=day.isoformat(), count=counts.get(day, 0)) for day in days
            ],
            open_reports=open_reports,
        )

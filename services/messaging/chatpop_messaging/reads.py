"""Read positions and room activity: what "my rooms" shows (newest message, unread count).

A participant's read position only moves forward and never past the room's last seq. Unread counts
are of messages from others after it, counted up to UNREAD_CAP so a busy room costs no more than that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

UNREAD_CAP = 100
MAX_ACTIVITY_ROOMS = 200

_MARK = """
INSERT INTO read_positions AS p (room_id, participant_id, read_seq)
VALUES ($1, $2, LEAST($3, coalesce((SELECT last_seq FROM room_counters WHERE room_id = $1), 0)))
ON CONFLICT (room_id, participant_id) DO UPDATE
    SET read_seq = GREATEST(p.read_seq, EXCLUDED.read_seq),
        updated_at = CASE WHEN EXCLUDED.read_seq > p.read_seq THEN now() ELSE p.updated_at END
RETURNING read_seq
"""

# One round trip for every room asked about; each unread count stops at the cap.
_ACTIVITY = f"""
WITH refs AS (
    SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(room_id, participant_id, ord)
)
SELECT r.room_id,
       r.participant_id,
       coalesce(c.last_seq, 0) AS last_seq,
       coalesce(p.read_seq, 0) AS read_seq,
       (SELECT m.created_at FROM messages m WHERE m.room_id = r.room_id AND m.seq = c.last_seq)
           AS last_message_at,
       (SELECT count(*) FROM (
            SELECT 1 FROM messages m
            WHERE m.room_id = r.room_id AND m.seq > coalesce(p.read_seq, 0)
              AND m.kind = 1 AND m.deleted_at IS NULL
              AND m.sender_participant_id <> r.participant_id
            LIMIT {UNREAD_CAP}
        ) AS unread_rows) AS unread
FROM refs r
LEFT JOIN room_counters c ON c.room_id = r.room_id
LEFT JOIN read_positions p ON p.room_id = r.room_id AND p.participant_id = r.participant_id
ORDER BY r.ord
"""  # noqa: S608 - the cap is a constant


@dataclass(frozen=True, slots=True)
class Activity:
    room_id: str
    participant_id: str
    last_seq: int
    last_message_at: datetime | None
    read_seq: int
    unread: int


class ReadPositions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def mark(self, room_id: str, participant_id: str, seq: int) -> int:
        """Move the participant's read position forward to `seq`; returns where it stands now."""
        value = await self._pool.fetchval(_MARK, room_id, participant_id, seq)
        return int(value)

    async def activity(self, refs: Sequence[tuple[str, str]]) -> list[Activity]:
        if not refs:
            return []
        rows = await self._pool.fetch(
            _ACTIVITY, [room_id for room_id, _ in refs], [participant_id for _, participant_id in refs]
        )
        return [
            Activity(
                room_id=row["room_id"],
                participant_id=row["participant_id"],
                last_seq=int(row["last_seq"]),
                last_message_at=row["last_message_at"],
                read_seq=int(row["read_seq"]),
                unread=int(row["unread"]),
            )
            for row in rows
        ]

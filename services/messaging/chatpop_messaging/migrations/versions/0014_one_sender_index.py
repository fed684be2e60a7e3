"""The sender's messages found through the (room, sender, client_msg_id) key alone.

`messages_sender_idx` (room_id, sender_participant_id, seq) from 0012 let the planner pick it for
the send path's duplicate check (`NOT EXISTS … WHERE room_id AND sender_participant_id AND
client_msg_id`) whenever a partition had not been analysed yet — a new database, or a partition
in its first minutes of traffic. That plan reads every earlier message of the sender in the room
and filters on client_msg_id, so each send cost grew with the sender's history (67 ms for a group
of 11 after 33,000 messages of one sender, 0.4 ms through the unique key). The unique key
`messages_room_sender_client_msg_key` leads with the same two columns, so the queries that look a
participant's messages up (forgetting an account: rename, erase) use its prefix; with one index
on those columns the duplicate check takes the unique key whatever the statistics say, and every
message writes one index fewer.

Revision ID: 0014
Revises: 0013
Create Date: 2027-04-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MODULUS = 16


def upgrade() -> None:
    # Dropping the partitioned index drops each partition's index with it.
    op.execute("DROP INDEX messages_sender_idx")


def downgrade() -> None:
    # Built per partition under the `<declared>_pNN` names 0013 gives partition indexes, then attached.
    op.execute("CREATE INDEX messages_sender_idx ON ONLY messages (room_id, sender_participant_id, seq)")
    for remainder in range(MODULUS):
        name = f"messages_sender_idx_p{remainder:02d}"
        op.execute(f"CREATE INDEX {name} ON messages_p{remainder:02d} (room_id, sender_participant_id, seq)")
        op.execute(f"ALTER INDEX messages_sender_idx ATTACH PARTITION {name}")

"""Back Rooms: a main room's paid seats and the Back Room, a room of its own.

A Back Room is a row of `rooms` with `parent_room_id` naming its main room (at most one per main
room); the main room names it back in `back_room_id` and keeps the settings and the count of seats
taken, which GrantSeat raises with a conditional update so seats are never oversold. `seats` holds
every seat ever granted (one active seat per participant); `seat_orders` records the first outcome
of each paid order, so fulfilment may ask again and get the same answer.

Revision ID: 0008
Revises: 0007
Create Date: 2027-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE rooms
            ADD COLUMN parent_room_id uuid REFERENCES rooms (id) ON DELETE CASCADE,
            ADD COLUMN back_room_id uuid REFERENCES rooms (id) ON DELETE SET NULL,
            ADD COLUMN back_room_enabled boolean NOT NULL DEFAULT false,
            ADD COLUMN back_room_seat_price_cents bigint
                CONSTRAINT rooms_back_room_price CHECK (back_room_seat_price_cents BETWEEN 50 AND 100000),
            ADD COLUMN back_room_seat_limit integer
                CONSTRAINT rooms_back_room_limit CHECK (back_room_seat_limit BETWEEN 1 AND 1000),
            ADD COLUMN back_room_seats_taken integer NOT NULL DEFAULT 0,
            ADD CONSTRAINT rooms_back_room_seats CHECK (
                back_room_seats_taken >= 0
                AND back_room_seats_taken <= coalesce(back_room_seat_limit, 0)
            ),
            ADD CONSTRAINT rooms_back_room_settings CHECK (
                NOT back_room_enabled
                OR (back_room_seat_price_cents IS NOT NULL AND back_room_seat_limit IS NOT NULL)
            )
        """
    )
    op.execute("CREATE UNIQUE INDEX rooms_parent_room_id_key ON rooms (parent_room_id)")
    op.execute(
        """
        CREATE TABLE seats (
            id uuid PRIMARY KEY,
            -- The main room, and the holder's participant there.
            room_id uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
            participant_id uuid NOT NULL REFERENCES participants (id) ON DELETE CASCADE,
            subject text NOT NULL,
            order_id text NOT NULL CONSTRAINT seats_order_id_key UNIQUE,
            price_cents bigint NOT NULL CONSTRAINT seats_price CHECK (price_cents >= 0),
            granted_at timestamptz NOT NULL DEFAULT now(),
            removed_at timestamptz,
            -- `host` (RemoveSeat) or `banned` (a ban in the main room).
            removed_reason text CONSTRAINT seats_removed_reason CHECK (removed_reason IN ('host', 'banned')),
            refund boolean NOT NULL DEFAULT false,
            CONSTRAINT seats_removed CHECK ((removed_at IS NULL) = (removed_reason IS NULL))
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX seats_active_participant_key ON seats (room_id, participant_id)"
        " WHERE removed_at IS NULL"
    )
    op.execute("CREATE INDEX seats_active_subject_idx ON seats (room_id, subject) WHERE removed_at IS NULL")
    op.execute(
        """
        CREATE TABLE seat_orders (
            order_id text PRIMARY KEY,
            room_id uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
            participant_id uuid NOT NULL,
            outcome text NOT NULL
                CONSTRAINT seat_orders_outcome CHECK (
                    outcome IN ('granted', 'full', 'already_holder', 'banned', 'unavailable')
                ),
            seat_id uuid REFERENCES seats (id) ON DELETE SET NULL,
            decided_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE seat_orders")
    op.execute("DROP TABLE seats")
    op.execute("DROP INDEX rooms_parent_room_id_key")
    op.execute(
        """
        ALTER TABLE rooms
            DROP CONSTRAINT rooms_back_room_settings,
            DROP CONSTRAINT rooms_back_room_seats,
            DROP COLUMN back_room_seats_taken,
            DROP COLUMN back_room_seat_limit,
            DROP COLUMN back_room_seat_price_cents,
            DROP COLUMN back_room_enabled,
            DROP COLUMN back_room_id,
            DROP COLUMN parent_room_id
        """
    )

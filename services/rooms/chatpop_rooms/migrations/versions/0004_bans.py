"""Bans: who the host banned from a room, how far the ban reaches, and when it was lifted.

A ban keeps the banned identity and the (hashed) address it joined from, so JoinRoom can refuse that
identity under any name and, per tier, new anonymous sessions or anyone from that network. Lifting a
ban keeps its row (lifted_at) for the record.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-20
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE bans (
            id uuid PRIMARY KEY,
            room_id uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
            participant_id uuid NOT NULL REFERENCES participants (id) ON DELETE CASCADE,
            -- The banned identity (anonymous session or account).
            subject text NOT NULL,
            -- HMAC of the client IP the participant joined from (made by the edge); never the raw address.
            client_ip_hash text CONSTRAINT bans_client_ip_hash_length CHECK (char_length(client_ip_hash) <= 128),
            tier text NOT NULL CONSTRAINT bans_tier CHECK (tier IN ('session', 'device', 'ip')),
            reason text NOT NULL DEFAULT '' CONSTRAINT bans_reason_length CHECK (char_length(reason) <= 500),
            banned_by text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            lifted_at timestamptz,
            lifted_by text
        )
        """
    )
    # One ban in force per participant.
    op.execute(
        "CREATE UNIQUE INDEX bans_room_participant_active_key ON bans (room_id, participant_id)"
        " WHERE lifted_at IS NULL"
    )
    op.execute("CREATE INDEX bans_room_subject_active_idx ON bans (room_id, subject) WHERE lifted_at IS NULL")
    op.execute(
        "CREATE INDEX bans_room_ip_active_idx ON bans (room_id, client_ip_hash)"
        " WHERE lifted_at IS NULL AND client_ip_hash IS NOT NULL"
    )
    op.execute("CREATE INDEX bans_room_created_idx ON bans (room_id, created_at DESC)")


def downgrade() -> None:
    op.execute("DROP TABLE bans")

"""Rooms and their participants.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE rooms (
            id uuid PRIMARY KEY,
            -- 8 characters of the unambiguous alphabet (no 0/O/1/I/L); unique platform-wide.
            code text NOT NULL CONSTRAINT rooms_code_key UNIQUE
                CONSTRAINT rooms_code_format CHECK (code ~ '^[A-HJKMNP-Z2-9]{8}$'),
            name text NOT NULL CONSTRAINT rooms_name_length CHECK (char_length(name) BETWEEN 1 AND 80),
            description text NOT NULL DEFAULT ''
                CONSTRAINT rooms_description_length CHECK (char_length(description) <= 500),
            visibility text NOT NULL CONSTRAINT rooms_visibility CHECK (visibility IN ('public', 'private')),
            -- argon2id hash; present exactly when the room is private.
            access_code_hash text,
            media_photo boolean NOT NULL DEFAULT false,
            media_voice boolean NOT NULL DEFAULT false,
            media_video boolean NOT NULL DEFAULT false,
            theme text NOT NULL DEFAULT 'purple-dream'
                CONSTRAINT rooms_theme CHECK (theme IN ('purple-dream', 'ocean-blue', 'dark-mode')),
            retention_days integer NOT NULL DEFAULT 30
                CONSTRAINT rooms_retention_days CHECK (retention_days BETWEEN 0 AND 3650),
            host_id text NOT NULL,
            closed_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT rooms_private_has_code CHECK ((visibility = 'private') = (access_code_hash IS NOT NULL))
        )
        """
    )
    op.execute("CREATE INDEX rooms_host_id_idx ON rooms (host_id)")
    op.execute(
        """
        CREATE TABLE participants (
            id uuid PRIMARY KEY,
            room_id uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
            subject text NOT NULL,
            username text NOT NULL,
            -- Uniqueness is case-insensitive; the display form keeps its case.
            username_lower text GENERATED ALWAYS AS (lower(username)) STORED,
            is_host boolean NOT NULL DEFAULT false,
            version bigint NOT NULL DEFAULT 1,
            banned boolean NOT NULL DEFAULT false,
            verified boolean NOT NULL DEFAULT false,
            joined_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT participants_room_username_key UNIQUE (room_id, username_lower),
            CONSTRAINT participants_room_subject_key UNIQUE (room_id, subject)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE participants")
    op.execute("DROP TABLE rooms")

"""Host settings: slow mode, the per-network limit on anonymous names, and the access code kept
sealed for its host.

The access code is still checked against its argon2id hash only. The sealed copy (AES-256-GCM under
a key from a secret that never lives in the database, bound to the room id) exists so the host can
read the code again; a copy of the database alone reveals no code.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE rooms ADD COLUMN slow_mode_seconds integer NOT NULL DEFAULT 0"
        " CONSTRAINT rooms_slow_mode_seconds CHECK (slow_mode_seconds BETWEEN 0 AND 3600)"
    )
    # NULL: the platform's default applies.
    op.execute(
        "ALTER TABLE rooms ADD COLUMN anonymous_names_per_network integer"
        " CONSTRAINT rooms_anonymous_names_per_network CHECK (anonymous_names_per_network BETWEEN 1 AND 1000)"
    )
    op.execute("ALTER TABLE rooms ADD COLUMN access_code_sealed text")
    op.execute(
        "ALTER TABLE rooms ADD CONSTRAINT rooms_sealed_code_is_private"
        " CHECK (access_code_sealed IS NULL OR access_code_hash IS NOT NULL)"
    )
    # "My rooms": rooms an identity hosts, and rooms it joined, newest first.
    op.execute("CREATE INDEX participants_subject_idx ON participants (subject, joined_at DESC)")
    # New anonymous names per network counted over the last window.
    op.execute(
        "CREATE INDEX participants_room_ip_joined_idx ON participants (room_id, client_ip_hash, joined_at)"
        " WHERE client_ip_hash IS NOT NULL AND identity_kind = 'anonymous'"
    )
    op.execute("DROP INDEX participants_room_client_ip_idx")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX participants_room_client_ip_idx ON participants (room_id, client_ip_hash)"
        " WHERE client_ip_hash IS NOT NULL"
    )
    op.execute("DROP INDEX participants_room_ip_joined_idx")
    op.execute("DROP INDEX participants_subject_idx")
    op.execute("ALTER TABLE rooms DROP CONSTRAINT rooms_sealed_code_is_private")
    op.execute("ALTER TABLE rooms DROP COLUMN access_code_sealed")
    op.execute("ALTER TABLE rooms DROP COLUMN anonymous_names_per_network")
    op.execute("ALTER TABLE rooms DROP COLUMN slow_mode_seconds")

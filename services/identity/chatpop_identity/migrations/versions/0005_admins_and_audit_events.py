"""Admins (a flag on accounts) and the append-only audit log of security events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-14
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Granted and revoked only by `python -m chatpop_identity.admin`; carried in access tokens.
    # A constant default adds the column without rewriting the table; the check is added NOT VALID
    # and validated separately, so the busy identities table is never locked for a full scan.
    op.execute("ALTER TABLE identities ADD COLUMN is_admin boolean NOT NULL DEFAULT false")
    op.execute(
        "ALTER TABLE identities ADD CONSTRAINT identities_admin_is_account"
        " CHECK (NOT is_admin OR kind = 'user') NOT VALID"
    )
    op.execute("ALTER TABLE identities VALIDATE CONSTRAINT identities_admin_is_account")

    # No foreign keys: an event outlives whatever it names, and it holds ids and keyed hashes only,
    # never an email or an IP. `at` is always the time of recording (never given by a caller), so
    # ids and times agree and the id is the paging cursor.
    op.execute(
        r"""
        CREATE TABLE audit_events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            kind text NOT NULL CHECK (
                length(kind) <= 64 AND kind ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'
            ),
            actor text CHECK (length(actor) BETWEEN 1 AND 128),
            target text CHECK (length(target) BETWEEN 1 AND 128),
            room_id uuid,
            ip_hash text CHECK (length(ip_hash) BETWEEN 1 AND 128),
            details jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
            idempotency_key text CONSTRAINT audit_events_idempotency_key_key UNIQUE
                CHECK (length(idempotency_key) BETWEEN 1 AND 128)
        )
        """
    )
    # Newest first under each filter: the id orders each index's matches.
    op.execute("CREATE INDEX audit_events_kind_idx ON audit_events (kind, id)")
    op.execute("CREATE INDEX audit_events_actor_idx ON audit_events (actor, id) WHERE actor IS NOT NULL")
    op.execute("CREATE INDEX audit_events_target_idx ON audit_events (target, id) WHERE target IS NOT NULL")
    op.execute(
        "CREATE INDEX audit_events_room_id_idx ON audit_events (room_id, id) WHERE room_id IS NOT NULL"
    )
    op.execute("CREATE INDEX audit_events_at_idx ON audit_events (at)")

    # Append-only, enforced by the database for every client: an UPDATE, DELETE or TRUNCATE fails.
    op.execute(
        """
        CREATE FUNCTION audit_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Audit events are never changed or removed.';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events"
        " FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events"
        " FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change()"
    )

    # Failed logins are counted here per window, email (keyed hash) and network (keyed hash), and
    # moved to audit_events as one event per count when the window has closed: someone hammering the
    # login form costs one row a minute, not one per attempt.
    op.execute(
        """
        CREATE TABLE login_failure_tallies (
            window_start timestamptz NOT NULL,
            email_hash text NOT NULL,
            ip_hash text NOT NULL DEFAULT '',
            target uuid,
            failures integer NOT NULL CHECK (failures > 0),
            first_at timestamptz NOT NULL,
            last_at timestamptz NOT NULL,
            PRIMARY KEY (window_start, email_hash, ip_hash)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE login_failure_tallies")
    op.execute("DROP TABLE audit_events")
    op.execute("DROP FUNCTION audit_events_refuse_change()")
    op.execute("ALTER TABLE identities DROP CONSTRAINT identities_admin_is_account")
    op.execute("ALTER TABLE identities DROP COLUMN is_admin")

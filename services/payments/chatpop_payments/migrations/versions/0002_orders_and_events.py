"""Orders, the ledger, Stripe events, payout accounts and the outbox.

- `orders`: what a buyer pays for (a paid pin, an extension, a tip), priced here, moved only forward
  by payment events; the `orders_forward_only` trigger refuses any other move and any change to what
  was bought or its price.
- `ledger_entries`: append-only money movements of an order (charge, platform fee, refund, fee
  refund, transfer reversal, dispute), one per Stripe object and kind.
- `stripe_events`: every event received (webhook, reconciliation or the test mode), once by its id.
- `payout_accounts`: a host's Stripe Connect Express account as last learned.
- `stripe_sync`: how far reconciliation has read Stripe's list of events.
- `outbox` (chatpop_common.outbox): fulfilment and refunds, written with the change that calls for them.

The `payments` table of 0001 never held a row (no feature wrote it); `orders` replaces it.

Revision ID: 0002_orders_and_events
Revises: 0001_payments_ledger
Create Date: 2027-02-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from chatpop_common import outbox

revision: str = "0002_orders_and_events"
down_revision: str | None = "0001_payments_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here: a migration's meaning never follows later code. tests/integration checks that it
# matches chatpop_payments.states.TRANSITIONS.
_TRANSITIONS = (
    ("created", "awaiting_payment"),
    ("created", "paid"),
    ("created", "failed"),
    ("created", "cancelled"),
    ("awaiting_payment", "paid"),
    ("awaiting_payment", "failed"),
    ("awaiting_payment", "cancelled"),
    ("paid", "fulfilled"),
    ("paid", "refunding"),
    ("fulfilled", "refunding"),
    ("refunding", "refunded"),
)
_STATES = ("created", "awaiting_payment", "paid", "fulfilled", "refunding", "refunded", "failed", "cancelled")
_REFUND_REASONS = ("", "outbid", "not_top_pin", "message_gone", "banned", "admin", "room_closed")
_ENTRY_KINDS = ("charge", "fee", "refund", "fee_refund", "transfer_reversal", "dispute")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def _now() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.drop_index("payments_state_updated_at_idx", table_name="payments")
    op.drop_table("payments")

    op.create_table(
        "orders",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("room_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("buyer_participant_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("buyer_identity_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("host_identity_id", postgresql.UUID(as_uuid=True), nullable=False),
        # The buyer's key: the same key of the same buyer is the same order.
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("fee_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("target_seq", sa.BigInteger(), nullable=True),
        sa.Column("pin_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
        sa.Column("test_mode", sa.Boolean(), nullable=False),
        # The host's Connect account the money goes to (empty in test mode).
        sa.Column("destination_account", sa.Text(), nullable=False, server_default=""),
        sa.Column("stripe_payment_intent_id", sa.Text(), nullable=True),
        sa.Column("payment_error", sa.Text(), nullable=False, server_default=""),
        sa.Column("refund_reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("refund_message", sa.Text(), nullable=False, server_default=""),
        sa.Column("stripe_refund_id", sa.Text(), nullable=True),
        sa.Column("fulfilled_seq", sa.BigInteger(), nullable=True),
        _now(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fulfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(_in("kind", ("pin", "pin_extension", "tip")), name="orders_kind_known"),
        sa.CheckConstraint(_in("state", _STATES), name="orders_state_known"),
        sa.CheckConstraint(_in("refund_reason", _REFUND_REASONS), name="orders_refund_reason_known"),
        sa.CheckConstraint("amount_cents > 0", name="orders_amount_positive"),
        sa.CheckConstraint("fee_cents >= 0 AND fee_cents <= amount_cents", name="orders_fee_within_amount"),
        sa.CheckConstraint("currency ~ '^[a-z]{3}$'", name="orders_currency_iso"),
        sa.CheckConstraint("char_length(idempotency_key) BETWEEN 8 AND 64", name="orders_key_length"),
        sa.CheckConstraint("char_length(note) <= 200", name="orders_note_length"),
        sa.CheckConstraint(
            "(kind = 'pin' AND target_seq >= 1 AND pin_id IS NULL)"
            " OR (kind = 'pin_extension' AND pin_id IS NOT NULL AND target_seq IS NULL)"
            " OR (kind = 'tip' AND target_seq IS NULL AND pin_id IS NULL)",
            name="orders_item_matches_kind",
        ),
        sa.CheckConstraint("kind = 'tip' OR note = ''", name="orders_note_only_on_tips"),
        sa.CheckConstraint(
            "NOT test_mode OR stripe_payment_intent_id IS NULL", name="orders_test_mode_has_no_payment_intent"
        ),
        sa.UniqueConstraint("buyer_identity_id", "idempotency_key", name="orders_buyer_key_key"),
        sa.UniqueConstraint("stripe_payment_intent_id", name="orders_stripe_payment_intent_id_key"),
    )
    op.create_index(
        "orders_buyer_created_idx",
        "orders",
        ["buyer_identity_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index("orders_host_idx", "orders", ["host_identity_id"])
    op.create_index("orders_state_updated_at_idx", "orders", ["state", "updated_at"])

    pairs = ", ".join(f"('{a}', '{b}')" for a, b in _TRANSITIONS)
    op.execute(
        f"""
        CREATE FUNCTION orders_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.state IS DISTINCT FROM OLD.state
               AND (OLD.state, NEW.state) NOT IN (VALUES {pairs}) THEN
                RAISE EXCEPTION 'order % cannot move from % to %', OLD.id, OLD.state, NEW.state
                    USING ERRCODE = 'check_violation';
            END IF;
            IF (NEW.id, NEW.kind, NEW.room_id, NEW.buyer_participant_id, NEW.buyer_identity_id,
                NEW.host_identity_id, NEW.idempotency_key, NEW.amount_cents, NEW.fee_cents,
                NEW.currency, NEW.target_seq, NEW.pin_id, NEW.note, NEW.test_mode, NEW.created_at)
               IS DISTINCT FROM
               (OLD.id, OLD.kind, OLD.room_id, OLD.buyer_participant_id, OLD.buyer_identity_id,
                OLD.host_identity_id, OLD.idempotency_key, OLD.amount_cents, OLD.fee_cents,
                OLD.currency, OLD.target_seq, OLD.pin_id, OLD.note, OLD.test_mode, OLD.created_at) THEN
                RAISE EXCEPTION 'what order % buys and its price never change', OLD.id
                    USING ERRCODE = 'check_violation';
            END IF;
            IF OLD.stripe_payment_intent_id IS NOT NULL
               AND NEW.stripe_payment_intent_id IS DISTINCT FROM OLD.stripe_payment_intent_id THEN
                RAISE EXCEPTION 'order % keeps its PaymentIntent', OLD.id USING ERRCODE = 'check_violation';
            END IF;
            NEW.updated_at := now();
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER orders_forward_only BEFORE UPDATE ON orders"
        " FOR EACH ROW EXECUTE FUNCTION orders_forward_only()"
    )
    op.execute(
        """
        CREATE FUNCTION orders_never_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'orders are kept' USING ERRCODE = 'check_violation';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER orders_never_deleted BEFORE DELETE ON orders"
        " FOR EACH ROW EXECUTE FUNCTION orders_never_deleted()"
    )

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column("order_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        # The Stripe object it comes from (pi_…, re_…, du_…), or the test mode's own id.
        sa.Column("source", sa.Text(), nullable=False),
        _now(),
        sa.CheckConstraint(_in("kind", _ENTRY_KINDS), name="ledger_entries_kind_known"),
        sa.CheckConstraint("amount_cents > 0", name="ledger_entries_amount_positive"),
        sa.CheckConstraint("currency ~ '^[a-z]{3}$'", name="ledger_entries_currency_iso"),
        sa.CheckConstraint("source <> ''", name="ledger_entries_source_not_empty"),
        sa.UniqueConstraint("order_id", "kind", "source", name="ledger_entries_order_kind_source_key"),
    )
    op.execute(
        """
        CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger entries are never changed or deleted' USING ERRCODE = 'check_violation';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries"
        " FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()"
    )

    op.create_table(
        "stripe_events",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("type", sa.Text(), nullable=False),
        # When Stripe created it.
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        # How it reached us: `webhook`, `reconcile` or `test` (the test mode's own events).
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        # False for types payments does not act on (recorded and ignored).
        sa.Column("handled", sa.Boolean(), nullable=False),
        # What handling it did, for people reading the table.
        sa.Column("outcome", sa.Text(), nullable=False, server_default=""),
        sa.CheckConstraint(
            _in("source", ("webhook", "reconcile", "test")), name="stripe_events_source_known"
        ),
    )
    op.create_index("stripe_events_created_idx", "stripe_events", ["created"])

    op.create_table(
        "payout_accounts",
        sa.Column("identity_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("stripe_account_id", sa.Text(), nullable=True),
        sa.Column("test_mode", sa.Boolean(), nullable=False),
        sa.Column("details_submitted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("charges_enabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("payouts_enabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        # When Stripe's state last written here was Stripe's (event time or retrieval): older news
        # never overwrites newer.
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        _now(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("stripe_account_id", name="payout_accounts_stripe_account_id_key"),
        sa.CheckConstraint(
            "test_mode OR stripe_account_id IS NOT NULL", name="payout_accounts_stripe_has_account"
        ),
    )

    op.create_table(
        "stripe_sync",
        sa.Column("name", sa.Text(), primary_key=True),
        # Unix time of the newest event read from Stripe's list.
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )

    for statement in outbox.create_statements():
        op.execute(statement)


def downgrade() -> None:
    for statement in outbox.drop_statements():
        op.execute(statement)
    op.drop_table("stripe_sync")
    op.drop_table("payout_accounts")
    op.drop_index("stripe_events_created_idx", table_name="stripe_events")
    op.drop_table("stripe_events")
    op.drop_table("ledger_entries")
    op.execute("DROP FUNCTION ledger_entries_append_only()")
    op.drop_table("orders")
    op.execute("DROP FUNCTION orders_forward_only()")
    op.execute("DROP FUNCTION orders_never_deleted()")
    op.create_table(
        "payments",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("stripe_payment_intent_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind <> ''", name="payments_kind_not_empty"),
        sa.CheckConstraint("state <> ''", name="payments_state_not_empty"),
        sa.CheckConstraint("amount_cents > 0", name="payments_amount_positive"),
        sa.CheckConstraint("currency ~ '^[a-z]{3}$'", name="payments_currency_iso"),
        sa.UniqueConstraint("stripe_payment_intent_id", name="payments_stripe_payment_intent_id_key"),
    )
    op.create_index("payments_state_updated_at_idx", "payments", ["state", "updated_at"])

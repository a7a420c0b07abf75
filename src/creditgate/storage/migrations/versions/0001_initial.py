"""Accounts, API keys, the double-entry ledger, usage records and cache events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
SYSTEM_ACCOUNTS = ("funding:topup", "funding:bonus", "funding:grant", "funding:sponsor", "revenue", "expired")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("kind", sa.String(16), nullable=False, server_default="user"),
        sa.Column("trial_calls_left", sa.Integer, nullable=False, server_default="0"),
        sa.Column("topped_up", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("daily_cap", sa.BigInteger, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('active', 'suspended')", name="ck_accounts_status"),
        sa.CheckConstraint("kind IN ('user', 'demo')", name="ck_accounts_kind"),
        sa.CheckConstraint("trial_calls_left >= 0", name="ck_accounts_trial"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False, index=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("allowed_models", sa.Text, nullable=True),
        sa.Column("ip_allowlist", sa.Text, nullable=True),
        sa.Column("daily_cap", sa.BigInteger, nullable=True),
        sa.Column("rpm", sa.Integer, nullable=True),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    ledger = op.create_table(
        "ledger_accounts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("code", sa.String(64), nullable=True, unique=True),
        sa.Column("owner_id", Id, sa.ForeignKey("accounts.id"), nullable=True),
        sa.Column("lot_kind", sa.String(8), nullable=True),
        sa.Column("amount", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("balance", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("expired", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("kind IN ('lot', 'system')", name="ck_ledger_accounts_kind"),
        sa.CheckConstraint("kind <> 'lot' OR balance >= 0", name="ck_ledger_accounts_lot_balance"),
        sa.CheckConstraint(
            "kind <> 'lot' OR (owner_id IS NOT NULL AND lot_kind IN ('topup', 'bonus', 'grant', 'trial') "
            "AND expires_at IS NOT NULL)",
            name="ck_ledger_accounts_lot_fields",
        ),
        sa.CheckConstraint("kind <> 'system' OR code IS NOT NULL", name="ck_ledger_accounts_system_code"),
    )
    op.create_index("ix_ledger_accounts_owner_expiry", "ledger_accounts", ["owner_id", "expires_at"])
    op.create_table(
        "transactions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False, server_default="posted"),
        sa.Column("idempotency_key", sa.String(200), nullable=True, unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint(
            "type IN ('USAGE', 'TOPUP', 'BONUS', 'GRANT', 'TRIAL', 'EXPIRY', 'REFUND')",
            name="ck_transactions_type",
        ),
    )
    op.create_index("ix_transactions_account_id", "transactions", ["account_id", "id"])
    op.create_table(
        "transfers",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("txn_id", Id, sa.ForeignKey("transactions.id"), nullable=False, index=True),
        sa.Column("debit_id", Id, sa.ForeignKey("ledger_accounts.id"), nullable=False, index=True),
        sa.Column("credit_id", Id, sa.ForeignKey("ledger_accounts.id"), nullable=False, index=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_transfers_amount"),
        sa.CheckConstraint("debit_id <> credit_id", name="ck_transfers_distinct"),
    )
    op.create_table(
        "usage",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(100), nullable=False, unique=True),
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("key_id", Id, nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("deployment", sa.String(300), nullable=True),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer, nullable=False),
        sa.Column("cache_write_tokens", sa.Integer, nullable=False),
        sa.Column("reasoning_tokens", sa.Integer, nullable=False),
        sa.Column("cost", sa.BigInteger, nullable=False),
        sa.Column("sponsored_cost", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("hold", sa.BigInteger, nullable=False),
        sa.Column("sponsor", sa.String(8), nullable=True),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("estimated", sa.Boolean, nullable=False),
        sa.Column("raw_usage", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_usage_account_created", "usage", ["account_id", "created_at"])
    op.create_index("ix_usage_key_created", "usage", ["key_id", "created_at"])
    op.create_table(
        "cache_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref_id", Id, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    now = sa.func.now() if op.get_bind().dialect.name != "sqlite" else sa.text("CURRENT_TIMESTAMP")
    op.execute(
        ledger.insert().from_select(
            ["kind", "code", "created_at"],
            sa.union_all(*[sa.select(sa.literal("system"), sa.literal(code), now) for code in SYSTEM_ACCOUNTS]),
        )
    )
    _append_only(("transfers", "transactions"))
    _balances_follow_transfers()


def _append_only(tables: tuple[str, ...]) -> None:
    """Ledger rows are never changed or removed; a correction is a new, reversing entry."""
    if op.get_bind().dialect.name == "sqlite":
        for table in tables:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} are append-only'); END"
                )
        return
    op.execute(
        "CREATE FUNCTION creditgate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION '% are append-only', TG_TABLE_NAME; END $$"
    )
    for table in tables:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION creditgate_append_only()"
        )


def _balances_follow_transfers() -> None:
    """The cached balance of a ledger account is maintained by the database itself, in the
    transaction that inserts the transfer, so it cannot drift from the postings; with the
    CHECK on lots, a transfer that would overdraw a lot is refused."""
    debit = "UPDATE ledger_accounts SET balance = balance - NEW.amount WHERE id = NEW.debit_id"
    credit = "UPDATE ledger_accounts SET balance = balance + NEW.amount WHERE id = NEW.credit_id"
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"CREATE TRIGGER transfers_balances AFTER INSERT ON transfers BEGIN {debit}; {credit}; END")
        return
    op.execute(
        "CREATE FUNCTION creditgate_transfer_balances() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {debit}; {credit}; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER transfers_balances AFTER INSERT ON transfers "
        "FOR EACH ROW EXECUTE FUNCTION creditgate_transfer_balances()"
    )


def downgrade() -> None:
    tables = ("cache_events", "usage", "transfers", "transactions", "ledger_accounts", "api_keys", "accounts")
    for table in tables:
        op.drop_table(table)
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS creditgate_append_only()")
        op.execute("DROP FUNCTION IF EXISTS creditgate_transfer_balances()")

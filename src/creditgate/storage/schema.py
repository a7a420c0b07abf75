"""The tables, as SQLAlchemy Core. The migrations in `migrations/versions` create the same
shape; a test compares the two so they cannot drift apart.

Money columns are BigInteger micros. The ledger is double-entry in TigerBeetle's style: a
`transfers` row moves `amount` from one ledger account to another, so every posting is
zero-sum by construction, and the database refuses a transfer with a non-positive amount,
a transfer from an account to itself, and a lot whose cached balance would go negative.
Transfers and transactions are append-only (triggers refuse UPDATE and DELETE).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# BigInteger ids on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid.
Id = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("password_hash", String(200), nullable=True),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("kind", String(16), nullable=False, server_default="user"),
    Column("trial_calls_left", Integer, nullable=False, server_default="0"),
    Column("topped_up", BigInteger, nullable=False, server_default="0"),
    Column("daily_cap", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("status IN ('active', 'suspended')", name="ck_accounts_status"),
    CheckConstraint("kind IN ('user', 'demo')", name="ck_accounts_kind"),
    CheckConstraint("trial_calls_left >= 0", name="ck_accounts_trial"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("name", String(200), nullable=False, server_default=""),
    Column("allowed_models", Text, nullable=True),  # JSON list, NULL: every model
    Column("ip_allowlist", Text, nullable=True),  # JSON list of CIDRs, NULL: anywhere
    Column("daily_cap", BigInteger, nullable=True),
    Column("rpm", Integer, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),  # lot | system
    Column("code", String(64), nullable=True, unique=True),  # system accounts only
    Column("owner_id", Id, ForeignKey("accounts.id"), nullable=True),
    Column("lot_kind", String(8), nullable=True),  # topup | bonus | grant | trial
    Column("amount", BigInteger, nullable=False, server_default="0"),  # a lot's original amount
    Column("balance", BigInteger, nullable=False, server_default="0"),  # credits - debits
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("expired", Boolean, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("kind IN ('lot', 'system')", name="ck_ledger_accounts_kind"),
    CheckConstraint("kind <> 'lot' OR balance >= 0", name="ck_ledger_accounts_lot_balance"),
    CheckConstraint(
        "kind <> 'lot' OR (owner_id IS NOT NULL AND lot_kind IN ('topup', 'bonus', 'grant', 'trial') "
        "AND expires_at IS NOT NULL)",
        name="ck_ledger_accounts_lot_fields",
    ),
    CheckConstraint("kind <> 'system' OR code IS NOT NULL", name="ck_ledger_accounts_system_code"),
)
Index("ix_ledger_accounts_owner_expiry", ledger_accounts.c.owner_id, ledger_accounts.c.expires_at)

transactions = Table(
    "transactions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=True),
    Column("type", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),  # signed, from the account holder's view
    Column("description", Text, nullable=False, server_default=""),
    Column("status", String(16), nullable=False, server_default="posted"),
    Column("idempotency_key", String(200), nullable=True, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "type IN ('USAGE', 'TOPUP', 'BONUS', 'GRANT', 'TRIAL', 'EXPIRY', 'REFUND')",
        name="ck_transactions_type",
    ),
)
Index("ix_transactions_account_id", transactions.c.account_id, transactions.c.id)

transfers = Table(
    "transfers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("txn_id", Id, ForeignKey("transactions.id"), nullable=False, index=True),
    # Not indexed: nothing looks transfers up by ledger account (balances are cached on it).
    Column("debit_id", Id, ForeignKey("ledger_accounts.id"), nullable=False),
    Column("credit_id", Id, ForeignKey("ledger_accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    CheckConstraint("amount > 0", name="ck_transfers_amount"),
    CheckConstraint("debit_id <> credit_id", name="ck_transfers_distinct"),
)

usage = Table(
    "usage",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("request_id", String(100), nullable=False, unique=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", Id, nullable=True),
    Column("model", String(200), nullable=False),
    Column("deployment", String(300), nullable=True),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("cache_write_tokens", Integer, nullable=False),
    Column("reasoning_tokens", Integer, nullable=False),
    Column("cost", BigInteger, nullable=False),  # what the wallet paid
    Column("sponsored_cost", BigInteger, nullable=False, server_default="0"),  # what the operator paid
    Column("hold", BigInteger, nullable=False),
    Column("sponsor", String(8), nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("estimated", Boolean, nullable=False),
    Column("raw_usage", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("client_ip", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_usage_account_created", usage.c.account_id, usage.c.created_at)

# Admin changes made by another process (the CLI, another gateway) reach every gateway's
# caches through this table: each gateway polls for ids above the last it has seen.
cache_events = Table(
    "cache_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # key | account
    Column("ref_id", Id, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

SYSTEM_ACCOUNTS = (
    "funding:topup",
    "funding:bonus",
    "funding:grant",
    "funding:sponsor",  # trial lots, free trial calls and the public demo key
    "revenue",
    "expired",
)

APPEND_ONLY = ("transfers", "transactions")

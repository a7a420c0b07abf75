"""Drop three indexes that every settlement paid for and no query used.

`transfers.debit_id` and `transfers.credit_id`: postings are read by transaction
(`ix_transfers_txn_id`) and balances are cached on the ledger accounts, so nothing looks
transfers up by account; the foreign keys stay (ledger accounts are never deleted, so they
never need a reverse lookup). `usage (key_id, created_at)`: spend per key is summed within
an account's day, which `ix_usage_account_created` serves.

Measured on the SQLite settlement path: 42 -> 26 µs per settlement in batches of 16,
58 -> 48 µs for a lone one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_transfers_debit_id", table_name="transfers")
    op.drop_index("ix_transfers_credit_id", table_name="transfers")
    op.drop_index("ix_usage_key_created", table_name="usage")


def downgrade() -> None:
    op.create_index("ix_usage_key_created", "usage", ["key_id", "created_at"])
    op.create_index("ix_transfers_credit_id", "transfers", ["credit_id"])
    op.create_index("ix_transfers_debit_id", "transfers", ["debit_id"])

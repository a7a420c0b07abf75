"""The database itself guards the ledger: migrations match the schema, transfers are
append-only and zero-sum, and a lot cannot go below zero."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from creditgate.ledger.postings import add_credits, post
from creditgate.storage.db import connect
from creditgate.storage.migrations import migrate
from creditgate.storage.schema import accounts, metadata


def _diff(conn: Any) -> list[Any]:
    return compare_metadata(MigrationContext.configure(conn), metadata)


async def schema_diff(url: str) -> list[Any]:
    """How the database at `url` differs from `schema.py`."""
    db = connect(url)
    try:
        async with db.reader.connect() as conn:
            return await conn.run_sync(_diff)
    finally:
        await db.dispose()


async def test_migration_matches_the_schema_and_reruns_cleanly(db_url: str) -> None:
    await migrate(db_url)
    await migrate(db_url)
    assert await schema_diff(db_url) == []


async def test_a_database_made_by_the_first_release_upgrades_to_the_schema(db_url: str) -> None:
    await migrate(db_url, "0001")
    assert await schema_diff(db_url) != []  # it has the three indexes 0002 drops
    await migrate(db_url)
    assert await schema_diff(db_url) == []


async def test_the_database_refuses_bad_postings(db_url: str) -> None:
    await migrate(db_url)
    db = connect(db_url)
    now = datetime.now(UTC)
    try:
        async with db.writer.begin() as conn:
            system = {r.code: r.id for r in await conn.execute(text("SELECT code, id FROM ledger_accounts"))}
            account_id = (
                await conn.execute(
                    insert(accounts).values(email="db@example.com", created_at=now).returning(accounts.c.id)
                )
            ).scalar_one()
            lot = await add_credits(
                conn,
                system,
                account_id=account_id,
                amount=100,
                kind="grant",
                expires_in=timedelta(days=1),
                at=now,
                description="",
                idempotency_key=None,
            )
        overdraw = [(lot.lot_id, system["revenue"], 101)]
        for legs in (overdraw, [(lot.lot_id, lot.lot_id, 1)], [(lot.lot_id, system["revenue"], -1)]):
            with pytest.raises(IntegrityError):
                async with db.writer.begin() as conn:
                    await post(conn, account_id=account_id, type="USAGE", amount=0, description="", legs=legs, at=now)
        for statement in ("UPDATE transfers SET amount = 1", "DELETE FROM transactions"):
            with pytest.raises(DBAPIError, match="append-only"):
                async with db.writer.begin() as conn:
                    await conn.execute(text(statement))
        async with db.reader.connect() as conn:
            balance = (
                await conn.execute(text(f"SELECT balance FROM ledger_accounts WHERE id = {lot.lot_id}"))
            ).scalar()
        assert balance == 100
    finally:
        await db.dispose()

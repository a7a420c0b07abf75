"""Shared by the ledger, account and API tests: database URLs (SQLite and, when
CREDITGATE_TEST_PG_URL is set, PostgreSQL), a catalog with cheap, premium and plain models,
and a factory for started billing services."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from creditgate.catalog import Catalog
from creditgate.config import parse_config, settings_from
from creditgate.ledger.service import BillingService, open_billing
from creditgate.storage.schema import ledger_accounts, transfers

CONFIG = """
currency: {code: INR, symbol: "₹"}
billing:
  trial_calls: 2
  premium_min_topup: "5"
  demo_calls_per_ip: 2
  group_commit_ms: 5
providers:
  - {id: sim, type: openai, base_url: "http://127.0.0.1:9"}
models:
  - id: cheap-model
    tags: [cheap]
    price: {input: "1", output: "2"}
    deployments: [{provider: sim, model: c}]
  - id: plain-model
    price: {input: "3", output: "15"}
    deployments: [{provider: sim, model: p}]
  - id: premium-model
    tags: [premium]
    price: {input: "10", output: "30"}
    deployments: [{provider: sim, model: x}]
"""


def pg_base_url() -> str | None:
    return os.environ.get("CREDITGATE_TEST_PG_URL") or None


@pytest.fixture(scope="session")
async def pg_url() -> AsyncIterator[str]:
    """A PostgreSQL database of this test session's own, dropped at the end."""
    base = pg_base_url()
    if base is None:
        pytest.skip("set CREDITGATE_TEST_PG_URL to run the PostgreSQL tests")
    name = f"creditgate_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    head, _, _ = base.rpartition("/")
    yield f"{head}/{name}"
    admin = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _reset_pg(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("pg_url")
    loop = asyncio.new_event_loop()  # this fixture runs outside the tests' loop
    try:
        loop.run_until_complete(_reset_pg(url))
    finally:
        loop.close()
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


ServiceFactory = Callable[..., Awaitable[BillingService]]


def make_settings(url: str, admin_token: str | None = None, **billing: Any) -> Any:
    file = parse_config(CONFIG)
    if billing:
        file = file.model_copy(update={"billing": file.billing.model_copy(update=billing)})
    settings = settings_from(file)
    return settings.model_copy(update={"database_url": url, "admin_token": admin_token})


@pytest.fixture
async def services() -> AsyncIterator[ServiceFactory]:
    """`await services(url, **billing_overrides)`: a started service, closed after the test."""
    started: list[BillingService] = []

    async def make(url: str, *, admin_token: str | None = None, **billing: Any) -> BillingService:
        settings = make_settings(url, admin_token, **billing)
        service = await open_billing(settings, Catalog(settings.file), poll_interval=0.05, sweep_interval=3600)
        started.append(service)
        return service

    yield make
    for service in started:
        await service.close()


async def ledger_invariants(service: BillingService) -> None:
    """What must hold after anything: cached balances equal their postings, everything
    sums to zero, and no lot is below zero."""
    async with service.db.reader.connect() as conn:
        rows = await conn.execute(select(ledger_accounts.c.id, ledger_accounts.c.kind, ledger_accounts.c.balance))
        cached = {int(r.id): (r.kind, int(r.balance)) for r in rows}
        credits = dict(
            (
                await conn.execute(
                    select(transfers.c.credit_id, func.sum(transfers.c.amount)).group_by(transfers.c.credit_id)
                )
            ).all()
        )
        debits = dict(
            (
                await conn.execute(
                    select(transfers.c.debit_id, func.sum(transfers.c.amount)).group_by(transfers.c.debit_id)
                )
            ).all()
        )
    for account_id, (kind, balance) in cached.items():
        derived = int(credits.get(account_id, 0) or 0) - int(debits.get(account_id, 0) or 0)
        assert balance == derived, f"ledger account {account_id}: cached {balance}, postings say {derived}"
        if kind == "lot":
            assert balance >= 0
    assert sum(b for _, b in cached.values()) == 0

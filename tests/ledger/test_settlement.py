"""Settlement: group commit, isolation of a failing settlement, idempotency, caches."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from sqlalchemy import event, func, select
from tests.ledger.billing_support import ServiceFactory, ledger_invariants

from creditgate.accounts import KeyOptions
from creditgate.billing import Outcome
from creditgate.canonical import Usage
from creditgate.errors import Conflict, PaymentRequired, Unauthorized
from creditgate.ledger.service import BillingService, ensure_demo_account
from creditgate.storage.schema import transactions, usage

M = 1_000_000


async def account_with_key(service: BillingService, email: str, amount: int) -> tuple[int, str]:
    account = await service.create_account(email)
    await service.add_credits(account["id"], amount, "topup")
    key = await service.create_key(account["id"], KeyOptions())
    return account["id"], key["key"]


def outcome(service: BillingService, prompt: int, completion: int, **kw: Any) -> Outcome:
    model = service.catalog.get("plain-model")
    assert model is not None
    usage_ = Usage(prompt_tokens=prompt, completion_tokens=completion, raw={"prompt_tokens": prompt})
    return Outcome(model, "sim/p", usage_, kw.get("estimated", False), kw.get("status", "ok"), 7)


async def count(service: BillingService, table: Any) -> int:
    async with service.db.reader.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_group_commit_puts_many_settlements_in_one_transaction(db_url: str, services: ServiceFactory) -> None:
    service = await services(db_url, group_commit_ms=50)
    account_id, key = await account_with_key(service, "many@example.com", 10 * M)
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    reservations = [await service.reserve(principal, model, 100_000, f"req-{i}") for i in range(20)]
    assert service.writer is not None
    before = service.writer.batches
    charges = await asyncio.gather(*(service.settle(r, outcome(service, 1000, 100)) for r in reservations))
    assert charges == [1000 * 3 + 100 * 15] * 20
    assert service.writer.batches - before < 20  # many settlements shared a commit
    view = await service.account_view(account_id)
    assert view["balance"] == (10 * M - 20 * 4500) / M and view["held"] == 0
    await ledger_invariants(service)


async def refuse_usage_of(service: BillingService, request_id: str) -> None:
    """A trigger that fails the usage insert of one request: its settlement breaks after it
    wrote its transaction and transfers."""
    async with service.db.writer.begin() as conn:
        if service.db.sqlite:
            await conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_usage BEFORE INSERT ON usage WHEN NEW.request_id = '{request_id}' "
                "BEGIN SELECT RAISE(ABORT, 'this one breaks after writing'); END"
            )
        else:
            await conn.exec_driver_sql(
                "CREATE FUNCTION refuse_usage() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.request_id = '{request_id}' THEN RAISE EXCEPTION 'this one breaks after writing'; END IF; "
                "RETURN NEW; END $$"
            )
            await conn.exec_driver_sql(
                "CREATE TRIGGER refuse_usage BEFORE INSERT ON usage FOR EACH ROW EXECUTE FUNCTION refuse_usage()"
            )


async def test_a_failing_settlement_does_not_fail_its_batch_mates(db_url: str, services: ServiceFactory) -> None:
    service = await services(db_url, group_commit_ms=50)
    _, key = await account_with_key(service, "batch@example.com", 10 * M)
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    await refuse_usage_of(service, "bad")
    names = ["a", "bad", "b", "c"]
    reservations = [await service.reserve(principal, model, 100_000, n) for n in names]
    assert service.writer is not None
    before = service.writer.batches
    results = await asyncio.gather(
        *(service.settle(r, outcome(service, 1000, 100)) for r in reservations), return_exceptions=True
    )
    assert service.writer.batches - before == 1  # one transaction, the bad one rolled back alone
    assert isinstance(results[1], Exception) and "breaks after writing" in str(results[1])
    assert results[0] == results[2] == results[3] == 4500
    async with service.db.reader.connect() as conn:
        settled = set((await conn.execute(select(usage.c.request_id))).scalars())
        charged = set((await conn.execute(select(transactions.c.idempotency_key))).scalars())
    assert settled == {"a", "b", "c"}  # the bad one left nothing behind, the others committed
    assert "usage:bad" not in charged
    assert service.holds.held(principal.account_id) == 0
    await ledger_invariants(service)


async def test_settling_the_same_request_twice_charges_once(db_url: str, services: ServiceFactory) -> None:
    service = await services(db_url)
    account_id, key = await account_with_key(service, "twice@example.com", M)
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    r = await service.reserve(principal, model, 100_000, "same")
    assert await service.settle(r, outcome(service, 1000, 100)) == 4500
    assert await service.settle(r, outcome(service, 1000, 100)) == 4500
    assert await count(service, usage) == 1
    service.forget_account(account_id)
    assert (await service.account_view(account_id))["balance"] == (M - 4500) / M


async def test_failed_request_is_recorded_but_not_charged(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    account_id, key = await account_with_key(service, "fail@example.com", M)
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    r = await service.reserve(principal, model, 100_000, "failed")
    assert await service.settle(r, Outcome(model, None, None, False, "error", 3, error="upstream 500")) == 0
    r = await service.reserve(principal, model, 100_000, "failed-2")
    assert await service.settle(r, outcome(service, 1000, 0, status="error")) == 0
    page, _ = await service.usage_page(account_id, 10, None)
    assert {row["request_id"] for row in page} == {"failed", "failed-2"}
    assert all(row["cost"] == 0 for row in page)
    assert (await service.account_view(account_id))["available"] == 1


async def test_charge_never_exceeds_the_hold(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    _, key = await account_with_key(service, "cap@example.com", M)
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    r = await service.reserve(principal, model, 1000, "over")
    assert await service.settle(r, outcome(service, 10_000, 10_000)) == 1000


async def test_credits_replay_with_the_same_idempotency_key(db_url: str, services: ServiceFactory) -> None:
    service = await services(db_url)
    account = await service.create_account("idem@example.com")
    first = await service.add_credits(account["id"], 5 * M, "topup", idempotency_key="pay-1")
    again = await service.add_credits(account["id"], 5 * M, "topup", idempotency_key="pay-1")
    assert again["transaction_id"] == first["transaction_id"] and again["replayed"] is True
    with pytest.raises(Conflict):
        await service.add_credits(account["id"], 6 * M, "topup", idempotency_key="pay-1")
    view = await service.account_view(account["id"])
    assert view["balance"] == 5 and view["topped_up"] == 5
    assert await count(service, transactions) == 1


async def test_key_reset_refuses_the_old_key_at_once(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    _, key = await account_with_key(service, "reset@example.com", M)
    principal = await service.authenticate(key, "127.0.0.1")  # now cached
    assert principal.key_id is not None
    new = await service.reset_key(principal.key_id)
    with pytest.raises(Unauthorized):
        await service.authenticate(key, "127.0.0.1")
    assert (await service.authenticate(new["key"], "127.0.0.1")).key_id == principal.key_id
    await service.delete_key(principal.key_id)
    with pytest.raises(Unauthorized):
        await service.authenticate(new["key"], "127.0.0.1")


async def test_reset_by_another_process_reaches_the_cache(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    other = await services(sqlite_url)  # e.g. the CLI, on the same database
    _, key = await account_with_key(service, "cross@example.com", M)
    principal = await service.authenticate(key, "127.0.0.1")
    assert principal.key_id is not None
    await other.reset_key(principal.key_id)
    await service.poll_changes()
    with pytest.raises(Unauthorized):
        await service.authenticate(key, "127.0.0.1")


async def test_cached_authenticate_and_reserve_do_not_touch_the_database(
    sqlite_url: str, services: ServiceFactory
) -> None:
    service = await services(sqlite_url)
    _, key = await account_with_key(service, "hot@example.com", M)
    model = service.catalog.get("plain-model")
    assert model is not None
    await service.authenticate(key, "127.0.0.1")  # warms the caches
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))

    for engine in {service.db.reader, service.db.writer}:
        event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        principal = await service.authenticate(key, "127.0.0.1")
        await service.reserve(principal, model, 1000, "hot-1")
    finally:
        for engine in {service.db.reader, service.db.writer}:
            event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert statements == []


async def test_admin_credit_reaches_a_cached_account(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    account_id, key = await account_with_key(service, "topup@example.com", 1000)
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    with pytest.raises(PaymentRequired):
        await service.reserve(principal, model, M, "big")
    await service.add_credits(account_id, 2 * M, "topup")
    await service.reserve(principal, model, M, "big")


async def test_demo_account_is_created_once_with_a_new_key_each_start(
    sqlite_url: str, services: ServiceFactory
) -> None:
    service = await services(sqlite_url)
    first = await ensure_demo_account(service, credits=3 * M)
    second = await ensure_demo_account(service, credits=3 * M)
    assert first != second
    a = await service.authenticate(first, "127.0.0.1")
    b = await service.authenticate(second, "127.0.0.1")
    assert a.account_id == b.account_id
    assert (await service.account_view(a.account_id))["balance"] == 3


async def test_settlement_waits_for_a_write_lock_held_elsewhere(sqlite_url: str, services: ServiceFactory) -> None:
    """Another process (the CLI, a second worker) holding SQLite's write lock delays a
    settlement without failing it, and the event loop keeps running meanwhile."""
    service = await services(sqlite_url)
    account_id, key = await account_with_key(service, "locked@example.com", M)
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    r = await service.reserve(principal, model, 100_000, "behind-a-lock")
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        settling = asyncio.ensure_future(service.settle(r, outcome(service, 1000, 100)))
        for _ in range(20):
            await asyncio.sleep(0.01)  # the loop is free while the settlement waits
        assert not settling.done()
        other.execute("COMMIT")
        assert await asyncio.wait_for(settling, 10) == 4500
    finally:
        other.close()
    assert (await service.account_view(account_id))["balance"] == (M - 4500) / M
    await ledger_invariants(service)

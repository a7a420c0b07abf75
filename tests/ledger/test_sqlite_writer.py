"""The SQLite ledger writer process: batches under load go to it, it survives being
killed without losing or doubling a charge, and it stores rows exactly as SQLAlchemy would."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects import sqlite as sqlite_dialect
from tests.ledger.billing_support import ServiceFactory, ledger_invariants
from tests.ledger.test_settlement import account_with_key, count, outcome

from creditgate.ledger import sqlite_writer
from creditgate.ledger.records import Settled, Settlement
from creditgate.ledger.service import BillingService
from creditgate.ledger.sqlite_settlements import LedgerBatchFailed, SqliteSettlements, outcomes_from_wire
from creditgate.ledger.sqlite_writer import LedgerWriter, sqlite_datetime
from creditgate.storage.schema import transactions, usage

M = 1_000_000


def store_of(service: BillingService) -> SqliteSettlements:
    assert service.writer is not None
    store = service.writer.store
    assert isinstance(store, SqliteSettlements)
    return store


async def settle_many(service: BillingService, key: str, ids: list[str]) -> list[int]:
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    reservations = [await service.reserve(principal, model, 100_000, request_id) for request_id in ids]
    return list(await asyncio.gather(*(service.settle(r, outcome(service, 1000, 100)) for r in reservations)))


def test_datetimes_are_stored_in_sqlalchemys_sqlite_format() -> None:
    dialect = sqlite_dialect.dialect()
    process = usage.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    for at in (datetime(2026, 11, 23, 9, 5, 7, 123456, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)):
        assert sqlite_datetime(at) == process(at)


async def test_concurrent_settlements_are_written_by_the_writer_process(
    sqlite_url: str, services: ServiceFactory
) -> None:
    service = await services(sqlite_url)
    account_id, key = await account_with_key(service, "busy@example.com", 10 * M)
    charges = await settle_many(service, key, [f"busy-{i}" for i in range(40)])
    assert charges == [4500] * 40
    store = store_of(service)
    assert store.sent >= 1  # settlements that arrived together went to the process
    view = await service.account_view(account_id)
    assert view["balance"] == (10 * M - 40 * 4500) / M and view["held"] == 0
    await ledger_invariants(service)


async def test_a_killed_writer_is_replaced_and_no_charge_is_lost_or_doubled(
    sqlite_url: str, services: ServiceFactory
) -> None:
    service = await services(sqlite_url)
    account_id, key = await account_with_key(service, "killed@example.com", 10 * M)
    await settle_many(service, key, [f"before-{i}" for i in range(10)])
    store = store_of(service)
    writer = await store._running()
    first_pid = writer.proc.pid
    os.kill(first_pid, signal.SIGSTOP)  # frozen: the next batches wait in its pipe
    settling = asyncio.ensure_future(settle_many(service, key, [f"after-{i}" for i in range(30)]))
    for _ in range(500):
        if writer.replies:
            break
        await asyncio.sleep(0.01)
    assert writer.replies, "no batch reached the writer process"
    os.kill(first_pid, signal.SIGKILL)  # it dies with batches in flight

    charges = await settling
    assert charges == [4500] * 30  # retried, one by one, elsewhere
    replacement = await store._running()
    assert replacement.proc.pid != first_pid and replacement.proc.returncode is None
    assert await count(service, usage) == 40
    async with service.db.reader.connect() as conn:
        usage_txns = (
            await conn.execute(select(func.count()).select_from(transactions).where(transactions.c.type == "USAGE"))
        ).scalar_one()
    assert usage_txns == 40
    view = await service.account_view(account_id)
    assert view["balance"] == (10 * M - 40 * 4500) / M and view["held"] == 0
    await ledger_invariants(service)


async def test_the_writer_stops_when_the_gateway_closes_the_store(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    _, key = await account_with_key(service, "stop@example.com", 10 * M)
    await settle_many(service, key, [f"s-{i}" for i in range(8)])
    writer = await store_of(service)._running()
    await service.close()
    assert writer.proc.returncode == 0


def settlement(request_id: str, account_id: int, charge: int) -> Settlement:
    now = datetime.now(UTC)
    return Settlement(
        request_id, account_id, None, "plain-model", "sim/p", 10, 10, 0, 0, 0, charge, 0, None, False,
        charge, now, 5, "ok", False, None, None, "127.0.0.1", now,
    )  # fmt: skip


async def test_a_replayed_settlement_in_a_batch_is_answered_from_its_record_and_charged_once(
    sqlite_url: str, services: ServiceFactory
) -> None:
    service = await services(sqlite_url)
    account_id, _ = await account_with_key(service, "replay@example.com", 10 * M)
    writer = LedgerWriter(
        sqlite_url.removeprefix("sqlite:///"), service.system, synchronous="normal", busy_timeout_ms=0
    )
    try:
        first = writer.write([settlement("r-1", account_id, 700), settlement("r-2", account_id, 300)])
        again = writer.write(
            [settlement("r-3", account_id, 100), settlement("r-1", account_id, 700), settlement("r-4", account_id, 50)]
        )
    finally:
        writer.close()
    assert [o.charged for o in first if isinstance(o, Settled)] == [700, 300]
    assert [(o.charged, o.replayed) for o in again if isinstance(o, Settled)] == [
        (100, False),
        (700, True),
        (50, False),
    ]
    assert await count(service, usage) == 4
    async with service.db.reader.connect() as conn:
        charged = (await conn.execute(select(func.sum(usage.c.cost)))).scalar_one()
    assert charged == 1150
    service.forget_account(account_id)
    view = await service.account_view(account_id)
    assert view["balance"] == (10 * M - 1150) / M
    await ledger_invariants(service)


async def test_a_busy_wal_is_made_to_start_over_instead_of_growing(
    sqlite_url: str, services: ServiceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under steady traffic some reader is always on an older snapshot when the passive
    checkpoint runs, so the WAL is never found fully copied and would grow forever. Here a
    reader stands in for that traffic: it holds a snapshot while the checkpoint runs and
    lets go a moment later. The restarting checkpoint waits for it; the next commit then
    starts the WAL over."""
    service = await services(sqlite_url)
    account_id, _ = await account_with_key(service, "wal@example.com", 10 * M)
    path = sqlite_url.removeprefix("sqlite:///")
    monkeypatch.setattr(sqlite_writer, "RESTART_FRAMES", 64)
    writer = LedgerWriter(path, service.system, synchronous="normal", busy_timeout_ms=5000)
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for i in range(20):
            writer.write([settlement(f"w-{i}", account_id, 10)])
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM usage").fetchone()  # a snapshot of now
        for i in range(20, 40):
            writer.write([settlement(f"w-{i}", account_id, 10)])
        assert wal_frames(path) > 64
        checkpointing = asyncio.get_running_loop().run_in_executor(None, sqlite_writer.checkpoint, path)
        await asyncio.sleep(0.2)
        reader.execute("COMMIT")  # the reader moves on while the checkpoint waits for it
        await checkpointing
        writer.write([settlement("w-next", account_id, 10)])
        assert wal_frames(path) < 32  # the commit went to the start of the WAL
        assert await count(service, usage) == 41
    finally:
        reader.close()
        writer.close()


def wal_frames(path: str) -> int:
    """Frames in the WAL now, as a passive checkpoint reports them."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        conn.close()


class BrokenDisk:
    """A ledger writer whose transactions never commit."""

    def write(self, batch: list[Settlement]) -> list[Settled | Exception]:
        raise sqlite3.OperationalError("disk I/O error")


def test_a_batch_that_cannot_commit_fails_as_a_whole_in_the_gateway() -> None:
    """Every frame of the failed transaction is answered as failed, and the gateway side
    raises for it, so the group-commit writer retries its settlements one by one."""
    source_r, source_w = os.pipe()
    sink_r, sink_w = os.pipe()
    two = [settlement("f-1", 1, 10), settlement("f-2", 1, 10)]
    sqlite_writer.write_frames(source_w, [orjson.dumps(two), orjson.dumps(two[:1])])
    os.close(source_w)
    sqlite_writer.serve(BrokenDisk(), source_r, sink_w)  # type: ignore[arg-type]  # returns at end of input
    os.close(sink_w)
    answers = sqlite_writer.FrameReader(sink_r).frames(10)
    os.close(source_r)
    os.close(sink_r)
    assert len(answers) == 2
    for answer, expected in zip(answers, (2, 1), strict=True):
        with pytest.raises(LedgerBatchFailed, match="disk I/O error"):
            outcomes_from_wire(orjson.loads(answer), expected)

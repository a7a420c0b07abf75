"""Settlements on SQLite through the standard library driver, on a connection of their own.

The group-commit writer hands a whole batch to `SqliteSettlements.apply`, which writes it as
one transaction of plain statements that sqlite3 prepares once and keeps in its statement
cache: no SQLAlchemy, no per-request statement building, no thread hop per statement. The
statements are the same as `settlement.apply_settlement` issues through SQLAlchemy (which
PostgreSQL uses), and values are bound with the schema's own SQLite processors, so both
paths store identical rows.

Where a batch runs: on the event loop's thread when the write lock is free at once (a
settlement costs tens of microseconds, less than handing it to a thread and back, and a
thread would fight the loop for the GIL: measured, running batches in a thread cost more
CPU per request and gave fewer requests per second); in the store's own thread when another
connection or process holds the lock, so that waiting on the busy timeout never stalls the
loop.

Durability: `synchronous=NORMAL` in WAL mode by default. A commit is in the WAL file when
COMMIT returns, so it survives a `kill -9` of the gateway at any moment; only a power cut or
an OS crash may lose the last commits. `billing.sqlite_synchronous: full` fsyncs every
commit instead (about 0.3 ms per commit on the benchmark machine). Automatic checkpoints are
off on this connection, since they would fsync on the loop's thread; the store's thread
checkpoints instead, every `checkpoint_interval` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from sqlalchemy.dialects import sqlite as sqlite_dialect

from creditgate.ledger.postings import allocate
from creditgate.ledger.settlement import Settled, Settlement, describe
from creditgate.storage.db import BUSY_TIMEOUT_MS
from creditgate.storage.schema import usage

log = logging.getLogger("creditgate.ledger")

_DIALECT = sqlite_dialect.dialect()
_datetime_processor = usage.c.created_at.type.dialect_impl(_DIALECT).bind_processor(_DIALECT)
assert _datetime_processor is not None
_as_sqlite_datetime: Callable[[datetime], Any] = _datetime_processor

EARLIER = "SELECT cost FROM usage WHERE request_id = ?"
SPENDABLE_LOTS = (
    "SELECT id, balance FROM ledger_accounts WHERE owner_id = ? AND kind = 'lot' AND expired IS 0 "
    "AND balance > 0 AND expires_at > ? ORDER BY expires_at, id"
)
INSERT_TRANSACTION = (
    "INSERT INTO transactions (account_id, type, amount, description, idempotency_key, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_TRANSFER = "INSERT INTO transfers (txn_id, debit_id, credit_id, amount) VALUES (?, ?, ?, ?)"
USE_TRIAL_CALL = "UPDATE accounts SET trial_calls_left = trial_calls_left - 1 WHERE id = ? AND trial_calls_left > 0"
INSERT_USAGE = (
    "INSERT INTO usage (request_id, account_id, key_id, model, deployment, prompt_tokens, completion_tokens, "
    "cached_tokens, cache_write_tokens, reasoning_tokens, cost, sponsored_cost, hold, sponsor, latency_ms, "
    "status, estimated, raw_usage, error, client_ip, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class LockBusy(Exception):
    """The write lock was taken by someone else when the batch tried to begin."""


class SqliteSettlements:
    """Writes settlement batches to one SQLite database file. `apply` is called by one
    writer at a time (the group-commit task)."""

    def __init__(
        self,
        path: str,
        system: dict[str, int],
        *,
        synchronous: str = "normal",
        checkpoint_interval: float = 1.0,
    ) -> None:
        self.path = path
        self.system = system
        self.revenue = system["revenue"]
        self.sponsor = system["funding:sponsor"]
        self.checkpoint_interval = checkpoint_interval
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="creditgate-sqlite")
        self._conn = self._open(synchronous)
        self._checkpoints: asyncio.Task[None] | None = None

    def _open(self, synchronous: str) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; `_write` begins and commits itself.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, cached_statements=64)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA busy_timeout=0")
        return conn

    def start(self) -> None:
        if self.checkpoint_interval > 0:
            self._checkpoints = asyncio.get_running_loop().create_task(
                self._checkpoint_every(self.checkpoint_interval), name="creditgate-sqlite-checkpoint"
            )

    async def apply(self, batch: list[Settlement]) -> list[Settled | Exception]:
        """Write the batch in one transaction, each settlement in a savepoint of its own;
        raise if the transaction as a whole could not commit."""
        try:
            return self._write(batch, wait=False)
        except LockBusy:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, self._write, batch, True)

    async def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoints
            self._checkpoints = None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(sqlite3.Error):
            await loop.run_in_executor(self._thread, self._checkpoint)
        self._conn.close()
        self._thread.shutdown(wait=True)

    # --- in a transaction -----------------------------------------------------------------

    def _write(self, batch: list[Settlement], wait: bool) -> list[Settled | Exception]:
        conn = self._conn
        if wait:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not wait and exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                    raise LockBusy from None
                raise
            try:
                outcomes: list[Settled | Exception] = []
                for s in batch:
                    conn.execute("SAVEPOINT settlement")
                    try:
                        outcomes.append(self._settle(conn, s))
                    except Exception as exc:
                        conn.execute("ROLLBACK TO settlement")
                        log.error("settlement of %s failed: %r", s.request_id, exc)
                        outcomes.append(exc)
                    conn.execute("RELEASE settlement")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return outcomes
        finally:
            if wait:
                conn.execute("PRAGMA busy_timeout=0")

    def _settle(self, conn: sqlite3.Connection, s: Settlement) -> Settled:
        earlier = conn.execute(EARLIER, (s.request_id,)).fetchone()
        if earlier is not None:
            return Settled(int(earlier[0]), [], False, True)
        at = _as_sqlite_datetime(s.at)
        charged, consumed = 0, []
        if s.charge > 0:
            lots = conn.execute(SPENDABLE_LOTS, (s.account_id, _as_sqlite_datetime(s.hold_taken_at))).fetchall()
            consumed = allocate(lots, s.charge)
            charged = sum(a for _, a in consumed)
            if charged < s.charge:
                log.error("request %s: lots held %d of the %d micros due", s.request_id, charged, s.charge)
            if charged:
                txn = conn.execute(
                    INSERT_TRANSACTION,
                    (s.account_id, "USAGE", -charged, describe(s), f"usage:{s.request_id}", at),
                ).lastrowid
                for lot_id, amount in consumed:  # usually one lot; execute() costs less than executemany()
                    conn.execute(INSERT_TRANSFER, (txn, lot_id, self.revenue, amount))
        trial_used = False
        if s.use_trial_call:
            trial_used = conn.execute(USE_TRIAL_CALL, (s.account_id,)).rowcount == 1
        if s.sponsored > 0:
            txn = conn.execute(
                INSERT_TRANSACTION, (s.account_id, "TRIAL", 0, describe(s), f"usage:{s.request_id}", at)
            ).lastrowid
            conn.execute(INSERT_TRANSFER, (txn, self.sponsor, self.revenue, s.sponsored))
        conn.execute(
            INSERT_USAGE,
            (
                s.request_id,
                s.account_id,
                s.key_id,
                s.model,
                s.deployment,
                s.prompt_tokens,
                s.completion_tokens,
                s.cached_tokens,
                s.cache_write_tokens,
                s.reasoning_tokens,
                charged,
                s.sponsored,
                s.hold,
                s.sponsor,
                s.latency_ms,
                s.status,
                1 if s.estimated else 0,
                s.raw_usage,
                s.error,
                s.client_ip,
                at,
            ),
        )
        return Settled(charged, consumed, trial_used, False)

    # --- checkpoints, in the store's thread -----------------------------------------------

    async def _checkpoint_every(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(seconds)
            try:
                await loop.run_in_executor(self._thread, self._checkpoint)
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint failed (will retry): %s", exc)

    def _checkpoint(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=0)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

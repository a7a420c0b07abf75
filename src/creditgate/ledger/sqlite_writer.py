"""The SQLite ledger writer: a small process of its own that writes settlement batches.

    python -m creditgate.ledger.sqlite_writer PATH SYSTEM_JSON [--synchronous normal|full]

A gateway process starts one (`sqlite_settlements.SqliteSettlements`) and sends it batches
over its stdin; the writer answers each batch on its stdout once the batch is committed.
Frames both ways are a 4-byte big-endian length and an orjson document: in, a list of
`Settlement`s as objects; out, one outcome per settlement, `[charged, [[lot, micros], ...],
trial_used, replayed]` or `{"error": "..."}`, or `{"failed": "..."}` for the whole batch
when its transaction could not commit.

Why a process: a settlement's SQL (a usage row, a transaction, a transfer whose trigger
updates two balances, across nine B-trees) was a third of the gateway's CPU under load, on
the event loop's thread. Here it runs beside the loop on another core, as a database server
would, and the gateway pays only for a frame each way per batch. A thread would not do: it
needs the GIL back after every statement.

Every frame that has arrived by the time the writer is free is written in one transaction
(see `LedgerWriter.write`: a settlement that fails is rolled back alone and reported in its
place). Waiting for the write lock (another gateway process, the CLI) blocks only this
process, up to the busy timeout.

Durability: WAL with `synchronous=NORMAL` by default, so a commit is in the WAL file when
the answer goes out and survives a `kill -9` of the gateway or of this process; `full` also
fsyncs every commit, to survive a power cut. Automatic checkpoints are off on the writing
connection; a thread checkpoints every second instead, so a commit waits on one only when the
WAL has to start over (see `checkpoint`).

The writer exits when its stdin closes (the gateway stopped or died), after the batch in
hand. It imports only the standard library and orjson, so it starts in a few milliseconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sqlite3
import struct
import sys
import threading
from datetime import datetime
from typing import Any

import orjson

from creditgate.ledger.records import Settled, Settlement, allocate, describe

log = logging.getLogger("creditgate.ledger")

FRAME = struct.Struct(">I")
RESTART_FRAMES = 8192  # 32 MiB of WAL at 4 KiB pages: then make the next commit start it over
RESTART_WAIT_MS = 2000  # how long a restarting checkpoint waits for a writer or reader to finish
WAL_SIZE_LIMIT = 64 << 20  # a WAL file that starts over is cut back to this size

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


def sqlite_datetime(at: datetime) -> str:
    """A datetime as the schema stores it on SQLite (SQLAlchemy's DATETIME format; UTC)."""
    return f"{at:%Y-%m-%d %H:%M:%S}.{at.microsecond:06d}"


def settlement_from_wire(d: dict[str, Any]) -> Settlement:
    d["at"] = datetime.fromisoformat(d["at"])
    d["hold_taken_at"] = datetime.fromisoformat(d["hold_taken_at"])
    return Settlement(**d)


def outcome_to_wire(outcome: Settled | Exception) -> Any:
    if isinstance(outcome, Exception):
        return {"error": f"{type(outcome).__name__}: {outcome}"}
    return [outcome.charged, outcome.consumed, outcome.trial_used, outcome.replayed]


class LockBusy(Exception):
    """The write lock was held by another connection when the batch began (busy timeout 0)."""


class LedgerWriter:
    """Writes settlement batches to one SQLite database file."""

    def __init__(self, path: str, system: dict[str, int], *, synchronous: str, busy_timeout_ms: int) -> None:
        self.revenue = system["revenue"]
        self.sponsor = system["funding:sponsor"]
        # isolation_level=None: no implicit transactions; `write` begins and commits itself.
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=64)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        self.conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")

    def write(self, batch: list[Settlement]) -> list[Settled | Exception]:
        """The batch in one transaction; raises if the transaction as a whole could not
        commit. Optimistically every settlement goes straight in. If any of them fails (a
        replay of one settled before, whose idempotency keys are taken, or a real fault),
        the batch is rolled back and written again with each settlement in a savepoint of
        its own, so that a replay is answered from the earlier record and a fault fails
        only its own settlement."""
        conn = self.conn
        self._begin()
        try:
            try:
                outcomes: list[Settled | Exception] = [self.settle(s, replay_check=False) for s in batch]
            except sqlite3.Error:
                conn.execute("ROLLBACK")
                self._begin()
                outcomes = [self._settle_alone(s) for s in batch]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    def _begin(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                raise LockBusy(str(exc)) from None
            raise

    def _settle_alone(self, s: Settlement) -> Settled | Exception:
        conn = self.conn
        conn.execute("SAVEPOINT settlement")
        try:
            return self.settle(s, replay_check=True)
        except Exception as exc:
            conn.execute("ROLLBACK TO settlement")
            log.error("settlement of %s failed: %r", s.request_id, exc)
            return exc
        finally:
            conn.execute("RELEASE settlement")

    def settle(self, s: Settlement, *, replay_check: bool) -> Settled:
        conn = self.conn
        if replay_check:
            earlier = conn.execute(EARLIER, (s.request_id,)).fetchone()
            if earlier is not None:
                return Settled(int(earlier[0]), [], False, True)
        at = sqlite_datetime(s.at)
        charged, consumed = 0, []
        if s.charge > 0:
            lots = conn.execute(SPENDABLE_LOTS, (s.account_id, sqlite_datetime(s.hold_taken_at))).fetchall()
            consumed = allocate(lots, s.charge)
            charged = sum(a for _, a in consumed)
            if charged < s.charge:
                log.error("request %s: lots held %d of the %d micros due", s.request_id, charged, s.charge)
            if charged:
                txn = conn.execute(
                    INSERT_TRANSACTION,
                    (s.account_id, "USAGE", -charged, describe(s), f"usage:{s.request_id}", at),
                ).lastrowid
                for lot_id, amount in consumed:  # usually one lot
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

    def close(self) -> None:
        self.conn.close()


def checkpoint(path: str) -> None:
    """Copy the WAL back into the database without stopping anyone (PASSIVE). Under steady
    writes a passive checkpoint never finds the WAL fully copied at the moment a writer
    begins, so the WAL would never start over and would grow without end (and every page
    look-up walks its index); once it holds `RESTART_FRAMES`, a RESTART checkpoint holds
    writers back for the short rest of the copy so that the next commit starts it afresh."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames >= RESTART_FRAMES:
            conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
            conn.execute("PRAGMA wal_checkpoint(RESTART)")
    except sqlite3.Error as exc:
        log.warning("WAL checkpoint failed (will retry): %s", exc)
    finally:
        conn.close()


def checkpoint_every(path: str, seconds: float, stop: threading.Event) -> None:
    while not stop.wait(seconds):
        checkpoint(path)


class FrameReader:
    """Length-prefixed frames from a pipe. `frames` blocks until at least one is complete,
    then also returns every other frame that has already arrived."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.poll = select.poll()
        self.poll.register(fd, select.POLLIN)
        self.eof = False

    def _fill(self) -> None:
        data = os.read(self.fd, 1 << 20)
        if not data:
            self.eof = True
        self.buffer += data

    def _pop(self) -> bytes | None:
        if len(self.buffer) < FRAME.size:
            return None
        (size,) = FRAME.unpack_from(self.buffer)
        end = FRAME.size + size
        if len(self.buffer) < end:
            return None
        frame = bytes(self.buffer[FRAME.size : end])
        del self.buffer[:end]
        return frame

    def frames(self, limit: int) -> list[bytes]:
        out: list[bytes] = []
        while not out and not self.eof:
            while (frame := self._pop()) is not None:
                out.append(frame)
            if not out:
                self._fill()
        while len(out) < limit and not self.eof and self.poll.poll(0):
            self._fill()
            while (frame := self._pop()) is not None:
                out.append(frame)
        return out


def write_frames(fd: int, payloads: list[bytes]) -> None:
    data = b"".join(FRAME.pack(len(p)) + p for p in payloads)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve(writer: LedgerWriter, source: int, sink: int, *, max_batch: int = 1024) -> None:
    """Answer frames until the source closes. Every frame that has arrived by the time the
    writer is free is written in one transaction (group commit, where the writer knows best
    when it is free); each frame gets its own answer, in order."""
    reader = FrameReader(source)
    while frames := reader.frames(max_batch):
        batches = [[settlement_from_wire(d) for d in orjson.loads(frame)] for frame in frames]
        batch = [s for b in batches for s in b]
        try:
            outcomes = [outcome_to_wire(o) for o in writer.write(batch)]
        except Exception as exc:  # the transaction could not commit: each frame is told so
            log.warning("a batch of %d settlements failed to commit: %r", len(batch), exc)
            failed = orjson.dumps({"failed": f"{type(exc).__name__}: {exc}"})
            write_frames(sink, [failed] * len(batches))
            continue
        answers, start = [], 0
        for b in batches:
            answers.append(orjson.dumps(outcomes[start : start + len(b)]))
            start += len(b)
        write_frames(sink, answers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="creditgate-ledger-writer")
    parser.add_argument("path")
    parser.add_argument("system", help="the system ledger accounts' ids, as a JSON object")
    parser.add_argument("--synchronous", choices=("normal", "full"), default="normal")
    parser.add_argument("--busy-timeout-ms", type=int, default=10_000)
    parser.add_argument("--checkpoint-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group; the gateway drains its queue and then closes
    # our stdin, which is when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s (ledger writer): %(message)s")
    writer = LedgerWriter(
        args.path, orjson.loads(args.system), synchronous=args.synchronous, busy_timeout_ms=args.busy_timeout_ms
    )
    stop = threading.Event()
    checkpoints = threading.Thread(
        target=checkpoint_every, args=(args.path, args.checkpoint_interval, stop), daemon=True
    )
    if args.checkpoint_interval > 0:
        checkpoints.start()
    try:
        serve(writer, sys.stdin.fileno(), sys.stdout.fileno())
    finally:
        stop.set()
        writer.close()
        checkpoint(args.path)


if __name__ == "__main__":
    main()

"""Settlements on SQLite: where each batch is written, on the event loop or in the ledger
writer process.

- **The settlement of a request alone in the gateway** (no other hold in flight: one
  request at a time) is written right here (`write_now`), on the loop's thread, on a
  connection of its own: the loop has nothing else to do, and a hop to another process
  would only add its latency.
- **Everything else** (whatever the group-commit writer batches under load, and a lone one
  when another connection holds the write lock) goes to the ledger writer process
  (`python -m creditgate.ledger.sqlite_writer`), which this store starts for the database
  file: one frame on its stdin per batch, one frame back once the batch is committed. The
  SQL then runs on another core; the loop pays for one `orjson.dumps` and a pipe write per
  batch. Up to `depth` batches are in the pipe at once, and the writer commits every frame
  that has arrived by the time it is free in one transaction.

Both paths run the same `LedgerWriter` code and keep the same durability (see
`sqlite_writer.py`); a settlement is written here only when no batch is in the pipe, and
SQLite's write lock keeps the two connections apart in any case.

If the writer process dies, the batches in the pipe fail with `LedgerWriterGone` (and a
batch whose transaction could not commit with `LedgerBatchFailed`); the group-commit writer
retries their settlements one by one, and the next batch that needs
the process starts a new one. Settlements are idempotent by request id, so one that was
committed just before the writer died is not charged twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from creditgate.ledger.records import Settled, Settlement
from creditgate.ledger.sqlite_writer import FRAME, LedgerWriter, LockBusy
from creditgate.storage.db import BUSY_TIMEOUT_MS

log = logging.getLogger("creditgate.ledger")


class LedgerWriterGone(Exception):
    """The ledger writer process stopped before it answered a batch."""


class SettlementFailed(Exception):
    """The ledger writer could not record one settlement (its savepoint was rolled back)."""


class LedgerBatchFailed(Exception):
    """The ledger writer could not commit a batch's transaction (nothing of it was written)."""


def outcomes_from_wire(raw: Any, expected: int) -> list[Settled | Exception]:
    """The writer's answer to one batch of `expected` settlements; raises if the batch as a
    whole failed, so that its settlements are retried one by one."""
    if isinstance(raw, dict):
        raise LedgerBatchFailed(str(raw.get("failed")))
    if len(raw) != expected:
        raise LedgerWriterGone(f"the ledger writer answered {len(raw)} outcomes for {expected} settlements")
    return [outcome_from_wire(o) for o in raw]


def outcome_from_wire(raw: Any) -> Settled | Exception:
    if isinstance(raw, dict):
        return SettlementFailed(str(raw.get("error")))
    charged, consumed, trial_used, replayed = raw
    return Settled(charged, [(lot, micros) for lot, micros in consumed], trial_used, replayed)


@dataclass(slots=True)
class WriterProcess:
    """A running ledger writer and the batches it has not answered yet, oldest first."""

    proc: asyncio.subprocess.Process
    replies: deque[asyncio.Future[Any]] = field(default_factory=deque)
    reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and self.reader is not None and not self.reader.done()


class SqliteSettlements:
    """Writes settlement batches to one SQLite database file. Batches are handed over in
    commit order by one caller (the group-commit task), up to `depth` at a time."""

    depth = 2

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
        self.synchronous = synchronous
        self.args = [
            path,
            orjson.dumps(system).decode(),
            "--synchronous",
            synchronous,
            "--busy-timeout-ms",
            str(BUSY_TIMEOUT_MS),
            "--checkpoint-interval",
            str(checkpoint_interval),
        ]
        self.local: LedgerWriter | None = None
        self._writer: WriterProcess | None = None
        self._spawning: asyncio.Task[WriterProcess] | None = None
        self.sent = 0  # batches handed to the writer process, for tests

    def start(self) -> None:
        """Open the local connection and start the writer process (it also checkpoints)."""
        self.local = LedgerWriter(self.path, self.system, synchronous=self.synchronous, busy_timeout_ms=0)
        self._spawn_soon()

    def write_now(self, settlement: Settlement) -> list[Settled | Exception] | None:
        """A lone settlement, written on this thread at once; None when batches are in the
        pipe or another connection holds the write lock."""
        writer = self._writer
        if self.local is None or (writer is not None and writer.replies):
            return None
        try:
            return self.local.write([settlement])
        except LockBusy:
            return None  # another process is writing: wait for it in the writer process, not here

    async def apply(self, batch: list[Settlement]) -> list[Settled | Exception]:
        """Hand the batch to the writer process and return its outcomes once it committed;
        raise if the transaction as a whole could not commit."""
        writer = await self._running()
        stdin = writer.proc.stdin
        assert stdin is not None
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        writer.replies.append(reply)
        payload = orjson.dumps(batch)
        stdin.write(FRAME.pack(len(payload)) + payload)
        self.sent += 1
        with contextlib.suppress(ConnectionError):
            await stdin.drain()  # a dead writer is reported by its reader, below
        return outcomes_from_wire(await reply, len(batch))

    async def _running(self) -> WriterProcess:
        if self._writer is not None and self._writer.alive:
            return self._writer
        spawning = self._spawning or self._spawn_soon()
        try:
            self._writer = await spawning
        finally:
            if self._spawning is spawning:
                self._spawning = None
        return self._writer

    def _spawn_soon(self) -> asyncio.Task[WriterProcess]:
        self._spawning = asyncio.get_running_loop().create_task(self._spawn(), name="creditgate-ledger-writer")
        return self._spawning

    async def _spawn(self) -> WriterProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "creditgate.ledger.sqlite_writer",
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        writer = WriterProcess(proc)
        writer.reader = asyncio.get_running_loop().create_task(self._read(writer), name="creditgate-ledger-replies")
        log.debug("ledger writer started (pid %d)", proc.pid)
        return writer

    async def _read(self, writer: WriterProcess) -> None:
        """Hand each answer to the oldest batch waiting; when the writer stops, fail the rest."""
        stdout = writer.proc.stdout
        assert stdout is not None
        try:
            while True:
                (size,) = FRAME.unpack(await stdout.readexactly(FRAME.size))
                outcomes = orjson.loads(await stdout.readexactly(size))
                reply = writer.replies.popleft()
                if not reply.done():
                    reply.set_result(outcomes)
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            if writer.proc.stdin is not None:
                writer.proc.stdin.close()
            status = await writer.proc.wait()
            if writer.replies:
                log.error("the ledger writer (pid %d) stopped with status %s", writer.proc.pid, status)
            while writer.replies:
                reply = writer.replies.popleft()
                if not reply.done():
                    reply.set_exception(
                        LedgerWriterGone(
                            f"the ledger writer process stopped (exit status {status}); a new one is started"
                        )
                    )

    async def close(self) -> None:
        """Close the writer's stdin and wait for it to finish (it checkpoints on the way out)."""
        if self._spawning is not None:
            spawning, self._spawning = self._spawning, None
            with contextlib.suppress(Exception):
                self._writer = await spawning
        writer, self._writer = self._writer, None
        if writer is not None:
            if writer.proc.stdin is not None:
                writer.proc.stdin.close()
            try:
                await asyncio.wait_for(writer.proc.wait(), 30)
            except TimeoutError:
                log.error("the ledger writer (pid %d) did not stop; killing it", writer.proc.pid)
                writer.proc.kill()
            if writer.reader is not None:
                await writer.reader
        if self.local is not None:
            self.local.close()
            self.local = None

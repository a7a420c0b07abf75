"""Settlement: one request's charge and usage record, and the group-commit writer that
commits many of them per database transaction.

A settlement is idempotent by request id: its usage row and its USAGE transaction both
carry a UNIQUE key derived from it, and `apply_settlement` first looks for an earlier one,
so a settlement retried after an ambiguous commit failure charges nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from creditgate.ledger.postings import post, spendable_lots
from creditgate.ledger.records import Settled, Settlement, allocate, describe
from creditgate.storage.schema import accounts, usage

log = logging.getLogger("creditgate.ledger")


async def apply_settlement(conn: AsyncConnection, system: dict[str, int], s: Settlement, *, lock: bool) -> Settled:
    earlier = (await conn.execute(select(usage.c.cost).where(usage.c.request_id == s.request_id))).first()
    if earlier is not None:
        return Settled(int(earlier.cost), [], False, True)
    charged, consumed = 0, []
    if s.charge > 0:
        lots = await spendable_lots(conn, s.account_id, s.hold_taken_at, lock=lock)
        consumed = allocate(lots, s.charge)
        charged = sum(a for _, a in consumed)
        if charged < s.charge:
            # Cannot happen while holds are honoured; never push a lot below zero for it.
            log.error("request %s: lots held %d of the %d micros due", s.request_id, charged, s.charge)
        if charged:
            await post(
                conn,
                account_id=s.account_id,
                type="USAGE",
                amount=-charged,
                description=describe(s),
                legs=[(lot_id, system["revenue"], amount) for lot_id, amount in consumed],
                at=s.at,
                idempotency_key=f"usage:{s.request_id}",
            )
    trial_used = False
    if s.use_trial_call:
        result = await conn.execute(
            update(accounts)
            .where(accounts.c.id == s.account_id, accounts.c.trial_calls_left > 0)
            .values(trial_calls_left=accounts.c.trial_calls_left - 1)
        )
        trial_used = result.rowcount == 1
    if s.sponsored > 0:
        await post(
            conn,
            account_id=s.account_id,
            type="TRIAL",
            amount=0,
            description=describe(s),
            legs=[(system["funding:sponsor"], system["revenue"], s.sponsored)],
            at=s.at,
            idempotency_key=f"usage:{s.request_id}",
        )
    await conn.execute(
        insert(usage).values(
            request_id=s.request_id,
            account_id=s.account_id,
            key_id=s.key_id,
            model=s.model,
            deployment=s.deployment,
            prompt_tokens=s.prompt_tokens,
            completion_tokens=s.completion_tokens,
            cached_tokens=s.cached_tokens,
            cache_write_tokens=s.cache_write_tokens,
            reasoning_tokens=s.reasoning_tokens,
            cost=charged,
            sponsored_cost=s.sponsored,
            hold=s.hold,
            sponsor=s.sponsor,
            latency_ms=s.latency_ms,
            status=s.status,
            estimated=s.estimated,
            raw_usage=s.raw_usage,
            error=s.error,
            client_ip=s.client_ip,
            created_at=s.at,
        )
    )
    return Settled(charged, consumed, trial_used, False)


Committed = Callable[[Settlement, Settled | None], Awaitable[None]]
Pending = tuple[Settlement, "asyncio.Future[Settled]"]


class SettlementStore(Protocol):
    """Where settlements are written: one batch per database transaction."""

    # How many batches may be in `apply` at once. Batches still commit one after another,
    # in the order they were handed over; a depth above 1 only lets the next batch be sent
    # while the previous one is being written.
    depth: int

    def start(self) -> None: ...

    def write_now(self, settlement: Settlement) -> list[Settled | Exception] | None:
        """Write one settlement synchronously if that can be done at once without waiting
        (no other writer, nothing in flight); None if it has to go through `apply`."""
        ...

    async def apply(self, batch: list[Settlement]) -> list[Settled | Exception]:
        """Write the batch in one transaction, each settlement in a savepoint of its own, so
        one that fails is rolled back alone (its exception takes its place in the result);
        raise if the transaction as a whole could not commit."""
        ...

    async def close(self) -> None: ...


class SqlAlchemySettlements:
    """Settlements through SQLAlchemy Core on the writer engine (PostgreSQL, and SQLite
    databases that are not a plain file)."""

    depth = 1

    def __init__(self, engine: AsyncEngine, system: dict[str, int], *, row_locks: bool) -> None:
        self.engine = engine
        self.system = system
        self.row_locks = row_locks

    def start(self) -> None:
        pass

    def write_now(self, settlement: Settlement) -> list[Settled | Exception] | None:
        return None  # every statement is a round trip to the database: never at once

    async def apply(self, batch: list[Settlement]) -> list[Settled | Exception]:
        outcomes: list[Settled | Exception] = []
        async with self.engine.begin() as conn:
            for settlement in batch:
                try:
                    async with conn.begin_nested():
                        outcomes.append(await apply_settlement(conn, self.system, settlement, lock=self.row_locks))
                except Exception as exc:
                    log.exception("settlement of %s failed", settlement.request_id)
                    outcomes.append(exc)
        return outcomes

    async def close(self) -> None:
        pass


class GroupCommitWriter:
    """One task that commits settlements in batches.

    The task takes every settlement queued at the moment it wakes (at most `max_batch`) and
    commits them together: when the writer is idle a settlement is committed at once, and
    under load the settlements that arrive while one commit is being written make up the
    next batch. With `max_wait` > 0 a settlement also waits up to that long for company.
    When the store allows it (`depth` > 1) the next batch is handed over while the previous
    one is still being written, so the store never waits for the event loop between commits.

    Each settlement runs in its own savepoint, so one that fails is rolled back alone and
    its batch-mates commit. If a commit itself fails, each of its settlements is retried in a
    transaction of its own (idempotency makes that safe). `on_done` runs for every
    settlement after its fate is known (with None when it failed), in commit order, before
    its caller wakes. `lock` is held from a batch's hand-over until its `on_done`s ran, so
    in-memory state changes exactly when the database did; it is let go at least every
    `max_run` batches, for whoever waits for it.
    """

    def __init__(
        self,
        store: SettlementStore,
        on_done: Committed,
        lock: asyncio.Lock,
        *,
        max_wait: float,
        max_batch: int = 256,
        max_run: int = 64,
    ) -> None:
        self.store = store
        self.on_done = on_done
        self.lock = lock
        self.max_wait = max_wait
        self.max_batch = max_batch
        self.max_run = max_run
        self.batches = 0  # committed transactions, for tests and metrics
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._wake = asyncio.Event()  # a settlement was queued, or a batch's commit ended
        self._busy = False  # the task has batches in hand
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.store.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="creditgate-group-commit")

    async def submit(self, settlement: Settlement, *, alone: bool = False) -> Settled:
        """Queue a settlement; return once it is committed (or raise why it could not be).
        A caller that is cancelled meanwhile does not stop the commit. `alone`: no other
        request is in flight, so nothing would share a batch with this one; it is then
        written right away if the store can do that without waiting."""
        if self._task is None or self._task.done():
            raise RuntimeError("the settlement writer is not running")
        future: asyncio.Future[Settled] = asyncio.get_running_loop().create_future()
        if alone and not self._busy and self.max_wait <= 0 and not self.lock.locked() and self._queue.empty():
            # Nothing else is being written or coming: commit right here if the store can do
            # it without waiting, and skip the hand-over to the writer task and back.
            async with self.lock:  # free, so taken without suspending
                try:
                    outcomes = self.store.write_now(settlement)
                except Exception as exc:
                    await self._failed([(settlement, future)], exc)
                    return future.result()
                if outcomes is not None:
                    self.batches += 1
                    await self._finish([(settlement, future)], outcomes)
                    return future.result()
        self._queue.put_nowait((settlement, future))
        self._wake.set()
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Commit everything queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self.store.close()

    async def _run(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        wake = self._wake
        while True:
            batch = await self._first_batch()
            self._busy = True
            async with self.lock:
                in_flight: deque[tuple[list[Pending], asyncio.Task[list[Settled | Exception]]]] = deque()
                handed = 0
                while batch or in_flight:
                    if batch:
                        in_flight.append((batch, loop.create_task(self.store.apply([s for s, _ in batch]))))
                        in_flight[-1][1].add_done_callback(self._wake_up)
                        handed += 1
                        batch = []
                    can_hand = len(in_flight) < self.store.depth and handed < self.max_run
                    if can_hand and not queue.empty():
                        batch = self._take([queue.get_nowait()])
                        continue
                    if can_hand and not in_flight[0][1].done():
                        # Wait for whichever comes first: a settlement to hand over, or the
                        # oldest batch's commit.
                        wake.clear()
                        await wake.wait()
                        continue
                    done, task = in_flight.popleft()
                    try:
                        await self._commit(done, task)
                    finally:
                        for _ in done:
                            queue.task_done()
            self._busy = False

    def _wake_up(self, _: object = None) -> None:
        self._wake.set()

    async def _first_batch(self) -> list[Pending]:
        queue = self._queue
        loop = asyncio.get_running_loop()
        batch = self._take([await queue.get()])
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch and (remaining := deadline - loop.time()) > 0:
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
            self._take(batch)
        return batch

    def _take(self, batch: list[Pending]) -> list[Pending]:
        """`batch` with whatever else is queued now added, up to `max_batch`."""
        queue = self._queue
        while len(batch) < self.max_batch and not queue.empty():
            batch.append(queue.get_nowait())
        return batch

    async def _commit(self, batch: list[Pending], applying: Awaitable[list[Settled | Exception]]) -> None:
        """Wait for the batch's commit and finish it."""
        try:
            outcomes = await applying
        except Exception as exc:
            await self._failed(batch, exc)
            return
        self.batches += 1
        await self._finish(batch, outcomes)

    async def _failed(self, batch: list[Pending], exc: Exception) -> None:
        """The batch's transaction did not commit: retry each of its settlements in a
        transaction of its own; a lone one fails with the error."""
        if len(batch) == 1:
            log.exception("settlement of %s failed to commit", batch[0][0].request_id, exc_info=exc)
            await self._finish(batch, [exc])
            return
        log.warning("a batch of %d settlements failed to commit (%s); retrying one by one", len(batch), exc)
        for item in batch:
            await self._commit([item], self.store.apply([item[0]]))

    async def _finish(self, batch: list[Pending], outcomes: list[Settled | Exception]) -> None:
        for (settlement, future), outcome in zip(batch, outcomes, strict=True):
            ok = outcome if isinstance(outcome, Settled) else None
            try:
                await self.on_done(settlement, ok)
            except Exception:
                log.exception("updating caches after settling %s failed", settlement.request_id)
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

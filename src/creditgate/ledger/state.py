"""What the hot path knows about an account without asking the database.

An `AccountState` mirrors committed rows only (lots, trial calls, today's spend). Holds
live apart from it, in a `HoldBook`, so a cache entry can be dropped and reloaded at any
time without forgetting money that is promised to requests in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol


@dataclass(slots=True)
class Lot:
    id: int
    kind: str
    amount: int
    remaining: int
    expires_at: datetime
    created_at: datetime


@dataclass(slots=True)
class AccountState:
    id: int
    email: str
    name: str
    status: str
    kind: str
    trial_calls_left: int
    topped_up: int
    daily_cap: int | None
    created_at: datetime
    lots: list[Lot]  # unexpired-in-the-ledger lots with money left, soonest expiry first
    day: date  # the billing day `spent_today` belongs to
    spent_today: int = 0
    key_spent_today: dict[int, int] = field(default_factory=dict)

    def balance(self, now: datetime) -> int:
        """Money in lots that can still be spent at `now`."""
        return sum(lot.remaining for lot in self.lots if lot.expires_at > now)

    def roll_day(self, today: date) -> None:
        if today != self.day:
            self.day = today
            self.spent_today = 0
            self.key_spent_today.clear()

    def consume(self, consumed: list[tuple[int, int]]) -> None:
        """Apply committed lot debits (lot id, micros)."""
        by_id = {lot.id: lot for lot in self.lots}
        for lot_id, amount in consumed:
            lot = by_id.get(lot_id)
            if lot is not None:
                lot.remaining -= amount
        self.lots = [lot for lot in self.lots if lot.remaining > 0]


@dataclass(frozen=True, slots=True)
class HoldLimits:
    """The limits a new hold must fit under, measured without holds.

    funds: spendable lot balance; floor: the minimum balance that must remain available
    (the hold must fit in `funds - held`, and so must `floor`); account_room / key_room: the
    daily cap minus what was spent today, None when there is no cap."""

    funds: int
    floor: int
    account_room: int | None
    key_room: int | None


class HoldBook(Protocol):
    """Holds in flight. `try_hold` checks and takes in one atomic step, so concurrent
    reservations can never promise the same money twice."""

    async def try_hold(
        self,
        request_id: str,
        account_id: int,
        key_id: int | None,
        amount: int,
        started_at: datetime,
        limits: HoldLimits,
    ) -> str | None:
        """Take the hold and return None, or return which limit it breaks: "funds",
        "account_cap" or "key_cap"."""
        ...

    async def release(self, request_id: str) -> int:
        """Drop the hold; return its amount (0 when there was none)."""
        ...

    def held(self, account_id: int) -> int: ...

    def oldest(self) -> datetime | None:
        """When the oldest hold in flight was taken: lots that expired before it cannot be
        promised to any request, so the expiry sweep may close them."""
        ...

    def __len__(self) -> int:
        """Holds in flight: requests between their hold and their settlement."""
        ...


@dataclass(slots=True)
class _Hold:
    account_id: int
    key_id: int | None
    amount: int
    started_at: datetime


class MemoryHolds:
    """Holds for one gateway process: plain dicts, mutated without an await in between, so
    the event loop makes each `try_hold` atomic."""

    def __init__(self) -> None:
        self._holds: dict[str, _Hold] = {}
        self._by_account: dict[int, int] = {}
        self._by_key: dict[int, int] = {}

    async def try_hold(
        self,
        request_id: str,
        account_id: int,
        key_id: int | None,
        amount: int,
        started_at: datetime,
        limits: HoldLimits,
    ) -> str | None:
        held = self._by_account.get(account_id, 0)
        if limits.funds - held < max(amount, limits.floor):
            return "funds"
        if limits.account_room is not None and held + amount > limits.account_room:
            return "account_cap"
        key_held = self._by_key.get(key_id, 0) if key_id is not None else 0
        if limits.key_room is not None and key_held + amount > limits.key_room:
            return "key_cap"
        if request_id in self._holds:
            raise ValueError(f"request {request_id} already holds credits")
        self._holds[request_id] = _Hold(account_id, key_id, amount, started_at)
        self._by_account[account_id] = held + amount
        if key_id is not None:
            self._by_key[key_id] = key_held + amount
        return None

    async def release(self, request_id: str) -> int:
        hold = self._holds.pop(request_id, None)
        if hold is None:
            return 0
        self._by_account[hold.account_id] -= hold.amount
        if not self._by_account[hold.account_id]:
            del self._by_account[hold.account_id]
        if hold.key_id is not None:
            self._by_key[hold.key_id] -= hold.amount
            if not self._by_key[hold.key_id]:
                del self._by_key[hold.key_id]
        return hold.amount

    def held(self, account_id: int) -> int:
        return self._by_account.get(account_id, 0)

    def held_by_key(self, key_id: int) -> int:
        return self._by_key.get(key_id, 0)

    def oldest(self) -> datetime | None:
        return min((h.started_at for h in self._holds.values()), default=None)

    def __len__(self) -> int:
        return len(self._holds)

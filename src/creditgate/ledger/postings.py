"""Ledger writes and reads on a database connection: transactions made of transfers, lots,
FIFO-by-expiry consumption and expiry.

Every function here runs inside a transaction its caller opened, so a caller can put many
of them into one commit (group commit) or one savepoint each. Cached balances are kept by
a database trigger on `transfers` (see the migration), never by this code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from creditgate.accounts import as_utc
from creditgate.ledger.state import AccountState, Lot
from creditgate.storage.schema import (
    SYSTEM_ACCOUNTS,
    accounts,
    ledger_accounts,
    transactions,
    transfers,
    usage,
)

LOT_KINDS = ("topup", "bonus", "grant", "trial")
TXN_TYPE = {"topup": "TOPUP", "bonus": "BONUS", "grant": "GRANT", "trial": "TRIAL"}

Leg = tuple[int, int, int]  # debit ledger account, credit ledger account, micros


async def system_accounts(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(
        select(ledger_accounts.c.code, ledger_accounts.c.id).where(ledger_accounts.c.kind == "system")
    )
    found = {str(code): int(id_) for code, id_ in rows}
    missing = set(SYSTEM_ACCOUNTS) - set(found)
    if missing:
        raise RuntimeError(f"system ledger accounts missing: {', '.join(sorted(missing))}; run the migrations")
    return found


async def post(
    conn: AsyncConnection,
    *,
    account_id: int | None,
    type: str,
    amount: int,
    description: str,
    legs: list[Leg],
    at: datetime,
    idempotency_key: str | None = None,
) -> int:
    """One user-visible transaction made of zero-sum transfers; returns its id."""
    txn_id = int(
        (
            await conn.execute(
                insert(transactions)
                .values(
                    account_id=account_id,
                    type=type,
                    amount=amount,
                    description=description,
                    idempotency_key=idempotency_key,
                    created_at=at,
                )
                .returning(transactions.c.id)
            )
        ).scalar_one()
    )
    legs = [leg for leg in legs if leg[2] != 0]
    if legs:
        await conn.execute(
            insert(transfers),
            [{"txn_id": txn_id, "debit_id": d, "credit_id": c, "amount": a} for d, c, a in legs],
        )
    return txn_id


async def open_lot(
    conn: AsyncConnection, *, owner_id: int, kind: str, amount: int, expires_at: datetime, at: datetime
) -> int:
    result = await conn.execute(
        insert(ledger_accounts)
        .values(kind="lot", owner_id=owner_id, lot_kind=kind, amount=amount, expires_at=expires_at, created_at=at)
        .returning(ledger_accounts.c.id)
    )
    return int(result.scalar_one())


@dataclass(frozen=True, slots=True)
class CreditResult:
    transaction_id: int
    lot_id: int
    account_id: int
    kind: str
    amount: int
    expires_at: datetime
    replayed: bool


async def credit_by_key(conn: AsyncConnection, idempotency_key: str) -> CreditResult | None:
    """The credit posted earlier under `idempotency_key`, if any."""
    row = (
        await conn.execute(
            select(
                transactions.c.id,
                transactions.c.account_id,
                transfers.c.credit_id,
                transfers.c.amount,
                ledger_accounts.c.lot_kind,
                ledger_accounts.c.expires_at,
            )
            .join(transfers, transfers.c.txn_id == transactions.c.id)
            .join(ledger_accounts, ledger_accounts.c.id == transfers.c.credit_id)
            .where(transactions.c.idempotency_key == idempotency_key)
        )
    ).first()
    if row is None:
        return None
    expires = as_utc(row.expires_at)
    assert expires is not None
    return CreditResult(row.id, row.credit_id, row.account_id, row.lot_kind, row.amount, expires, True)


async def add_credits(
    conn: AsyncConnection,
    system: dict[str, int],
    *,
    account_id: int,
    amount: int,
    kind: str,
    expires_in: timedelta,
    at: datetime,
    description: str,
    idempotency_key: str | None,
) -> CreditResult:
    """A new lot of `amount` micros funded from the matching funding account."""
    expires_at = at + expires_in
    lot_id = await open_lot(conn, owner_id=account_id, kind=kind, amount=amount, expires_at=expires_at, at=at)
    funding = system["funding:sponsor" if kind == "trial" else f"funding:{kind}"]
    txn_id = await post(
        conn,
        account_id=account_id,
        type=TXN_TYPE[kind],
        amount=amount,
        description=description,
        legs=[(funding, lot_id, amount)],
        at=at,
        idempotency_key=idempotency_key,
    )
    if kind == "topup":
        await conn.execute(
            update(accounts).where(accounts.c.id == account_id).values(topped_up=accounts.c.topped_up + amount)
        )
    return CreditResult(txn_id, lot_id, account_id, kind, amount, expires_at, False)


async def spendable_lots(
    conn: AsyncConnection, account_id: int, unexpired_at: datetime, *, lock: bool
) -> list[tuple[int, int]]:
    """(lot id, balance) of the lots that can pay, soonest expiry first."""
    query = (
        select(ledger_accounts.c.id, ledger_accounts.c.balance)
        .where(
            ledger_accounts.c.owner_id == account_id,
            ledger_accounts.c.kind == "lot",
            ledger_accounts.c.expired.is_(False),
            ledger_accounts.c.balance > 0,
            ledger_accounts.c.expires_at > unexpired_at,
        )
        .order_by(ledger_accounts.c.expires_at, ledger_accounts.c.id)
    )
    if lock:
        query = query.with_for_update()
    return [(int(i), int(b)) for i, b in await conn.execute(query)]


@dataclass(frozen=True, slots=True)
class Expired:
    lot_id: int
    owner_id: int
    amount: int


async def expire_lot(conn: AsyncConnection, system: dict[str, int], lot_id: int, at: datetime) -> Expired | None:
    """Close one lot: post what is left of it to `expired` and mark it. Idempotent."""
    row = (
        await conn.execute(
            select(ledger_accounts.c.owner_id, ledger_accounts.c.balance, ledger_accounts.c.lot_kind).where(
                ledger_accounts.c.id == lot_id, ledger_accounts.c.expired.is_(False)
            )
        )
    ).first()
    if row is None:
        return None
    owner, balance = int(row.owner_id), int(row.balance)
    if balance > 0:
        await post(
            conn,
            account_id=owner,
            type="EXPIRY",
            amount=-balance,
            description=f"{row.lot_kind} credits expired (lot {lot_id})",
            legs=[(lot_id, system["expired"], balance)],
            at=at,
            idempotency_key=f"expiry:{lot_id}",
        )
    await conn.execute(update(ledger_accounts).where(ledger_accounts.c.id == lot_id).values(expired=True))
    return Expired(lot_id, owner, balance)


async def lots_due(conn: AsyncConnection, cutoff: datetime, limit: int = 10_000) -> list[int]:
    rows = await conn.execute(
        select(ledger_accounts.c.id)
        .where(
            ledger_accounts.c.kind == "lot",
            ledger_accounts.c.expired.is_(False),
            ledger_accounts.c.expires_at <= cutoff,
        )
        .order_by(ledger_accounts.c.expires_at, ledger_accounts.c.id)
        .limit(limit)
    )
    return [int(r[0]) for r in rows]


async def load_account(
    conn: AsyncConnection, account_id: int, *, day_start: datetime, today: date
) -> AccountState | None:
    """An account's committed state: its row, its open lots and what it spent today."""
    row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
    if row is None:
        return None
    lot_rows = await conn.execute(
        select(ledger_accounts)
        .where(
            ledger_accounts.c.owner_id == account_id,
            ledger_accounts.c.kind == "lot",
            ledger_accounts.c.expired.is_(False),
            ledger_accounts.c.balance > 0,
        )
        .order_by(ledger_accounts.c.expires_at, ledger_accounts.c.id)
    )
    lots = []
    for r in lot_rows:
        expires, created = as_utc(r.expires_at), as_utc(r.created_at)
        assert expires is not None and created is not None
        lots.append(Lot(int(r.id), r.lot_kind, int(r.amount), int(r.balance), expires, created))
    spent = await conn.execute(
        select(usage.c.key_id, func.sum(usage.c.cost))
        .where(usage.c.account_id == account_id, usage.c.created_at >= day_start)
        .group_by(usage.c.key_id)
    )
    per_key = {int(k) if k is not None else -1: int(total or 0) for k, total in spent}
    created_at = as_utc(row.created_at)
    assert created_at is not None
    return AccountState(
        id=int(row.id),
        email=row.email,
        name=row.name,
        status=row.status,
        kind=row.kind,
        trial_calls_left=int(row.trial_calls_left),
        topped_up=int(row.topped_up),
        daily_cap=row.daily_cap,
        created_at=created_at,
        lots=lots,
        day=today,
        spent_today=sum(per_key.values()),
        key_spent_today={k: v for k, v in per_key.items() if k >= 0},
    )

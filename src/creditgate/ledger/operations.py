"""The operator's and the developer's account operations: accounts, keys, credits, views of
balances, transactions and usage. Shared by the admin API, the account API and the CLI;
every change also drops the matching in-memory cache (here at once, elsewhere through
`cache_events`)."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from creditgate import accounts as acc
from creditgate.config import BillingConfig, CurrencyConfig
from creditgate.errors import BadRequest, Conflict, NotFound, Unauthorized
from creditgate.ledger.postings import (
    LOT_KINDS,
    CreditResult,
    Expired,
    add_credits,
    credit_by_key,
    expire_lot,
)
from creditgate.ledger.state import AccountState, HoldBook
from creditgate.money import json_amount
from creditgate.storage.db import Database
from creditgate.storage.schema import accounts, transactions, usage

MAX_PAGE = 1000


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, value = text.partition(":")
        if version != "v1":
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("cursor is not one this API returned; pass next_cursor as given", param="cursor") from None


def page_limit(raw: str | int | None, default: int = 100) -> int:
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest("limit must be a whole number from 1 to 1000", param="limit") from None
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be from 1 to {MAX_PAGE}; got {limit}", param="limit")
    return limit


def iso(value: datetime | None) -> str | None:
    value = acc.as_utc(value)
    return value.isoformat() if value is not None else None


class Operations:
    """Mixed into `BillingService`; these attributes are set by its constructor."""

    db: Database
    config: BillingConfig
    currency: CurrencyConfig
    holds: HoldBook
    lock: asyncio.Lock
    system: dict[str, int]
    _trial_in_flight: dict[int, int]

    def now(self) -> datetime:
        raise NotImplementedError

    async def account_state(self, account_id: int, *, fresh: bool = False) -> AccountState:
        raise NotImplementedError

    def forget_account(self, account_id: int) -> None:
        raise NotImplementedError

    def forget_key(self, key_id: int) -> None:
        raise NotImplementedError

    # --- accounts -------------------------------------------------------------------------

    async def create_account(
        self,
        email: object,
        *,
        name: str = "",
        password: str | None = None,
        trial: bool = False,
        kind: str = "user",
    ) -> dict[str, Any]:
        address = acc.normalize_email(email)
        trial_calls = self.config.trial_calls if trial else 0
        try:
            async with self.lock, self.db.writer.begin() as conn:
                account_id = await acc.insert_account(
                    conn, email=address, name=name, password=password, trial_calls=trial_calls, kind=kind
                )
        except IntegrityError:
            raise Conflict(f"an account with email {address} already exists; log in instead") from None
        return await self.account_view(account_id)

    async def system_account_id(self, email: str, name: str) -> int:
        """The id of a built-in account (the public demo key's), created on first use."""
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(select(accounts.c.id).where(accounts.c.email == email))).first()
        if row is not None:
            return int(row[0])
        try:
            async with self.lock, self.db.writer.begin() as conn:
                return await acc.insert_account(conn, email=email, name=name, kind="demo")
        except IntegrityError:  # another process made it meanwhile
            return await self.system_account_id(email, name)

    async def signup(self, email: object, password: object) -> dict[str, Any]:
        """A new account with its free trial and a first key (shown once)."""
        secret = acc.check_password(password)
        account = await self.create_account(email, password=secret, trial=True)
        key = await self.create_key(account["id"], acc.KeyOptions(name="default"))
        return {"account": account, "key": key["key"], "key_id": key["id"]}

    async def login(self, email: object, password: object) -> dict[str, Any]:
        """Check a password; answer the account and a summary of its keys (never the keys)."""
        address = acc.normalize_email(email)
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.email == address))).first()
            ok = await asyncio.to_thread(acc.verify_password, row.password_hash if row else None, str(password))
            if row is None or not ok:
                raise Unauthorized("wrong email or password", code="invalid_credentials")
            keys = await acc.keys_of(conn, int(row.id))
        view = await self.account_view(int(row.id))
        view["keys"] = [k.summary() for k in keys]
        return view

    async def _exists(self, conn: AsyncConnection, account_id: int) -> None:
        row = (await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))).first()
        if row is None:
            raise NotFound(f"no account with id {account_id}")

    async def set_account(
        self,
        account_id: int,
        *,
        status: str | None = None,
        daily_cap: int | None = None,
        clear_cap: bool = False,
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if status is not None:
            if status not in ("active", "suspended"):
                raise BadRequest("status must be active or suspended", param="status")
            values["status"] = status
        if daily_cap is not None or clear_cap:
            values["daily_cap"] = daily_cap
        if not values:
            raise BadRequest("nothing to change: give status and/or daily_cap")
        async with self.lock, self.db.writer.begin() as conn:
            await self._exists(conn, account_id)
            await conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))
            await acc.note_change(conn, "account", account_id)
        self.forget_account(account_id)
        return await self.account_view(account_id)

    async def list_accounts(self, limit: int = 100) -> list[dict[str, Any]]:
        async with self.db.reader.connect() as conn:
            rows = await conn.execute(select(accounts.c.id).order_by(accounts.c.id).limit(limit))
            ids = [int(r[0]) for r in rows]
        return [await self.account_view(i) for i in ids]

    # --- keys -----------------------------------------------------------------------------

    async def create_key(self, account_id: int, options: acc.KeyOptions) -> dict[str, Any]:
        async with self.lock, self.db.writer.begin() as conn:
            await self._exists(conn, account_id)
            key_id, raw = await acc.insert_key(conn, account_id, options)
        return {"id": key_id, "key": raw, "account_id": account_id, "name": options.name}

    async def reset_key(self, key_id: int) -> dict[str, Any]:
        async with self.lock, self.db.writer.begin() as conn:
            raw = await acc.rotate_key(conn, key_id)
        if raw is None:
            raise NotFound(f"no live API key with id {key_id}")
        self.forget_key(key_id)
        return {"id": key_id, "key": raw}

    async def delete_key(self, key_id: int) -> None:
        async with self.lock, self.db.writer.begin() as conn:
            found = await acc.revoke_key(conn, key_id)
        if not found:
            raise NotFound(f"no live API key with id {key_id}")
        self.forget_key(key_id)

    async def list_keys(self, account_id: int) -> list[dict[str, Any]]:
        async with self.db.reader.connect() as conn:
            await self._exists(conn, account_id)
            return [k.summary() for k in await acc.keys_of(conn, account_id)]

    # --- credits --------------------------------------------------------------------------

    async def add_credits(
        self,
        account_id: int,
        amount: int,
        kind: str,
        *,
        expires_in_days: int | None = None,
        idempotency_key: str | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """A new lot; replaying an idempotency key returns the original and changes nothing."""
        if kind not in LOT_KINDS:
            raise BadRequest(f"kind must be one of {', '.join(LOT_KINDS)}", param="kind")
        if amount <= 0:
            raise BadRequest("amount must be more than 0", param="amount")
        days = expires_in_days if expires_in_days is not None else self.config.lot_expiry_days
        if days < 1:
            raise BadRequest("expires_in_days must be at least 1", param="expires_in_days")
        key = f"credit:{idempotency_key}" if idempotency_key else None
        async with self.lock:
            if key is not None:
                async with self.db.writer.connect() as conn:
                    earlier = await credit_by_key(conn, key)
                if earlier is not None:
                    return self._credit_view(self._same_credit(earlier, account_id, amount, kind))
            try:
                async with self.db.writer.begin() as conn:
                    await self._exists(conn, account_id)
                    result = await add_credits(
                        conn,
                        self.system,
                        account_id=account_id,
                        amount=amount,
                        kind=kind,
                        expires_in=timedelta(days=days),
                        at=self.now(),
                        description=description or f"{kind} credits",
                        idempotency_key=key,
                    )
                    await acc.note_change(conn, "account", account_id)
            except IntegrityError:
                if key is None:
                    raise
                # Another process sharing the database posted this key since we looked.
                async with self.db.writer.connect() as conn:
                    earlier = await credit_by_key(conn, key)
                if earlier is None:
                    raise
                return self._credit_view(self._same_credit(earlier, account_id, amount, kind))
            self.forget_account(account_id)
        return self._credit_view(result)

    def _same_credit(self, earlier: CreditResult, account_id: int, amount: int, kind: str) -> CreditResult:
        if (earlier.account_id, earlier.amount, earlier.kind) != (account_id, amount, kind):
            raise Conflict(
                "this idempotency_key was already used for a different credit; use a new key for a new credit",
                param="idempotency_key",
            )
        return earlier

    def _credit_view(self, r: CreditResult) -> dict[str, Any]:
        return {
            "transaction_id": r.transaction_id,
            "lot_id": r.lot_id,
            "account_id": r.account_id,
            "kind": r.kind,
            "amount": json_amount(r.amount),
            "currency": self.currency.code,
            "expires_at": iso(r.expires_at),
            "replayed": r.replayed,
        }

    async def expire_lots(self, lot_ids: list[int], now: datetime) -> list[Expired]:
        out = []
        async with self.lock, self.db.writer.begin() as conn:
            for lot_id in lot_ids:
                expired = await expire_lot(conn, self.system, lot_id, now)
                if expired is not None:
                    out.append(expired)
        return out

    # --- views ----------------------------------------------------------------------------

    async def account_view(self, account_id: int) -> dict[str, Any]:
        """An account with its money: balance, held, available, lots, trial calls left."""
        try:
            state = await self.account_state(account_id, fresh=True)
        except Unauthorized:
            raise NotFound(f"no account with id {account_id}") from None
        view = {
            "id": state.id,
            "email": state.email,
            "name": state.name,
            "status": state.status,
            "kind": state.kind,
            "created_at": iso(state.created_at),
            "daily_cap": json_amount(state.daily_cap) if state.daily_cap is not None else None,
            "topped_up": json_amount(state.topped_up),
        }
        view.update(self.credits_view(state))
        return view

    def credits_view(self, state: AccountState) -> dict[str, Any]:
        now = self.now()
        balance = state.balance(now)
        held = self.holds.held(state.id)
        trial_left = max(0, state.trial_calls_left - self._trial_in_flight.get(state.id, 0))
        return {
            "currency": self.currency.code,
            "balance": json_amount(balance),
            "held": json_amount(held),
            "available": json_amount(max(0, balance - held)),
            "lots": [
                {
                    "id": lot.id,
                    "kind": lot.kind,
                    "amount": json_amount(lot.amount),
                    "remaining": json_amount(lot.remaining),
                    "expires_at": iso(lot.expires_at),
                    "created_at": iso(lot.created_at),
                }
                for lot in state.lots
                if lot.expires_at > now
            ],
            "trial_calls_left": trial_left,
        }

    async def transactions_page(
        self, account_id: int, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; spending is negative."""
        before = decode_cursor(cursor)
        query = select(transactions).where(transactions.c.account_id == account_id)
        if before is not None:
            query = query.where(transactions.c.id < before)
        query = query.order_by(transactions.c.id.desc()).limit(limit + 1)
        async with self.db.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        data = [
            {
                "id": f"txn_{r.id}",
                "amount": json_amount(r.amount),
                "type": r.type,
                "description": r.description,
                "status": r.status,
                "createdAt": iso(r.created_at),
            }
            for r in rows[:limit]
        ]
        next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
        return data, next_cursor

    async def usage_page(
        self, account_id: int, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        before = decode_cursor(cursor)
        query = select(usage).where(usage.c.account_id == account_id)
        if before is not None:
            query = query.where(usage.c.id < before)
        query = query.order_by(usage.c.id.desc()).limit(limit + 1)
        async with self.db.reader.connect() as conn:
            await self._exists(conn, account_id)
            rows = (await conn.execute(query)).all()
        data = [
            {
                "id": r.id,
                "request_id": r.request_id,
                "key_id": r.key_id,
                "model": r.model,
                "deployment": r.deployment,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "cached_tokens": r.cached_tokens,
                "cache_write_tokens": r.cache_write_tokens,
                "reasoning_tokens": r.reasoning_tokens,
                "cost": json_amount(r.cost),
                "sponsored_cost": json_amount(r.sponsored_cost),
                "sponsor": r.sponsor,
                "hold": json_amount(r.hold),
                "latency_ms": r.latency_ms,
                "status": r.status,
                "estimated": bool(r.estimated),
                "usage": orjson.loads(r.raw_usage) if r.raw_usage else None,
                "error": r.error,
                "created_at": iso(r.created_at),
            }
            for r in rows[:limit]
        ]
        next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
        return data, next_cursor

    async def ledger_totals(self) -> dict[str, int]:
        """Balances of the system accounts (the operator's view), in micros."""
        from creditgate.storage.schema import ledger_accounts

        async with self.db.reader.connect() as conn:
            rows = await conn.execute(
                select(ledger_accounts.c.code, func.sum(ledger_accounts.c.balance))
                .where(ledger_accounts.c.kind == "system")
                .group_by(ledger_accounts.c.code)
            )
            return {str(code): int(total or 0) for code, total in rows}

"""`BillingService`: the `Billing` verbs of the hot path (authenticate, refusal, reserve,
settle) over in-memory caches, plus the operator's account and credit operations (in
`operations.py`). `open_billing()` builds one, migrates the database and starts its tasks.

The hot path does no database round trip in the common case: keys are cached by hash,
account state (lots, trial calls, today's spend) is cached by id, and holds live in a
`HoldBook`. Caches are dropped on reset, delete and admin changes made here, and, for
changes made by another process (the CLI), within `poll_interval` through `cache_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import select

from creditgate import accounts as acc
from creditgate.billing import Outcome, Principal, Reservation, Sponsor
from creditgate.catalog import Catalog, CatalogModel
from creditgate.config import Settings
from creditgate.errors import Conflict, Forbidden, PaymentRequired, RateLimited, Unauthorized
from creditgate.ledger.operations import Operations
from creditgate.ledger.postings import load_account, lots_due, system_accounts
from creditgate.ledger.records import Settled, Settlement
from creditgate.ledger.settlement import GroupCommitWriter, SettlementStore, SqlAlchemySettlements
from creditgate.ledger.sqlite_settlements import SqliteSettlements
from creditgate.ledger.state import AccountState, HoldBook, HoldLimits, MemoryHolds
from creditgate.money import format_amount, to_micros
from creditgate.ratelimit import DailyQuota, RateLimiter
from creditgate.ratelimit.memory import MemoryDailyQuota, SlidingWindowLimiter
from creditgate.storage.db import Database, connect, sqlite_file
from creditgate.storage.migrations import migrate
from creditgate.storage.schema import accounts, cache_events

log = logging.getLogger("creditgate.billing")

DEMO_KEY_ACCOUNT = "public-demo-key@creditgate.local"
NEGATIVE_CACHE_SECONDS = 30.0
NEGATIVE_CACHE_SIZE = 10_000


class BillingService(Operations):
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        db: Database,
        *,
        holds: HoldBook | None = None,
        limiter: RateLimiter | None = None,
        demo_quota: DailyQuota | None = None,
        poll_interval: float = 1.0,
        sweep_interval: float = 60.0,
    ) -> None:
        self.settings = settings
        self.config = settings.file.billing
        self.currency = settings.file.currency
        self.catalog = catalog
        self.db = db
        self.holds: HoldBook = holds or MemoryHolds()
        self.limiter: RateLimiter = limiter or SlidingWindowLimiter()
        self.demo_quota: DailyQuota = demo_quota or MemoryDailyQuota()
        self.tz = ZoneInfo(self.config.timezone)
        self.min_balance = to_micros(self.config.min_balance)
        self.premium_min_topup = to_micros(self.config.premium_min_topup)
        self.poll_interval = poll_interval
        self.sweep_interval = sweep_interval
        self.lock = asyncio.Lock()  # one writer at a time; cache reloads wait for commits
        self.system: dict[str, int] = {}
        self.demo_account_id: int | None = None
        self._keys: dict[str, acc.KeyRecord] = {}  # by hash
        self._key_hash: dict[int, str] = {}  # key id -> hash, to drop on reset
        self._unknown: dict[str, float] = {}  # hashes known not to exist, until a time
        self._accounts: dict[int, AccountState] = {}
        self._trial_in_flight: dict[int, int] = {}
        self._last_event = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.writer: GroupCommitWriter | None = None
        self._day = date.min
        self._day_starts = self._day_ends = datetime.min.replace(tzinfo=UTC)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        async with self.db.reader.connect() as conn:
            self.system = await system_accounts(conn)
            last = (await conn.execute(select(cache_events.c.id).order_by(cache_events.c.id.desc()))).first()
            self._last_event = int(last[0]) if last else 0
        if self.config.demo_key:
            self.demo_account_id = await self.system_account_id(DEMO_KEY_ACCOUNT, "public demo key")
        self.writer = GroupCommitWriter(
            self._settlement_store(),
            self._settled,
            self.lock,
            max_wait=self.config.group_commit_ms / 1000,
        )
        self.writer.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(self.poll_interval, self.poll_changes), name="creditgate-cache-events"),
            loop.create_task(self._every(self.sweep_interval, self.sweep_expired), name="creditgate-expiry"),
        ]

    def _settlement_store(self) -> SettlementStore:
        """SQLite files get the store that writes through the driver directly; everything
        else (PostgreSQL, in-memory SQLite) goes through SQLAlchemy."""
        path = sqlite_file(self.db.url)
        if path is not None:
            return SqliteSettlements(path, self.system, synchronous=self.config.sqlite_synchronous)
        return SqlAlchemySettlements(self.db.writer, self.system, row_locks=not self.db.sqlite)

    async def close(self) -> None:
        """Commit every queued settlement, then stop the background tasks."""
        if self.writer is not None:
            await self.writer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.db.dispose()

    async def ping(self) -> None:
        async with self.db.reader.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def _every(self, seconds: float, job: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:
                log.exception("background job %s failed; will retry", getattr(job, "__name__", job))

    # --- time -----------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC)

    def billing_day(self, now: datetime) -> date:
        """The day in the billing timezone; the current day is remembered with its bounds,
        so the hot path does no timezone arithmetic."""
        aware = now.tzinfo is not None
        if aware and self._day_starts <= now < self._day_ends:
            return self._day
        day = now.astimezone(self.tz).date()
        if aware:
            self._day, self._day_starts = day, self.day_start(day)
            self._day_ends = self.day_start(day + timedelta(days=1))
        return day

    def day_start(self, day: date) -> datetime:
        return datetime.combine(day, time.min, self.tz).astimezone(UTC)

    def next_reset(self, now: datetime) -> datetime:
        return self.day_start(self.billing_day(now) + timedelta(days=1))

    # --- caches ---------------------------------------------------------------------------

    async def account_state(self, account_id: int, *, fresh: bool = False) -> AccountState:
        """The account's money and limits, cached. `fresh` reloads it from the database first
        (for views: another gateway process may have spent from it since)."""
        state = None if fresh else self._accounts.get(account_id)
        if state is None:
            async with self.lock:  # read after any commit in progress, install before the next
                state = None if fresh else self._accounts.get(account_id)
                if state is None:
                    state = await self._load_account(account_id)
                    self._accounts[account_id] = state
        state.roll_day(self.billing_day(self.now()))
        return state

    async def _load_account(self, account_id: int) -> AccountState:
        today = self.billing_day(self.now())
        async with self.db.reader.connect() as conn:
            state = await load_account(conn, account_id, day_start=self.day_start(today), today=today)
        if state is None:
            raise Unauthorized("the account of this API key no longer exists")
        return state

    def forget_account(self, account_id: int) -> None:
        self._accounts.pop(account_id, None)

    def forget_key(self, key_id: int) -> None:
        key_hash = self._key_hash.pop(key_id, None)
        if key_hash is not None:
            self._keys.pop(key_hash, None)

    async def poll_changes(self) -> None:
        """Apply cache events written by other processes (and by this one: harmless)."""
        async with self.db.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(cache_events.c.id, cache_events.c.kind, cache_events.c.ref_id)
                    .where(cache_events.c.id > self._last_event)
                    .order_by(cache_events.c.id)
                    .limit(1000)
                )
            ).all()
        for event_id, kind, ref_id in rows:
            if kind == "key":
                self.forget_key(int(ref_id))
            elif kind == "account":
                self.forget_account(int(ref_id))
            self._last_event = int(event_id)

    # --- Billing: authenticate ------------------------------------------------------------

    async def authenticate(self, raw_key: str | None, client_ip: str) -> Principal:
        if not raw_key:
            raise Unauthorized("no API key: send it as `Authorization: Bearer sk-...`")
        demo = self.config.demo_key
        if demo and self.demo_account_id is not None and hmac.compare_digest(raw_key.encode(), demo.encode()):
            return Principal(self.demo_account_id, None, "demo", client_ip)
        if not acc.KEY_PATTERN.match(raw_key):
            raise Unauthorized("this is not a creditgate API key (they look like sk- and 64 hex digits)")
        record = await self._key(acc.hash_key(raw_key))
        now = self.now()
        if record is None or record.revoked:
            raise Unauthorized("unknown or revoked API key; create a new one in the dashboard or ask the operator")
        if record.expires_at is not None and record.expires_at <= now:
            raise Unauthorized(f"this API key expired at {record.expires_at.isoformat()}; create a new one")
        if not acc.ip_allowed(record.networks, client_ip):
            allowed = ", ".join(str(n) for n in record.networks or ())
            raise Forbidden(
                f"requests from {client_ip} are not allowed with this API key (its IP allowlist: {allowed}); "
                "call from an allowed address or change the key's allowlist",
                code="ip_not_allowed",
            )
        state = await self.account_state(record.account_id)
        if state.status != "active":
            raise Forbidden("this account is suspended; contact the operator", code="account_suspended")
        return Principal(record.account_id, record.id, "account", client_ip, record.allowed_models)

    async def _key(self, key_hash: str) -> acc.KeyRecord | None:
        record = self._keys.get(key_hash)
        if record is not None:
            return record
        loop_now = asyncio.get_running_loop().time()
        if self._unknown.get(key_hash, 0.0) > loop_now:
            return None
        async with self.db.reader.connect() as conn:
            record = await acc.key_by_hash(conn, key_hash)
        if record is None:
            if len(self._unknown) >= NEGATIVE_CACHE_SIZE:
                self._unknown.clear()
            self._unknown[key_hash] = loop_now + NEGATIVE_CACHE_SECONDS
            return None
        self._keys[key_hash] = record
        self._key_hash[record.id] = key_hash
        return record

    def key_record(self, key_id: int | None) -> acc.KeyRecord | None:
        if key_id is None:
            return None
        key_hash = self._key_hash.get(key_id)
        return self._keys.get(key_hash) if key_hash else None

    # --- Billing: refusal -----------------------------------------------------------------

    def refusal(self, principal: Principal, model: CatalogModel) -> str | None:
        if principal.allowed_models is not None and model.id not in principal.allowed_models:
            allowed = ", ".join(sorted(principal.allowed_models)) or "none"
            return f"this API key may not call {model.id!r}; it may call: {allowed}"
        if principal.kind == "demo":
            if "cheap" not in model.tags:
                cheap = ", ".join(m.id for m in self.catalog if "cheap" in m.tags) or "none"
                return (
                    f"the public demo key can only call models tagged cheap ({cheap}); "
                    f"sign up for your own key to use {model.id!r}"
                )
            return None
        if "premium" in model.tags:
            state = self._accounts.get(principal.account_id)
            topped_up = state.topped_up if state is not None else 0
            if topped_up < self.premium_min_topup:
                code = self.currency.code
                return (
                    f"{model.id!r} is a premium model: it needs top-ups totalling at least "
                    f"{format_amount(self.premium_min_topup)} {code}; this account has topped up "
                    f"{format_amount(topped_up)} {code}. Top up to unlock it"
                )
        return None

    # --- Billing: reserve -----------------------------------------------------------------

    async def reserve(self, principal: Principal, model: CatalogModel, hold: int, request_id: str) -> Reservation:
        state: AccountState | None = None
        if principal.kind == "account":
            state = await self.account_state(principal.account_id)  # refusal() reads the cached state
        reason = self.refusal(principal, model)
        if reason:
            raise Forbidden(reason, param="model", code="model_not_allowed")
        now = self.now()
        if principal.kind == "demo":
            return await self._reserve_demo(principal, model, hold, request_id, now)
        record = self.key_record(principal.key_id)
        if record is not None and record.rpm:
            wait = await self.limiter.hit(f"key:{record.id}", record.rpm, 60.0)
            if wait is not None:
                raise RateLimited(
                    f"this API key allows {record.rpm} requests per minute; retry in {int(wait) + 1} s",
                    retry_after=int(wait) + 1,
                )
        if state is None or self._accounts.get(principal.account_id) is not state:
            state = await self.account_state(principal.account_id)  # reloaded during the rate limit
        in_flight = self._trial_in_flight.get(state.id, 0)
        if "cheap" in model.tags and state.trial_calls_left - in_flight > 0:
            self._trial_in_flight[state.id] = in_flight + 1
            return Reservation(principal, model.id, hold, "trial", now, request_id)
        limits = HoldLimits(
            funds=state.balance(now),
            floor=self.min_balance,
            account_room=state.daily_cap - state.spent_today if state.daily_cap is not None else None,
            key_room=record.daily_cap - state.key_spent_today.get(record.id, 0)
            if record is not None and record.daily_cap is not None
            else None,
        )
        broken = await self.holds.try_hold(request_id, state.id, principal.key_id, hold, now, limits)
        if broken is not None:
            raise self._refuse_hold(broken, state, hold, now, record)
        return Reservation(principal, model.id, hold, None, now, request_id)

    async def _reserve_demo(
        self, principal: Principal, model: CatalogModel, hold: int, request_id: str, now: datetime
    ) -> Reservation:
        day = self.billing_day(now)
        if not await self.demo_quota.take(principal.client_ip, self.config.demo_calls_per_ip, day):
            reset = self.next_reset(now)
            wait = max(1, int((reset - now).total_seconds()) + 1)
            raise RateLimited(
                f"the public demo key allows {self.config.demo_calls_per_ip} calls per day "
                "from each address; "
                f"they are used up for {principal.client_ip} until {reset.isoformat()} "
                "(sign up for your own key to keep going)",
                retry_after=wait,
                code="demo_limit_reached",
            )
        return Reservation(principal, model.id, hold, "demo", now, request_id)

    def _refuse_hold(
        self, broken: str, state: AccountState, hold: int, now: datetime, record: acc.KeyRecord | None
    ) -> PaymentRequired:
        code = self.currency.code
        held = self.holds.held(state.id)
        if broken == "funds":
            balance = state.balance(now)
            available = balance - held
            floor = f" and keep a minimum of {format_amount(self.min_balance)} {code}" if self.min_balance else ""
            return PaymentRequired(
                f"not enough credits: balance {format_amount(balance)} {code}, "
                f"{format_amount(held)} {code} held by requests in flight, so "
                f"{format_amount(available)} {code} available; this request needs a hold of "
                f"{format_amount(hold)} {code}{floor}. Top up your credits, or lower max_tokens to "
                "reduce the hold"
            )
        reset = self.next_reset(now)
        if broken == "account_cap":
            cap, spent, whose = state.daily_cap or 0, state.spent_today, "this account"
        else:
            assert record is not None
            cap, spent, whose = record.daily_cap or 0, state.key_spent_today.get(record.id, 0), "this API key"
        return PaymentRequired(
            f"the daily spending cap of {whose} ({format_amount(cap)} {code}) would be exceeded: spent today "
            f"{format_amount(spent)} {code}, held {format_amount(held)} {code}, this request needs "
            f"{format_amount(hold)} {code}. The cap resets at {reset.isoformat()} "
            f"(midnight {self.config.timezone})",
            code="daily_cap_reached",
        )

    # --- Billing: settle ------------------------------------------------------------------

    async def settle(self, reservation: Reservation, outcome: Outcome) -> int:
        usage = outcome.usage
        billable = usage is not None and not (outcome.status == "error" and usage.completion_tokens == 0)
        cost = 0
        if usage is not None and billable:
            cost = outcome.model.price.cost(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            )
        if cost > reservation.hold:
            log.warning(
                "request %s cost %d micros but held only %d; charging the hold",
                reservation.request_id,
                cost,
                reservation.hold,
            )
        charge = min(cost, reservation.hold)
        sponsor: Sponsor | None = reservation.sponsor
        settlement = Settlement(
            request_id=reservation.request_id,
            account_id=reservation.principal.account_id,
            key_id=reservation.principal.key_id,
            model=outcome.model.id,
            deployment=outcome.deployment,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cached_tokens=usage.cached_tokens if usage else 0,
            cache_write_tokens=usage.cache_write_tokens if usage else 0,
            reasoning_tokens=usage.reasoning_tokens if usage else 0,
            charge=0 if sponsor else charge,
            sponsored=charge if sponsor else 0,
            sponsor=sponsor,
            use_trial_call=sponsor == "trial" and billable,
            hold=reservation.hold,
            hold_taken_at=reservation.started_at,
            latency_ms=outcome.latency_ms,
            status=outcome.status,
            estimated=outcome.estimated,
            raw_usage=orjson.dumps(usage.raw).decode() if usage is not None and usage.raw is not None else None,
            error=outcome.error,
            client_ip=reservation.principal.client_ip,
            at=self.now(),
        )
        if sponsor == "demo" and not billable:
            await self.demo_quota.give_back(reservation.principal.client_ip, self.billing_day(reservation.started_at))
        if self.writer is None:
            raise RuntimeError("billing is not started")
        # A request alone in the gateway settles at once on the loop; others are batched.
        settled = await self.writer.submit(settlement, alone=len(self.holds) <= 1)
        return 0 if sponsor else settled.charged

    async def _settled(self, s: Settlement, result: Settled | None) -> None:
        """After the commit (or its failure): release the hold and mirror the charge, with no
        await that could suspend in between, so no reserve sees the hold gone but the lots
        still full."""
        await self.holds.release(s.request_id)
        if s.sponsor == "trial":
            left = self._trial_in_flight.get(s.account_id, 0) - 1
            if left > 0:
                self._trial_in_flight[s.account_id] = left
            else:
                self._trial_in_flight.pop(s.account_id, None)
        if result is None or result.replayed:
            return
        state = self._accounts.get(s.account_id)
        if state is None:
            return
        if result.charged < s.charge:
            # The lots held less than this copy said: another process sharing the database
            # spent them. Reload the account before its next hold instead of serving on it.
            self.forget_account(s.account_id)
            return
        state.roll_day(self.billing_day(s.at))
        state.consume(result.consumed)
        state.spent_today += result.charged
        if s.key_id is not None:
            state.key_spent_today[s.key_id] = state.key_spent_today.get(s.key_id, 0) + result.charged
        if result.trial_used:
            state.trial_calls_left -= 1

    # --- expiry ---------------------------------------------------------------------------

    async def sweep_expired(self, now: datetime | None = None, progress: Any = None) -> int:
        """Close lots that expired before any hold in flight was taken; returns how many.
        Lots past their expiry are already unspendable for new holds; this posts the entry."""
        now = now or self.now()
        oldest = self.holds.oldest()
        cutoff = min(now, oldest) if oldest is not None else now
        async with self.db.reader.connect() as conn:
            due = await lots_due(conn, cutoff)
        if progress is not None:
            progress(0, len(due))
        done = 0
        for chunk_start in range(0, len(due), 200):
            chunk = due[chunk_start : chunk_start + 200]
            expired = await self.expire_lots(chunk, now)
            done += len(chunk)
            if progress is not None:
                progress(done, len(due))
            for e in expired:
                self.forget_account(e.owner_id)
        return len(due)


async def open_billing(settings: Settings, catalog: Catalog, **options: Any) -> BillingService:
    """Migrate the database, then start a `BillingService` (group-commit writer, cache-event
    poller, expiry sweeper). Close it with `await service.close()`."""
    await migrate(settings.database_url)
    service = BillingService(settings, catalog, connect(settings.database_url), **options)
    try:
        await service.start()
    except BaseException:
        await service.db.dispose()
        raise
    return service


async def ensure_demo_account(service: BillingService, *, credits: int) -> str:
    """The gateway's demo mode: account demo@creditgate.local, given `credits` micros on first
    run only, and a fresh API key on every start (keys are never stored, so an earlier one
    cannot be shown again)."""
    email = "demo@creditgate.local"
    async with service.db.reader.connect() as conn:
        row = (await conn.execute(select(accounts.c.id).where(accounts.c.email == email))).first()
    if row is None:
        account_id = int((await service.create_account(email, name="Demo", trial=False))["id"])
    else:
        account_id = int(row[0])
    if credits > 0:  # granted once: later starts replay the same idempotency key
        with contextlib.suppress(Conflict):  # the amount changed since; keep the first grant
            await service.add_credits(
                account_id,
                credits,
                "grant",
                idempotency_key="demo-account-credits",
                description="demo credits",
            )
    key = await service.create_key(account_id, acc.KeyOptions(name="demo"))
    return str(key["key"])

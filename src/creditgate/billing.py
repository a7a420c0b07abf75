"""What the hot path asks of billing, and nothing more.

The pipeline knows four verbs: *authenticate* a key, ask whether a principal *permits* a
model, *reserve* a hold before the upstream call, and *settle* the outcome after it. How
accounts, lots, holds and the ledger work behind them is `ledger/`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from creditgate.canonical import Usage
from creditgate.catalog import CatalogModel

Sponsor = Literal["trial", "demo"]
OutcomeStatus = Literal["ok", "error", "disconnected", "cut"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an account's key, or the public demo key from one client IP."""

    account_id: int
    key_id: int | None
    kind: Literal["account", "demo"]
    client_ip: str
    allowed_models: frozenset[str] | None = None  # None: every model


@dataclass(slots=True)
class Reservation:
    """A hold taken before the upstream call. `hold` is in micros; a sponsored call
    (a free trial call or the public demo key) is paid by the operator, not the wallet."""

    principal: Principal
    model_id: str
    hold: int
    sponsor: Sponsor | None
    started_at: datetime
    request_id: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened upstream, for settlement and the usage record."""

    model: CatalogModel  # the catalog model that served (after fallbacks and auto routing)
    deployment: str | None
    usage: Usage | None  # None when the request failed before any output
    estimated: bool  # usage was estimated from the streamed text, not reported upstream
    status: OutcomeStatus
    latency_ms: int
    error: str | None = None


class Billing(Protocol):
    async def authenticate(self, raw_key: str | None, client_ip: str) -> Principal:
        """Raise Unauthorized (no, unknown, reset, expired key) or Forbidden (suspended
        account, IP not in the key's allowlist)."""
        ...

    def refusal(self, principal: Principal, model: CatalogModel) -> str | None:
        """Why `principal` may not call `model` (key's model list, premium tier, demo key
        on a non-cheap model), or None when it may. Used to filter auto-routing candidates."""
        ...

    async def reserve(self, principal: Principal, model: CatalogModel, hold: int, request_id: str) -> Reservation:
        """Take a hold of `hold` micros, or raise: Forbidden (refusal), PaymentRequired
        (available balance below the hold or the minimum balance), RateLimited (rpm,
        demo calls per IP), PaymentRequired/Forbidden for daily caps."""
        ...

    async def settle(self, reservation: Reservation, outcome: Outcome) -> int:
        """Charge the actual cost (never more than the hold), release the rest, write the
        usage record; return the micros charged. Durable when it returns."""
        ...

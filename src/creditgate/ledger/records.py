"""What a settlement is, as plain data: the request's charge going in (`Settlement`) and
what the ledger did with it (`Settled`), plus the pure functions on them.

This module imports nothing but the standard library, because the SQLite ledger writer
process (`sqlite_writer.py`) loads it and should start small.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Settlement:
    request_id: str
    account_id: int
    key_id: int | None
    model: str
    deployment: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    charge: int  # micros the wallet pays
    sponsored: int  # micros the operator pays (trial or demo calls)
    sponsor: str | None
    use_trial_call: bool  # a successful free trial call: one fewer left
    hold: int
    hold_taken_at: datetime  # lots unexpired at this moment may pay
    latency_ms: int
    status: str
    estimated: bool
    raw_usage: str | None
    error: str | None
    client_ip: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Settled:
    charged: int
    consumed: list[tuple[int, int]]  # (lot id, micros)
    trial_used: bool
    replayed: bool  # this request was settled before; nothing was charged now


def describe(s: Settlement) -> str:
    tokens = f"{s.prompt_tokens} in + {s.completion_tokens} out tokens"
    extra = " (estimated)" if s.estimated else ""
    if s.sponsor == "trial":
        return f"free trial call: {s.model}, {tokens}{extra}"
    if s.sponsor == "demo":
        return f"public demo call: {s.model}, {tokens}{extra}"
    return f"{s.model}: {tokens}{extra}"


def allocate(lots: list[tuple[int, int]], amount: int) -> list[tuple[int, int]]:
    """Take `amount` from lots in order; returns (lot id, micros) and never over-draws a lot.
    The result sums to less than `amount` only when the lots hold less."""
    out = []
    left = amount
    for lot_id, balance in lots:
        if left <= 0:
            break
        take = min(balance, left)
        if take > 0:
            out.append((lot_id, take))
            left -= take
    return out

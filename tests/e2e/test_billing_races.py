"""Limits under concurrency, over real HTTP: free trial calls, daily caps, requests per
minute and the demo key's daily calls hold when many requests arrive at the same moment."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from tests.e2e.billing_support import (
    assert_ledger_balances,
    chat_body,
    envelope,
    micros,
    usage_records,
)
from tests.e2e.conftest import Gateway


async def burst(gw: Gateway, key: str, count: int, **extra: Any) -> list[httpx.Response]:
    """`count` chat requests at once, half of them streams; each response read to its end."""
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30) as http:

        async def send(n: int) -> httpx.Response:
            body = chat_body(f"burst {n}", max_tokens=8, **extra)
            if n % 2:
                body["stream"] = True
            r = await http.post(gw.v1 + "/chat/completions", json=body)
            await r.aread()
            return r

        return list(await asyncio.gather(*(send(n) for n in range(count))))


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


def test_trial_calls_are_not_overgiven_under_concurrency(gateway: Gateway) -> None:
    account_id, key = gateway.account(None, trial=True)
    responses = asyncio.run(burst(gateway, key, 30))
    assert statuses(responses) == {200: 3, 402: 27}
    for r in responses:
        if r.status_code == 402:
            envelope(r, 402)
    records = usage_records(gateway, account_id)
    assert len(records) == 3 and all(r["sponsor"] == "trial" for r in records)
    assert gateway.balance(account_id)["trial_calls_left"] == 0


def test_daily_cap_holds_under_concurrency(gateway: Gateway) -> None:
    account_id, key = gateway.account("10")
    cap = 300_000
    r = gateway.admin("PATCH", f"/admin/accounts/{account_id}", {"daily_cap": "0.3"})
    assert r.status_code == 200
    responses = asyncio.run(burst(gateway, key, 40))
    counts = statuses(responses)
    assert set(counts) == {200, 402} and counts[402] >= 1
    assert all(envelope(r, 402)["code"] == "daily_cap_reached" for r in responses if r.status_code == 402)
    _, charges = assert_ledger_balances(gateway, account_id, key)
    assert 0 < charges <= cap


def test_requests_per_minute_hold_under_concurrency(gateway: Gateway) -> None:
    account_id, key = gateway.account("10", rpm=5)
    responses = asyncio.run(burst(gateway, key, 20))
    assert statuses(responses) == {200: 5, 429: 15}
    for r in responses:
        if r.status_code == 429:
            envelope(r, 429)
            assert int(r.headers["retry-after"]) >= 1
    assert len(usage_records(gateway, account_id)) == 5


def test_demo_calls_per_address_hold_under_concurrency(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory()
    responses = asyncio.run(burst(gw, "sk-creditgate-demo-public", 12))
    assert statuses(responses) == {200: 2, 429: 10}
    assert all(envelope(r, 429)["code"] == "demo_limit_reached" for r in responses if r.status_code == 429)
    served = [r for r in responses if r.status_code == 200]
    for r in served:
        if r.headers["content-type"].startswith("application/json"):
            assert micros(r.json()["usage"]["cost"]) == 0  # the operator pays for demo calls

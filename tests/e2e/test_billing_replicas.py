"""Two gateway processes on one database, as behind a load balancer: a credit delivered to
both at once with the same idempotency key is credited once, and both answer it; spending
through both stays within the balance (a known gap, marked xfail)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from tests.e2e.billing_support import (
    assert_ledger_balances,
    async_client,
    fresh_pg,
    micros,
    price_of,
    transactions,
)
from tests.e2e.conftest import ADMIN_TOKEN, Gateway
from tests.e2e.test_billing_concurrency import COST_OF_ONE, REQUESTS, Result, one

__all__ = ["fresh_pg"]  # a fixture, used by name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def replicas(request: pytest.FixtureRequest, gateway_factory: Callable[..., Gateway]) -> tuple[Gateway, Gateway]:
    if request.param == "sqlite":
        first = gateway_factory()
    else:
        first = gateway_factory(database_url=request.getfixturevalue("fresh_pg"))
    return first, gateway_factory(database_url=first.database_url)


async def deliver(urls: list[str], path: str, body: dict[str, str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as http:
        return list(await asyncio.gather(*(http.post(url + path, json=body) for url in urls)))


def test_same_credit_delivered_to_two_replicas_at_once_is_credited_once(replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    account_id, key = a.account(None)
    for round_ in range(5):
        body = {"amount": "2.5", "kind": "topup", "idempotency_key": f"payment-{round_}"}
        responses = asyncio.run(deliver([a.url, b.url] * 5, f"/admin/accounts/{account_id}/credits", body))
        assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses if r.status_code != 201]
        assert len({r.json()["transaction_id"] for r in responses}) == 1
        assert sum(not r.json()["replayed"] for r in responses) == 1
    assert [t["type"] for t in transactions(a, key)] == ["TOPUP"] * 5
    assert micros(a.balance(account_id)["topped_up"]) == 12_500_000
    balance, _ = assert_ledger_balances(a, account_id, key)
    assert balance == 12_500_000


@pytest.mark.xfail(
    strict=True,
    reason="known gap: holds and cached balances are per process, so replicas sharing a database each "
    "promise the same credits; requests past the balance are served and settle at 0 (no distributed holds yet)",
)
def test_replicas_do_not_serve_past_the_balance(replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    granted = 20 * COST_OF_ONE
    account_id, key = a.account(f"{granted / 1_000_000:.6f}")

    async def spend() -> list[Result]:
        async with async_client(a, key) as to_a, async_client(b, key) as to_b:
            return list(
                await asyncio.gather(
                    *(one(to_a if n % 2 else to_b, n, n % 4 < 2, (n % 50) / 200) for n in range(REQUESTS))
                )
            )

    served = [r for r in asyncio.run(spend()) if r.status == 200]
    assert len(served) <= 20
    assert all(r.tokens is not None and r.cost == price_of(*r.tokens) for r in served), "served for free"
    assert_ledger_balances(a, account_id, key)

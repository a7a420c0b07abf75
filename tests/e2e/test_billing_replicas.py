"""Two gateway processes on one database, as behind a load balancer: a credit delivered to
both at once with the same idempotency key is credited once, and both answer it; spending
through both stops once the ledger is spent (serving nothing past it is a known gap, xfail)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from tests.e2e.billing_support import (
    assert_ledger_balances,
    async_client,
    credits,
    fresh_pg,
    micros,
    price_of,
    transactions,
)
from tests.e2e.conftest import ADMIN_TOKEN, Gateway
from tests.e2e.test_billing_concurrency import COST_OF_ONE, Result, one

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


async def take_turns(a: Gateway, b: Gateway, key: str, rounds: int = 60) -> list[Result]:
    """Requests taking turns between two replicas, until both refuse."""
    out: list[Result] = []
    async with async_client(a, key) as to_a, async_client(b, key) as to_b:
        for n in range(rounds):
            out.append(await one(to_a if n % 2 else to_b, n, n % 4 < 2))
            if len(out) >= 2 and out[-1].status != 200 and out[-2].status != 200:
                break
    return out


def test_a_replica_with_a_stale_balance_stops_serving_once_the_ledger_is_spent(
    replicas: tuple[Gateway, Gateway],
) -> None:
    """Each replica keeps its own copy of the balance. When a settlement finds the lots
    emptier than that copy (the other replica spent them), the replica reloads the account
    and refuses from then on, instead of serving free requests on a balance that is gone."""
    a, b = replicas
    granted = 20 * COST_OF_ONE
    account_id, key = a.account(f"{granted / 1_000_000:.6f}")
    results = asyncio.run(take_turns(a, b, key))
    served = [r for r in results if r.status == 200]
    assert [r.status for r in results[-2:]] == [402, 402], "the replicas kept serving on a spent balance"
    assert len(served) <= 20 + 2  # at most one request per replica past the balance
    assert sum(r.cost or 0 for r in served) == granted
    assert_ledger_balances(a, account_id, key)
    assert micros(credits(b, key)["balance"]) == 0


@pytest.mark.xfail(
    strict=True,
    reason="known gap: each process keeps its own cached balance and holds, and a settlement by one replica "
    "does not reach the other's cache, so both promise the same credits; about one request per replica is "
    "served past the balance and settles at 0",
)
def test_replicas_do_not_serve_past_the_balance(replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    granted = 20 * COST_OF_ONE
    account_id, key = a.account(f"{granted / 1_000_000:.6f}")
    served = [r for r in asyncio.run(take_turns(a, b, key)) if r.status == 200]
    assert len(served) <= 20
    assert all(r.tokens is not None and r.cost == price_of(*r.tokens) for r in served), "served for free"
    assert_ledger_balances(a, account_id, key)

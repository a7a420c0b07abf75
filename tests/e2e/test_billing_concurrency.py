"""Concurrent spending over real HTTP: 200 streaming and non-streaming requests at once
against an account whose balance covers about 20 of them. Nothing is overspent, every
answered request is charged exactly once at the price the client was shown, and every
refused one gets 402. On SQLite, and on PostgreSQL when CREDITGATE_TEST_PG_URL is set."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from tests.e2e.billing_support import (
    assert_ledger_balances,
    async_client,
    envelope,
    fresh_pg,
    micros,
    price_of,
    usage_records,
)
from tests.e2e.conftest import Gateway

__all__ = ["fresh_pg"]  # a fixture, used by name

REQUESTS = 200
COST_OF_ONE = price_of(9, 12)  # "hello N" is 9 prompt tokens at the simulator; 12 completion tokens


@dataclass
class Result:
    stream: bool
    status: int
    request_id: str | None = None
    cost: int | None = None
    header_cost: int | None = None
    tokens: tuple[int, int] | None = None
    error: dict[str, Any] | None = None


async def one(sdk: openai.AsyncOpenAI, n: int, stream: bool, delay: float = 0.0) -> Result:
    messages: Any = [{"role": "user", "content": f"hello {n}"}]
    await asyncio.sleep(delay)
    try:
        if stream:
            raw = await sdk.chat.completions.with_raw_response.create(
                model="test/echo",
                messages=messages,
                max_tokens=12,
                stream=True,
                stream_options={"include_usage": True},
            )
            usage = None
            async for chunk in raw.parse():
                if chunk.usage is not None:
                    usage = chunk.usage.model_dump()
            assert usage is not None, "a stream that ended without its usage chunk"
            header = None
            raw_headers = raw.headers
        else:
            whole = await sdk.chat.completions.with_raw_response.create(
                model="test/echo", messages=messages, max_tokens=12
            )
            completion = whole.parse()
            assert completion.usage is not None
            usage = completion.usage.model_dump()
            header = micros(whole.headers["x-creditgate-cost"])
            raw_headers = whole.headers
    except openai.APIStatusError as exc:
        error = envelope(exc.response, exc.status_code)
        return Result(stream, exc.status_code, exc.response.headers.get("x-request-id"), error=error)
    return Result(
        stream,
        200,
        raw_headers["x-request-id"],
        micros(usage["cost"]),
        header,
        (usage["prompt_tokens"], usage["completion_tokens"]),
    )


async def load(gw: Gateway, key: str) -> tuple[list[Result], list[int]]:
    """Fire every request at once; meanwhile watch the balance the account API reports."""
    seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30) as http:
            while not done.is_set():
                view = (await http.get(gw.v1 + "/credits")).json()
                seen.append(micros(view["balance"]))
                assert micros(view["held"]) >= 0
                await asyncio.sleep(0.02)

    sdk = async_client(gw, key)
    watcher = asyncio.create_task(watch())
    try:
        # All in flight together, their starts spread over a quarter of a second so that
        # settlements and new holds interleave. Each start time has streams and plain
        # requests alike: otherwise, with only two holds' worth of credit, which kind gets
        # served would depend on whether the last wave had finished.
        results = await asyncio.gather(*(one(sdk, n, n % 2 == 0, ((n // 2) % 50) / 200) for n in range(REQUESTS)))
    finally:
        done.set()
        await watcher
        await sdk.close()
    return list(results), seen


async def alone(gw: Gateway, key: str, n: int) -> Result:
    async with async_client(gw, key) as sdk:
        return await one(sdk, n, n % 2 == 0)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def spending_gateway(request: pytest.FixtureRequest, gateway_factory: Callable[..., Gateway]) -> Gateway:
    if request.param == "sqlite":
        return gateway_factory()
    database_url: str = request.getfixturevalue("fresh_pg")
    return gateway_factory(database_url=database_url)


def test_two_hundred_concurrent_requests_never_overspend(spending_gateway: Gateway) -> None:
    gw = spending_gateway
    granted = 20 * COST_OF_ONE
    account_id, key = gw.account(f"{granted / 1_000_000:.6f}")
    results, balances_seen = asyncio.run(load(gw, key))

    served = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status != 200]
    assert {r.status for r in refused} <= {402}, [r.error for r in refused if r.status != 402]
    assert all(r.error is not None and r.error["type"] == "insufficient_credits" for r in refused)
    assert served and refused
    assert any(r.stream for r in served) and any(not r.stream for r in served)
    served_in_burst = len(served)

    # Spend what is left one request at a time, until the rest cannot cover one more hold:
    # refused requests cost nothing, so no more than the 20 paid for are ever served.
    for n in range(REQUESTS, REQUESTS + 30):
        last = asyncio.run(alone(gw, key, n))
        if last.status != 200:
            break
        served.append(last)
    else:
        pytest.fail("the balance never ran out")
    assert last.status == 402 and last.error is not None
    hold = re.search(r"needs a hold of ([0-9.]+) INR", last.error["message"])
    assert hold is not None, last.error["message"]
    assert served_in_burst >= 1 and len(served) <= 20
    assert granted - sum(r.cost or 0 for r in served) < micros(hold.group(1))

    # What each client was told is the catalog price of its tokens (and the header agrees).
    for r in served:
        assert r.tokens is not None and r.cost == price_of(*r.tokens) > 0
        if not r.stream:
            assert r.header_cost == r.cost

    # Exactly one usage record per answered request, at the cost the client saw; none for
    # the refused ones.
    records = usage_records(gw, account_id)
    by_request = {rec["request_id"]: rec for rec in records}
    assert len(by_request) == len(records) == len(served)
    for r in served:
        assert r.request_id is not None and micros(by_request[r.request_id]["cost"]) == r.cost
    assert not {r.request_id for r in refused} & set(by_request)

    # The ledger: charges are the costs the clients saw, and the balance never dipped below 0.
    balance, charges = assert_ledger_balances(gw, account_id, key)
    assert charges == sum(r.cost or 0 for r in served)
    assert balance == granted - charges >= 0
    assert balances_seen and min(balances_seen) >= 0
    assert balances_seen == sorted(balances_seen, reverse=True)

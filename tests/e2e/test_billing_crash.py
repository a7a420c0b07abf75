"""`kill -9` under load: a gateway process serving a steady stream of paid requests is killed
with SIGKILL and started again on the same database. Every response a client received whole
has exactly one charge, at the cost it showed; nothing is charged twice; the ledger balances
and no hold survives the restart. A graceful stop (SIGTERM) lets streams in flight finish."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import orjson
import pytest
from tests.e2e.billing_support import (
    assert_ledger_balances,
    chat_body,
    client,
    credits,
    fresh_pg,
    micros,
    price_of,
    usage_records,
)
from tests.e2e.conftest import Gateway

__all__ = ["fresh_pg"]  # a fixture, used by name

WORKERS = 16
COMPLETE_BEFORE_KILL = 80


@dataclass
class Tally:
    complete: dict[str, int] = field(default_factory=dict)  # request id -> cost the client saw
    broken: int = 0


async def worker(gw: Gateway, key: str, n: int, tally: Tally, stop: asyncio.Event) -> None:
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        i = 0
        while not stop.is_set():
            i += 1
            stream = (n + i) % 2 == 0
            body = chat_body(f"request {n}-{i}", max_tokens=12, stream=stream, stream_options={"include_usage": True})
            if not stream:
                del body["stream_options"]
            try:
                if stream:
                    async with http.stream("POST", gw.v1 + "/chat/completions", json=body) as r:
                        assert r.status_code == 200, await r.aread()
                        events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
                    if events[-1:] != ["[DONE]"]:  # ended before the end: not a whole response
                        tally.broken += 1
                        continue
                    usage = orjson.loads(events[-2])["usage"]
                else:
                    r = await http.post(gw.v1 + "/chat/completions", json=body)
                    assert r.status_code == 200, r.text
                    usage = r.json()["usage"]
                    assert micros(r.headers["x-creditgate-cost"]) == micros(usage["cost"])
            except httpx.TransportError:
                tally.broken += 1
                continue
            cost = micros(usage["cost"])
            assert cost == price_of(usage["prompt_tokens"], usage["completion_tokens"]) > 0
            tally.complete[r.headers["x-request-id"]] = cost


async def load_then_kill(gw: Gateway, key: str) -> Tally:
    tally, stop = Tally(), asyncio.Event()
    tasks = [asyncio.create_task(worker(gw, key, n, tally, stop)) for n in range(WORKERS)]
    try:
        while len(tally.complete) < COMPLETE_BEFORE_KILL:
            failed = [t for t in tasks if t.done()]
            if failed:
                await failed[0]  # raises what went wrong
                pytest.fail("a client stopped before the kill")
            await asyncio.sleep(0.005)
        gw.kill()  # SIGKILL with requests in flight
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return tally


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def crash_gateway(request: pytest.FixtureRequest, gateway_factory: Callable[..., Gateway]) -> Gateway:
    if request.param == "sqlite":
        return gateway_factory()
    database_url: str = request.getfixturevalue("fresh_pg")
    return gateway_factory(database_url=database_url)


def test_sigkill_under_load_loses_no_charge_and_charges_nothing_twice(crash_gateway: Gateway) -> None:
    gw = crash_gateway
    account_id, key = gw.account("100")
    tally = asyncio.run(load_then_kill(gw, key))
    assert len(tally.complete) >= COMPLETE_BEFORE_KILL

    gw.start()  # same database, same port
    records = usage_records(gw, account_id)
    by_request: dict[str, list[int]] = {}
    for rec in records:
        by_request.setdefault(rec["request_id"], []).append(micros(rec["cost"]))
    assert all(len(costs) == 1 for costs in by_request.values()), "a request was recorded twice"
    for request_id, cost in tally.complete.items():
        assert by_request.get(request_id) == [cost], (
            f"{request_id}: client saw {cost}, ledger has {by_request.get(request_id)}"
        )
    # Anything recorded beyond what clients received whole was cut by the kill.
    assert len(records) - len(tally.complete) <= tally.broken

    balance, charges = assert_ledger_balances(gw, account_id, key)
    assert balance == 100_000_000 - charges
    assert charges >= sum(tally.complete.values())

    # The restarted gateway serves and charges as before.
    completion = client(gw, key).chat.completions.create(
        model="test/echo", messages=[{"role": "user", "content": "after the crash"}], max_tokens=4
    )
    assert completion.usage is not None
    cost = micros(completion.usage.model_dump()["cost"])
    assert micros(credits(gw, key)["balance"]) == balance - cost
    assert_ledger_balances(gw, account_id, key)


def test_graceful_stop_finishes_streams_in_flight_and_charges_them(gateway_factory: Callable[..., Gateway]) -> None:
    """SIGTERM while five slow streams run: they finish whole, and each is charged once."""
    gw = gateway_factory()
    account_id, key = gw.account("60")
    assert gw.proc is not None

    async def read(http: httpx.AsyncClient, n: int) -> tuple[str, list[str]]:
        body = chat_body(f"story {n}", model="test/slow", stream=True, stream_options={"include_usage": True})
        async with http.stream("POST", gw.v1 + "/chat/completions", json=body) as r:
            assert r.status_code == 200
            return r.headers["x-request-id"], [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]

    async def run() -> list[tuple[str, list[str]]]:
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30) as http:
            tasks = [asyncio.create_task(read(http, n)) for n in range(5)]
            await asyncio.sleep(0.5)  # the streams are under way
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            return list(await asyncio.gather(*tasks))

    streams = asyncio.run(run())
    gw.proc.wait(30)
    gw.start()
    records = {r["request_id"]: r for r in usage_records(gw, account_id)}
    assert set(records) == {request_id for request_id, _ in streams}
    for request_id, events in streams:
        assert events[-1] == "[DONE]"
        usage = orjson.loads(events[-2])["usage"]
        assert usage["completion_tokens"] == 200
        assert records[request_id]["status"] == "ok"
        assert micros(records[request_id]["cost"]) == micros(usage["cost"])
    assert_ledger_balances(gw, account_id, key)

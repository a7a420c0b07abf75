"""Two gateway processes sharing one PostgreSQL database and one Redis server: the shape of
a scaled-out deployment. Needs CREDITGATE_TEST_PG_URL and CREDITGATE_TEST_REDIS_URL (both
set by scripts/test.sh)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable

import httpx
import pytest
from tests.e2e.conftest import CONFIG, Gateway


def fresh_pg_database() -> str:
    """A new, empty database on the test server; its URL."""
    base = os.environ.get("CREDITGATE_TEST_PG_URL")
    if not base:
        pytest.skip("set CREDITGATE_TEST_PG_URL to run the PostgreSQL tests")
    import asyncpg

    name = "scale_" + secrets.token_hex(4)

    async def create() -> None:
        conn = await asyncpg.connect(base.replace("postgresql://", "postgres://", 1))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return base.rsplit("/", 1)[0] + "/" + name


def redis_url() -> str:
    url = os.environ.get("CREDITGATE_TEST_REDIS_URL")
    if not url:
        pytest.skip("set CREDITGATE_TEST_REDIS_URL to run the Redis tests")
    return url


def chat(gw: Gateway, key: str) -> httpx.Response:
    return httpx.post(
        gw.v1 + "/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "test/echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
        timeout=30,
    )


def test_two_gateways_share_the_ledger_and_the_rate_limits(gateway_factory: Callable[..., Gateway]) -> None:
    database, redis = fresh_pg_database(), redis_url()
    a = gateway_factory(CONFIG, database_url=database, CREDITGATE_REDIS_URL=redis)
    b = gateway_factory(CONFIG, database_url=database, CREDITGATE_REDIS_URL=redis)

    for gw in (a, b):
        ready = httpx.get(gw.url + "/health/ready", timeout=10)
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "db": "ok", "redis": "ok"}

    # An account made through one gateway is served by the other.
    account_id, key = a.account("10", rpm=4)
    answers = [chat(gw, key) for gw in (a, b, a, b, a, b)]
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 429, 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in answers[4:])
    assert answers[5].json()["error"]["code"] is not None

    # Both gateways' charges land in the one ledger: one usage record per answer, each
    # with the cost its client was told.
    told = sorted(r.headers["x-creditgate-cost"] for r in answers[:4])
    usage = a.admin("GET", f"/admin/accounts/{account_id}/usage").json()["data"]
    assert sorted(f"{float(u['cost']):.6f}" for u in usage if u["status"] == "ok") == [f"{float(t):.6f}" for t in told]
    assert sum(1 for u in usage if u["status"] == "ok") == 4

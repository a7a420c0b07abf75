"""Helpers for the end-to-end billing tests: money as micros, the OpenAI error envelope,
the ledger seen through the account and admin APIs, and fresh PostgreSQL databases."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
import httpx
import openai
import pytest
from tests.e2e.conftest import Gateway

# The shared catalog's prices: 1,000 micros per input token, 2,000 per output token.
INPUT_MICROS = 1000
OUTPUT_MICROS = 2000


def micros(amount: Any) -> int:
    """An amount as the API writes it (a JSON number or a decimal string) in micros, exactly."""
    value = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(str(amount))
    scaled = value * 1_000_000
    assert scaled == scaled.to_integral_value(), f"{amount!r} is not a whole number of micros"
    return int(scaled)


def price_of(prompt_tokens: int, completion_tokens: int) -> int:
    """What the shared catalog's test models charge for these tokens, in micros."""
    return prompt_tokens * INPUT_MICROS + completion_tokens * OUTPUT_MICROS


def client(gw: Gateway, key: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=30, **options)


def async_client(gw: Gateway, key: str, **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=60, **options)


def chat_body(content: str = "hello there", *, model: str = "test/echo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


class WireResponse(Protocol):
    """An HTTP response of httpx or of the `openai` SDK's own HTTP client."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self, **kwargs: Any) -> Any: ...


def envelope(response: WireResponse, status: int) -> dict[str, Any]:
    """The inner error object of an OpenAI error envelope, after checking its status and shape."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    return dict(error)


def sdk_error(exc: openai.APIStatusError, status: int) -> dict[str, Any]:
    """The envelope behind an `openai` SDK exception."""
    return envelope(exc.response, status)


def credits(gw: Gateway, key: str) -> dict[str, Any]:
    r = httpx.get(gw.v1 + "/credits", headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def transactions(gw: Gateway, key: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Every transaction of the key's account, newest first, following the cursor."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        r = httpx.get(
            gw.v1 + "/credits/transactions", params=params, headers={"authorization": f"Bearer {key}"}, timeout=30
        )
        assert r.status_code == 200, r.text
        page = r.json()
        out.extend(page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            return out


def usage_records(gw: Gateway, account_id: int) -> list[dict[str, Any]]:
    """Every usage record of an account, newest first, through the admin API."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        path = f"/admin/accounts/{account_id}/usage?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        r = gw.admin("GET", path)
        assert r.status_code == 200, r.text
        page = r.json()
        out.extend(page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            return out


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_ledger_balances(gw: Gateway, account_id: int, key: str) -> tuple[int, int]:
    """balance = credits in - charges, the transactions sum to the balance, nothing is held
    once idle, and every charge is a usage record's cost. Returns (balance, charges) in micros."""
    txns = transactions(gw, key)
    grants = sum(micros(t["amount"]) for t in txns if t["type"] in ("GRANT", "TOPUP", "BONUS", "TRIAL"))
    charges = -sum(micros(t["amount"]) for t in txns if t["type"] == "USAGE")
    assert all(micros(t["amount"]) < 0 for t in txns if t["type"] == "USAGE")
    view = credits(gw, key)
    balance = micros(view["balance"])
    assert balance >= 0
    assert balance == grants - charges == sum(micros(t["amount"]) for t in txns)
    assert micros(view["held"]) == 0 and micros(view["available"]) == balance
    records = usage_records(gw, account_id)
    assert sorted(micros(r["cost"]) for r in records if micros(r["cost"]) > 0) == sorted(
        -micros(t["amount"]) for t in txns if t["type"] == "USAGE"
    )
    return balance, charges


def pg_base_url() -> str | None:
    return os.environ.get("CREDITGATE_TEST_PG_URL") or None


async def _admin_sql(base: str, sql: str) -> None:
    conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (the gateway migrates it at start),
    dropped afterwards. Skips when CREDITGATE_TEST_PG_URL is not set."""
    base = pg_base_url()
    if base is None:
        pytest.skip("set CREDITGATE_TEST_PG_URL (scripts/test.sh does) to run on PostgreSQL")
    name = f"creditgate_e2e_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin_sql(base, f'CREATE DATABASE "{name}"'))
    head, _, _ = base.rpartition("/")
    try:
        yield f"{head}/{name}"
    finally:
        asyncio.run(_admin_sql(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

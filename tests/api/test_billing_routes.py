"""The admin and account APIs over real HTTP (uvicorn on a free port, aiohttp client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import uvicorn
from starlette.applications import Starlette
from tests.conftest import free_port
from tests.ledger.billing_support import ServiceFactory

from creditgate.api.account import account_routes
from creditgate.api.admin import admin_routes
from creditgate.billing import Outcome
from creditgate.canonical import Usage

TOKEN = "admin-secret-token"
Call = Callable[..., Awaitable[tuple[int, Any]]]


@pytest.fixture
async def served(services: ServiceFactory, sqlite_url: str) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def serve(token: str | None = TOKEN) -> tuple[Any, Call]:
        service = await services(sqlite_url, admin_token=token)
        app = Starlette(routes=[*account_routes(service), *admin_routes(service, service.settings)])
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
        task = asyncio.get_running_loop().create_task(server.serve())
        servers.append((server, task))
        while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
            await asyncio.sleep(0.01)
        session = aiohttp.ClientSession(f"http://127.0.0.1:{port}")
        sessions.append(session)

        async def call(method: str, path: str, body: Any = None, key: str | None = TOKEN, **kw: Any) -> Any:
            headers = {"authorization": f"Bearer {key}"} if key else {}
            async with session.request(method, path, json=body, headers=headers, **kw) as resp:
                return resp.status, await resp.json(), resp.headers

        return service, call

    sessions: list[aiohttp.ClientSession] = []
    yield serve
    for s in sessions:
        await s.close()
    for server, task in servers:
        server.should_exit = True
        await task


def is_error(body: Any, status: int, expected: int) -> bool:
    return status == expected and set(body["error"]) == {"message", "type", "param", "code"}


async def test_admin_flow_accounts_keys_credits(served: Any) -> None:
    _, call = await served()
    status, account, _ = await call("POST", "/admin/accounts", {"email": "Dev@Example.com", "name": "Dev"})
    assert status == 201 and account["email"] == "dev@example.com" and account["trial_calls_left"] == 0
    status, body, _ = await call("POST", "/admin/accounts", {"email": "dev@example.com"})
    assert is_error(body, status, 409)
    aid = account["id"]
    status, credit, _ = await call(
        "POST",
        f"/admin/accounts/{aid}/credits",
        {"amount": "12.345678", "kind": "topup", "idempotency_key": "k1"},
    )
    assert status == 201 and credit["amount"] == 12.345678
    status, again, _ = await call(
        "POST",
        f"/admin/accounts/{aid}/credits",
        {"amount": 12.345678, "kind": "topup", "idempotency_key": "k1"},
    )
    assert status == 201 and again["transaction_id"] == credit["transaction_id"]
    status, body, _ = await call("POST", f"/admin/accounts/{aid}/credits", {"amount": "1.0000001"})
    assert is_error(body, status, 400) and "6 decimal places" in body["error"]["message"]
    status, key, _ = await call(
        "POST",
        f"/admin/accounts/{aid}/keys",
        {"name": "ci", "models": ["plain-model"], "daily_cap": "5", "rpm": 60},
    )
    assert status == 201 and key["key"].startswith("sk-") and len(key["key"]) == 67
    status, view, _ = await call("GET", f"/admin/accounts/{aid}")
    assert view["balance"] == 12.345678 and view["keys"][0]["models"] == ["plain-model"]
    assert "key" not in view["keys"][0]

    # the developer's view, with their own key
    status, credits, _ = await call("GET", "/v1/credits", key=key["key"])
    assert status == 200 and credits["currency"] == "INR" and credits["available"] == 12.345678
    assert credits["lots"][0]["kind"] == "topup" and credits["lots"][0]["remaining"] == 12.345678

    status, reset, _ = await call("POST", f"/admin/keys/{key['id']}/reset")
    assert status == 200 and reset["key"] != key["key"]
    status, body, _ = await call("GET", "/v1/credits", key=key["key"])
    assert is_error(body, status, 401)
    status, body, _ = await call("GET", "/v1/credits", key=reset["key"])
    assert status == 200

    status, view, _ = await call("PATCH", f"/admin/accounts/{aid}", {"status": "suspended"})
    assert status == 200 and view["status"] == "suspended"
    status, body, _ = await call("GET", "/v1/credits", key=reset["key"])
    assert is_error(body, status, 403) and body["error"]["code"] == "account_suspended"

    status, _, _ = await call("DELETE", f"/admin/keys/{key['id']}")
    assert status == 200
    status, body, _ = await call("DELETE", f"/admin/keys/{key['id']}")
    assert is_error(body, status, 404)


async def test_admin_needs_the_token_and_hides_without_one(served: Any) -> None:
    _, call = await served()
    status, body, _ = await call("POST", "/admin/accounts", {"email": "a@example.com"}, key="wrong")
    assert is_error(body, status, 401)
    _, call = await served(token=None)
    status, body, _ = await call("POST", "/admin/accounts", {"email": "a@example.com"})
    assert is_error(body, status, 404)


async def test_signup_login_and_transactions(served: Any) -> None:
    service, call = await served()
    status, made, _ = await call("POST", "/auth/signup", {"email": "me@example.com", "password": "hunter2hunter2"})
    assert status == 201 and made["account"]["trial_calls_left"] == 2 and made["key"].startswith("sk-")
    status, body, _ = await call("POST", "/auth/signup", {"email": "me@example.com", "password": "hunter2hunter2"})
    assert is_error(body, status, 409)
    status, body, _ = await call("POST", "/auth/login", {"email": "me@example.com", "password": "wrong-password"})
    assert is_error(body, status, 401)
    status, me, _ = await call("POST", "/auth/login", {"email": "me@example.com", "password": "hunter2hunter2"})
    assert status == 200 and me["keys"][0]["prefix"] == made["key"][:11]

    aid = made["account"]["id"]
    await service.add_credits(aid, 3_000_000, "grant")
    principal = await service.authenticate(made["key"], "127.0.0.1")
    model = service.catalog.get("plain-model")
    for i in range(3):
        r = await service.reserve(principal, model, 100_000, f"tx-{i}")
        await service.settle(
            r, Outcome(model, "sim/p", Usage(prompt_tokens=1000, completion_tokens=100), False, "ok", 1)
        )
    status, page, _ = await call("GET", "/v1/credits/transactions?limit=2", key=made["key"])
    assert status == 200 and [t["amount"] for t in page["data"]] == [-0.0045, -0.0045]
    assert set(page["data"][0]) == {"id", "amount", "type", "description", "status", "createdAt"}
    status, rest, _ = await call(
        "GET", f"/v1/credits/transactions?limit=2&cursor={page['next_cursor']}", key=made["key"]
    )
    assert [t["type"] for t in rest["data"]] == ["USAGE", "GRANT"] and rest["next_cursor"] is None
    status, body, _ = await call("GET", "/v1/credits/transactions?limit=1001", key=made["key"])
    assert is_error(body, status, 400)
    status, usage, _ = await call("GET", f"/admin/accounts/{aid}/usage")
    assert status == 200 and len(usage["data"]) == 3 and usage["data"][0]["cost"] == 0.0045

"""Every refusal rule through the HTTP API with the `openai` SDK: the status, the OpenAI error
envelope, a message that says what to do, and no charge for a refused request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tests.e2e.billing_support import (
    assert_ledger_balances,
    chat_body,
    client,
    credits,
    envelope,
    micros,
    sdk_error,
    transactions,
    usage_records,
)
from tests.e2e.conftest import CONFIG, Gateway

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def refused(call: Callable[[], Any], status: int) -> dict[str, Any]:
    """Run an SDK call that must fail with `status`; return its error object."""
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return sdk_error(caught.value, status)


def ask(sdk: openai.OpenAI, model: str = "test/echo", **extra: Any) -> Any:
    extra.setdefault("max_tokens", 8)
    return sdk.chat.completions.create(model=model, messages=MESSAGES, **extra)


def key_id_of(gw: Gateway, account_id: int, index: int = 0) -> int:
    return int(gw.balance(account_id)["keys"][index]["id"])


def with_billing(**options: str) -> str:
    """The shared catalog with extra `billing:` settings."""
    extra = "".join(f"  {k}: {v}\n" for k, v in options.items())
    return CONFIG.replace("  group_commit_ms: 2\n", "  group_commit_ms: 2\n" + extra)


def test_hold_above_the_available_balance_is_402_with_balance_hold_and_top_up(gateway: Gateway) -> None:
    account_id, key = gateway.account("0.15")
    sdk = client(gateway, key)
    error = refused(lambda: ask(sdk, max_tokens=200), 402)
    assert error["type"] == "insufficient_credits" and error["code"] == "insufficient_credits"
    message = error["message"]
    assert "balance 0.15 INR" in message and "hold of" in message and "Top up" in message
    error = refused(lambda: list(ask(sdk, max_tokens=200, stream=True)), 402)
    assert "balance 0.15 INR" in error["message"]
    # A smaller hold fits, and is charged; the refused ones are not.
    ask(sdk, max_tokens=4)
    assert len(usage_records(gateway, account_id)) == 1
    assert_ledger_balances(gateway, account_id, key)


def test_minimum_balance_is_kept(gateway_factory: Callable[..., Gateway]) -> None:
    """Below the configured minimum balance nothing is served, even a request whose hold fits."""
    gw = gateway_factory(with_billing(min_balance="5.5"))
    account_id, key = gw.account("5")
    error = refused(lambda: ask(client(gw, key)), 402)
    assert "balance 5.00 INR" in error["message"] and "keep a minimum of 5.50 INR" in error["message"]
    assert usage_records(gw, account_id) == []
    rich_id, rich_key = gw.account("6")
    ask(client(gw, rich_key))
    assert_ledger_balances(gw, rich_id, rich_key)


def test_daily_cap_per_account(gateway: Gateway) -> None:
    account_id, key = gateway.account("5")
    r = gateway.admin("PATCH", f"/admin/accounts/{account_id}", {"daily_cap": "0.3"})
    assert r.status_code == 200 and r.json()["daily_cap"] == 0.3
    sdk = client(gateway, key)
    served = 0
    for _ in range(30):
        try:
            ask(sdk)
        except openai.APIStatusError as exc:
            error = sdk_error(exc, 402)
            break
        served += 1
    else:
        pytest.fail("the daily cap never refused a request")
    assert served >= 1
    assert error["code"] == "daily_cap_reached"
    assert "daily spending cap of this account (0.30 INR)" in error["message"] and "resets at" in error["message"]
    _, charges = assert_ledger_balances(gateway, account_id, key)
    assert 0 < charges <= 300_000
    # A second key of the same account is under the same cap.
    r = gateway.admin("POST", f"/admin/accounts/{account_id}/keys", {})
    refused(lambda: ask(client(gateway, r.json()["key"])), 402)
    r = gateway.admin("PATCH", f"/admin/accounts/{account_id}", {"daily_cap": None})
    assert r.status_code == 200 and r.json()["daily_cap"] is None
    ask(sdk)


def test_daily_cap_per_key(gateway: Gateway) -> None:
    account_id, capped = gateway.account("5", daily_cap="0.25")
    sdk = client(gateway, capped)
    for _ in range(30):
        try:
            ask(sdk)
        except openai.APIStatusError as exc:
            error = sdk_error(exc, 402)
            break
    else:
        pytest.fail("the key's daily cap never refused a request")
    assert error["code"] == "daily_cap_reached" and "this API key (0.25 INR)" in error["message"]
    _, charges = assert_ledger_balances(gateway, account_id, capped)
    assert 0 < charges <= 250_000
    # Another key of the account has no cap of its own.
    other = gateway.admin("POST", f"/admin/accounts/{account_id}/keys", {}).json()["key"]
    ask(client(gateway, other))


def test_trial_calls_are_free_on_cheap_models_then_need_credits(gateway: Gateway) -> None:
    account_id, key = gateway.account(None, trial=True)
    sdk = client(gateway, key)
    assert credits(gateway, key)["trial_calls_left"] == 3
    refused(lambda: ask(sdk, "test/vision"), 402)  # not tagged cheap: no free call
    for left in (2, 1, 0):
        completion = ask(sdk)
        assert completion.usage is not None and completion.usage.model_dump()["cost"] == 0
        assert credits(gateway, key)["trial_calls_left"] == left
    error = refused(lambda: ask(sdk), 402)
    assert "balance 0.00 INR" in error["message"]
    records = usage_records(gateway, account_id)
    assert len(records) == 3 and all(r["sponsor"] == "trial" and micros(r["cost"]) == 0 for r in records)
    assert all(micros(r["sponsored_cost"]) > 0 for r in records)
    trial_entries = transactions(gateway, key)  # free calls show in the history, at no cost
    assert [(t["type"], t["amount"]) for t in trial_entries] == [("TRIAL", 0)] * 3

    r = gateway.admin("POST", f"/admin/accounts/{account_id}/credits", {"amount": "1", "kind": "topup"})
    assert r.status_code == 201
    completion = ask(sdk)
    assert completion.usage is not None and micros(completion.usage.model_dump()["cost"]) > 0
    assert_ledger_balances(gateway, account_id, key)


def test_premium_models_need_enough_top_ups(gateway: Gateway) -> None:
    _, granted = gateway.account("200")  # granted, not topped up
    error = refused(lambda: ask(client(gateway, granted), "test/premium"), 403)
    assert error["param"] == "model"
    assert "premium model" in error["message"] and "100.00 INR" in error["message"]
    assert "Top up" in error["message"]

    account_id, key = gateway.account("50", kind="topup")
    refused(lambda: ask(client(gateway, key), "test/premium"), 403)
    r = gateway.admin("POST", f"/admin/accounts/{account_id}/credits", {"amount": "50", "kind": "topup"})
    assert r.status_code == 201
    completion = ask(client(gateway, key), "test/premium")
    assert completion.model == "test/premium"
    assert_ledger_balances(gateway, account_id, key)


def test_public_demo_key(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory()
    sdk = client(gw, "sk-creditgate-demo-public")
    error = refused(lambda: ask(sdk, "test/vision"), 403)
    assert "cheap" in error["message"] and "test/echo" in error["message"]
    for _ in range(2):  # demo_calls_per_ip
        assert ask(sdk).choices[0].message.content
    with pytest.raises(openai.RateLimitError) as caught:
        ask(sdk)
    error = sdk_error(caught.value, 429)
    assert error["code"] == "demo_limit_reached" and "2 calls per day" in error["message"]
    assert int(caught.value.response.headers["retry-after"]) >= 1
    # Streams are counted against the same daily calls.
    r = httpx.post(
        gw.v1 + "/chat/completions",
        json=chat_body(stream=True),
        headers={"authorization": "Bearer sk-creditgate-demo-public"},
    )
    assert "retry-after" in r.headers
    envelope(r, 429)


def test_requests_per_minute_per_key(gateway: Gateway) -> None:
    account_id, key = gateway.account("5", rpm=2)
    sdk = client(gateway, key)
    ask(sdk)
    ask(sdk)
    with pytest.raises(openai.RateLimitError) as caught:
        ask(sdk)
    error = sdk_error(caught.value, 429)
    assert error["type"] == "rate_limit_error" and "2 requests per minute" in error["message"]
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 61
    assert len(usage_records(gateway, account_id)) == 2


def test_key_with_allowed_models_refuses_others(gateway: Gateway) -> None:
    account_id, key = gateway.account("5", models=["test/echo"])
    sdk = client(gateway, key)
    ask(sdk)
    error = refused(lambda: ask(sdk, "test/vision"), 403)
    assert error["param"] == "model" and "may not call 'test/vision'" in error["message"]
    assert "test/echo" in error["message"]
    assert len(usage_records(gateway, account_id)) == 1


def test_ip_allowlist(gateway: Gateway) -> None:
    _, key = gateway.account("5", ip_allowlist=["10.0.0.0/8"])
    error = refused(lambda: ask(client(gateway, key)), 403)
    assert error["code"] == "ip_not_allowed"
    assert "127.0.0.1 are not allowed" in error["message"] and "10.0.0.0/8" in error["message"]
    envelope(httpx.get(gateway.v1 + "/credits", headers={"authorization": f"Bearer {key}"}), 403)
    _, local = gateway.account("5", ip_allowlist=["127.0.0.0/8", "::1"])
    ask(client(gateway, local))


def test_reset_key_refuses_the_old_key_at_once(gateway: Gateway) -> None:
    account_id, old = gateway.account("5")
    ask(client(gateway, old))  # cached by the gateway now
    r = gateway.admin("POST", f"/admin/keys/{key_id_of(gateway, account_id)}/reset")
    assert r.status_code == 200, r.text
    new = r.json()["key"]
    error = refused(lambda: ask(client(gateway, old)), 401)
    assert error["code"] == "invalid_api_key"
    ask(client(gateway, new))
    # Revoking works the same way.
    r = gateway.admin("DELETE", f"/admin/keys/{key_id_of(gateway, account_id)}")
    assert r.status_code == 200
    refused(lambda: ask(client(gateway, new)), 401)


def test_expired_key_is_refused(gateway: Gateway) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    _, key = gateway.account("5", expires_at=past)
    error = refused(lambda: ask(client(gateway, key)), 401)
    assert "expired" in error["message"] and "create a new one" in error["message"]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    _, fresh = gateway.account("5", expires_at=future)
    ask(client(gateway, fresh))


def test_unknown_and_missing_keys(gateway: Gateway) -> None:
    error = refused(lambda: ask(client(gateway, "sk-" + "0" * 64)), 401)
    assert error["type"] == "authentication_error"
    r = httpx.post(gateway.v1 + "/chat/completions", json=chat_body())
    assert "no API key" in envelope(r, 401)["message"]


def test_sdks_are_told_not_to_retry_refusals_that_will_not_pass(gateway: Gateway) -> None:
    """402 and 403 carry `x-should-retry: false`, so the SDKs' automatic retries do not
    repeat them; a rate limit is left to retry after `Retry-After`."""
    _, poor = gateway.account("0.01")
    _, limited = gateway.account("5", rpm=1, models=["test/echo"])
    headers = {"authorization": f"Bearer {poor}"}
    r = httpx.post(gateway.v1 + "/chat/completions", json=chat_body(max_tokens=100), headers=headers)
    envelope(r, 402)
    assert r.headers["x-should-retry"] == "false"
    headers = {"authorization": f"Bearer {limited}"}
    r = httpx.post(gateway.v1 + "/chat/completions", json=chat_body(model="test/vision"), headers=headers)
    envelope(r, 403)
    assert r.headers["x-should-retry"] == "false"
    assert httpx.post(gateway.v1 + "/chat/completions", json=chat_body(), headers=headers).status_code == 200
    r = httpx.post(gateway.v1 + "/chat/completions", json=chat_body(), headers=headers)
    envelope(r, 429)
    assert int(r.headers["retry-after"]) >= 1 and r.headers.get("x-should-retry") != "false"

"""Each refusal rule of `reserve`, as a client sees it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.ledger.billing_support import ServiceFactory, ledger_invariants

from creditgate.accounts import KeyOptions
from creditgate.billing import Outcome
from creditgate.canonical import Usage
from creditgate.errors import Forbidden, PaymentRequired, RateLimited, Unauthorized
from creditgate.ledger.service import BillingService

M = 1_000_000


async def funded(service: BillingService, amount: int, *, trial: bool = False, kind: str = "grant", **key: object):
    account = await service.create_account(f"user{amount}-{id(key)}@example.com", trial=trial)
    if amount:
        await service.add_credits(account["id"], amount, kind)
    made = await service.create_key(account["id"], KeyOptions(**key))  # type: ignore[arg-type]
    return account["id"], made["key"]


def ok(service: BillingService, model_id: str, prompt: int, completion: int) -> Outcome:
    model = service.catalog.get(model_id)
    assert model is not None
    return Outcome(model, "sim/x", Usage(prompt_tokens=prompt, completion_tokens=completion), False, "ok", 5)


async def test_hold_larger_than_available_is_refused_with_balance_and_hold(
    sqlite_url: str, services: ServiceFactory
) -> None:
    service = await services(sqlite_url)
    _, key = await funded(service, 2 * M)
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    first = await service.reserve(principal, model, int(1.5 * M), "r1")
    with pytest.raises(PaymentRequired) as err:
        await service.reserve(principal, model, M, "r2")
    message = err.value.message
    assert "balance 2.00 INR" in message and "1.50 INR" in message and "1.00 INR" in message
    assert "Top up" in message
    # settling the first releases the rest of its hold
    charged = await service.settle(first, ok(service, "plain-model", 1000, 1000))
    assert charged == 1000 * 3 + 1000 * 15  # 3 and 15 INR per 1M tokens
    await service.reserve(principal, model, M, "r2")
    await ledger_invariants(service)


async def test_min_balance_is_enforced(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url, min_balance="1")
    _, key = await funded(service, M // 2)
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    with pytest.raises(PaymentRequired, match=r"minimum of 1\.00 INR"):
        await service.reserve(principal, model, 10, "r1")


async def test_daily_cap_per_key_says_when_it_resets(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url, timezone="Asia/Kolkata")
    _, key = await funded(service, 10 * M, daily_cap=M)
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    r = await service.reserve(principal, model, 600_000, "r1")
    await service.settle(r, ok(service, "plain-model", 0, 40_000))  # 0.60 INR spent
    with pytest.raises(PaymentRequired) as err:
        await service.reserve(principal, model, 500_000, "r2")
    assert err.value.code == "daily_cap_reached"
    assert "resets at" in err.value.message and "Asia/Kolkata" in err.value.message
    await service.reserve(principal, model, 400_000, "r3")


async def test_daily_cap_per_account(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    account_id, key = await funded(service, 10 * M)
    await service.set_account(account_id, daily_cap=M)
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    await service.reserve(principal, model, 700_000, "r1")
    with pytest.raises(PaymentRequired) as err:
        await service.reserve(principal, model, 400_000, "r2")
    assert err.value.code == "daily_cap_reached"


async def test_premium_models_need_enough_top_ups(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    account_id, key = await funded(service, 100 * M, kind="grant")
    principal = await service.authenticate(key, "127.0.0.1")
    premium = service.catalog.get("premium-model")
    assert premium is not None
    with pytest.raises(Forbidden, match=r"premium model.*5\.00 INR"):
        await service.reserve(principal, premium, 1000, "r1")
    await service.add_credits(account_id, 5 * M, "topup")
    principal = await service.authenticate(key, "127.0.0.1")
    await service.reserve(principal, premium, 1000, "r1")


async def test_trial_calls_are_sponsored_and_count_down_on_success_only(
    sqlite_url: str, services: ServiceFactory
) -> None:
    service = await services(sqlite_url)
    account_id, key = await funded(service, 0, trial=True)
    principal = await service.authenticate(key, "127.0.0.1")
    cheap = service.catalog.get("cheap-model")
    plain = service.catalog.get("plain-model")
    assert cheap is not None and plain is not None
    with pytest.raises(PaymentRequired):  # trial calls cover cheap models only
        await service.reserve(principal, plain, 1000, "p1")
    failed = await service.reserve(principal, cheap, 1000, "t0")
    await service.settle(failed, Outcome(cheap, None, None, False, "error", 3, error="boom"))
    for i in range(2):
        r = await service.reserve(principal, cheap, 1000, f"t{i + 1}")
        assert r.sponsor == "trial"
        assert await service.settle(r, ok(service, "cheap-model", 100, 100)) == 0
    view = await service.account_view(account_id)
    assert view["trial_calls_left"] == 0 and view["balance"] == 0
    with pytest.raises(PaymentRequired):
        await service.reserve(principal, cheap, 1000, "t3")
    totals = await service.ledger_totals()
    assert totals["revenue"] == 2 * (100 + 200) // 1 and totals["funding:sponsor"] == -totals["revenue"]
    await ledger_invariants(service)


async def test_demo_key_cheap_only_and_per_ip_quota(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    demo = await service.authenticate("sk-creditgate-demo-public", "10.0.0.1")
    assert demo.kind == "demo"
    cheap = service.catalog.get("cheap-model")
    plain = service.catalog.get("plain-model")
    assert cheap is not None and plain is not None
    assert service.refusal(demo, plain) is not None
    with pytest.raises(Forbidden, match="tagged cheap"):
        await service.reserve(demo, plain, 10, "d0")
    for i in range(2):
        r = await service.reserve(demo, cheap, 10, f"d{i}")
        assert r.sponsor == "demo"
    with pytest.raises(RateLimited) as err:
        await service.reserve(demo, cheap, 10, "d3")
    assert err.value.code == "demo_limit_reached"
    assert 0 < err.value.retry_after <= 86_401
    other_ip = await service.authenticate("sk-creditgate-demo-public", "10.0.0.2")
    await service.reserve(other_ip, cheap, 10, "d4")


async def test_rpm_limit_per_key(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    _, key = await funded(service, 10 * M, rpm=2)
    principal = await service.authenticate(key, "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    await service.reserve(principal, model, 10, "a")
    await service.reserve(principal, model, 10, "b")
    with pytest.raises(RateLimited) as err:
        await service.reserve(principal, model, 10, "c")
    assert 1 <= err.value.retry_after <= 61


async def test_key_restrictions(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    _, key = await funded(service, M, models=("cheap-model",), ip_allowlist=("192.168.0.0/16",))
    with pytest.raises(Forbidden) as err:
        await service.authenticate(key, "10.1.2.3")
    assert "10.1.2.3" in err.value.message and "192.168.0.0/16" in err.value.message
    principal = await service.authenticate(key, "192.168.4.5")
    plain = service.catalog.get("plain-model")
    assert plain is not None
    with pytest.raises(Forbidden, match="may not call 'plain-model'"):
        await service.reserve(principal, plain, 10, "x")
    past = service.now() - timedelta(seconds=1)
    _, expired = await funded(service, M, expires_at=past)
    with pytest.raises(Unauthorized, match="expired"):
        await service.authenticate(expired, "127.0.0.1")


async def test_suspended_account_is_refused(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    account_id, key = await funded(service, M)
    await service.authenticate(key, "127.0.0.1")
    await service.set_account(account_id, status="suspended")
    with pytest.raises(Forbidden, match="suspended"):
        await service.authenticate(key, "127.0.0.1")

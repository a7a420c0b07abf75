"""Keys, passwords, IP allowlists and the in-memory rate limits."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from tests.ledger.billing_support import ServiceFactory

from creditgate.accounts import (
    KEY_PATTERN,
    KeyOptions,
    hash_key,
    hash_password,
    ip_allowed,
    new_key,
    parse_networks,
    verify_password,
)
from creditgate.errors import BadRequest, PaymentRequired
from creditgate.ratelimit.memory import MemoryDailyQuota, SlidingWindowLimiter


def test_keys_are_sk_and_64_hex_and_stored_only_as_a_hash() -> None:
    key = new_key()
    assert KEY_PATTERN.match(key) and key != new_key()
    assert hash_key(key) == hash_key(key) and key not in hash_key(key) and len(hash_key(key)) == 64


def test_passwords_use_argon2() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse") and not verify_password(stored, "wrong horse")
    assert not verify_password(None, "anything") and not verify_password("garbage", "x")


def test_ip_allowlist() -> None:
    nets = parse_networks(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])
    assert ip_allowed(nets, "10.2.3.4") and ip_allowed(nets, "2001:db8::1") and ip_allowed(nets, "192.0.2.7")
    assert not ip_allowed(nets, "192.0.2.8") and not ip_allowed(nets, "not-an-ip")
    assert ip_allowed(None, "203.0.113.1")
    with pytest.raises(BadRequest, match="not an IP address"):
        KeyOptions(ip_allowlist=("10.0.0.0/33",))


async def test_sliding_window() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter(clock=lambda: now[0])
    assert await limiter.hit("k", 2, 60) is None
    assert await limiter.hit("k", 2, 60) is None
    assert await limiter.hit("k", 2, 60) == pytest.approx(60)
    now[0] = 30
    assert await limiter.hit("k", 2, 60) == pytest.approx(30)
    now[0] = 60.5
    assert await limiter.hit("k", 2, 60) is None


async def test_daily_quota_resets_with_the_day() -> None:
    quota = MemoryDailyQuota()
    day = date(2030, 1, 1)
    assert await quota.take("ip", 1, day) and not await quota.take("ip", 1, day)
    await quota.give_back("ip", day)
    assert await quota.take("ip", 1, day)
    assert await quota.take("ip", 1, day + timedelta(days=1))


async def test_expired_lot_cannot_be_spent_and_posts_an_expiry(sqlite_url: str, services: ServiceFactory) -> None:
    service = await services(sqlite_url)
    account = await service.create_account("exp@example.com")
    await service.add_credits(account["id"], 1_000_000, "bonus", expires_in_days=1)
    await service.add_credits(account["id"], 500_000, "topup", expires_in_days=30)
    key = await service.create_key(account["id"], KeyOptions())
    principal = await service.authenticate(key["key"], "127.0.0.1")
    model = service.catalog.get("plain-model")
    assert model is not None
    real_now = service.now()
    service.now = lambda: real_now + timedelta(days=2)  # type: ignore[method-assign]
    with pytest.raises(PaymentRequired, match=r"balance 0\.50 INR"):
        await service.reserve(principal, model, 600_000, "too-much")
    assert await service.sweep_expired() == 1
    data, _ = await service.transactions_page(account["id"], 10, None)
    assert data[0]["type"] == "EXPIRY" and data[0]["amount"] == -1
    view = await service.account_view(account["id"])
    assert view["balance"] == 0.5 and [lot["kind"] for lot in view["lots"]] == ["topup"]

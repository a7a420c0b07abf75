"""Both rate-limit back ends through the same cases: the in-memory one, and Redis (a real
server: CREDITGATE_TEST_REDIS_URL, started by scripts/test.sh)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from datetime import date

import pytest
from redis.asyncio import Redis

from creditgate.ratelimit import DailyQuota, RateLimiter
from creditgate.ratelimit.memory import MemoryDailyQuota, SlidingWindowLimiter
from creditgate.ratelimit.redis import RedisDailyQuota, RedisRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis_or_none() -> AsyncIterator[Redis | None]:
    url = os.environ.get("CREDITGATE_TEST_REDIS_URL")
    if not url:
        yield None
        return
    client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def redis(redis_or_none: Redis | None) -> Redis:
    if redis_or_none is None:
        pytest.skip("set CREDITGATE_TEST_REDIS_URL to run the Redis tests")
    return redis_or_none


def _unique() -> str:
    return "t" + secrets.token_hex(6) + ":"


@pytest.fixture(params=["memory", "redis"])
def limiter_and_clock(request: pytest.FixtureRequest, redis_or_none: Redis | None) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    if request.param == "memory":
        return SlidingWindowLimiter(clock=clock), clock
    if redis_or_none is None:
        pytest.skip("set CREDITGATE_TEST_REDIS_URL to run the Redis tests")
    return RedisRateLimiter(redis_or_none, prefix=_unique(), clock=clock), clock


@pytest.fixture(params=["memory", "redis"])
def quota(request: pytest.FixtureRequest, redis_or_none: Redis | None) -> DailyQuota:
    if request.param == "memory":
        return MemoryDailyQuota()
    if redis_or_none is None:
        pytest.skip("set CREDITGATE_TEST_REDIS_URL to run the Redis tests")
    return RedisDailyQuota(redis_or_none, prefix=_unique())


async def test_rpm_lets_the_limit_through_then_says_how_long_to_wait(
    limiter_and_clock: tuple[RateLimiter, Clock],
) -> None:
    limiter, clock = limiter_and_clock
    for _ in range(3):
        assert await limiter.hit("key:1", 3, 60.0) is None
        clock.now += 1
    wait = await limiter.hit("key:1", 3, 60.0)
    # The first hit was 3 s ago, so it leaves the window in 57 s.
    assert wait is not None and 56.9 <= wait <= 57.1
    assert await limiter.hit("key:2", 3, 60.0) is None  # other keys are not affected


async def test_rpm_window_slides(limiter_and_clock: tuple[RateLimiter, Clock]) -> None:
    limiter, clock = limiter_and_clock
    assert await limiter.hit("k", 2, 60.0) is None
    clock.now += 30
    assert await limiter.hit("k", 2, 60.0) is None
    assert await limiter.hit("k", 2, 60.0) is not None
    clock.now += 31  # the first hit has left the window; the second has not
    assert await limiter.hit("k", 2, 60.0) is None
    assert await limiter.hit("k", 2, 60.0) is not None


async def test_daily_quota_counts_per_key_and_day(quota: DailyQuota) -> None:
    today, tomorrow = date(2026, 11, 23), date(2026, 11, 24)
    assert [await quota.take("10.0.0.1", 2, today) for _ in range(3)] == [True, True, False]
    assert await quota.take("10.0.0.2", 2, today)
    await quota.give_back("10.0.0.1", today)  # a call that produced nothing
    assert await quota.take("10.0.0.1", 2, today)
    assert not await quota.take("10.0.0.1", 2, today)
    assert await quota.take("10.0.0.1", 2, tomorrow)


async def test_give_back_never_goes_below_zero(quota: DailyQuota) -> None:
    day = date(2026, 11, 23)
    await quota.give_back("ip", day)
    await quota.give_back("ip", day)
    assert [await quota.take("ip", 1, day) for _ in range(2)] == [True, False]


async def test_redis_limits_hold_across_gateways(redis: Redis) -> None:
    """Two limiters on one Redis (two gateway processes) share one count, even when their
    requests race."""
    prefix, clock = _unique(), Clock()
    a, b = RedisRateLimiter(redis, prefix=prefix, clock=clock), RedisRateLimiter(redis, prefix=prefix, clock=clock)
    results = await asyncio.gather(*(lim.hit("key:7", 10, 60.0) for lim in [a, b] * 15))
    assert sum(r is None for r in results) == 10
    qa, qb = RedisDailyQuota(redis, prefix=prefix), RedisDailyQuota(redis, prefix=prefix)
    day = date(2026, 11, 23)
    taken = await asyncio.gather(*(q.take("203.0.113.9", 5, day) for q in [qa, qb] * 10))
    assert sum(taken) == 5

"""Rate limits shared by every gateway process through Redis.

Both limits are single atomic server-side steps, so several gateways counting the same key
never race: the rpm limit is an exact sliding window kept in a sorted set (one Lua script
per request), the demo key's daily calls a counter per client IP and day that expires
after the day is over.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import date

from redis.asyncio import Redis

# KEYS[1] the window's sorted set; ARGV: now (ms), window (ms), limit, a unique member.
# Returns 0 when the request fits, else the milliseconds until the oldest hit leaves.
_SLIDING_WINDOW = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""

# KEYS[1] the day's counter; ARGV: limit, seconds to keep it. 1 when a call was taken.
_TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# Never below zero, even if a give-back arrives after the counter expired.
_GIVE_BACK = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
return 0
"""

_DAY_TTL_SECONDS = 2 * 86_400  # a day in any time zone, and the one after it


class RedisRateLimiter:
    """`RateLimiter` over Redis: the same exact sliding window as the in-memory one."""

    def __init__(self, redis: Redis, *, prefix: str = "creditgate:rl:", clock: Callable[[], float] = time.time) -> None:
        self._script = redis.register_script(_SLIDING_WINDOW)
        self._prefix = prefix
        self._clock = clock

    async def hit(self, key: str, limit: int, window: float) -> float | None:
        now_ms = int(self._clock() * 1000)
        member = f"{now_ms}:{secrets.token_hex(6)}"
        wait_ms = int(await self._script(keys=[self._prefix + key], args=[now_ms, int(window * 1000), limit, member]))
        return wait_ms / 1000 if wait_ms else None


class RedisDailyQuota:
    """`DailyQuota` over Redis: one counter per key and day."""

    def __init__(self, redis: Redis, *, prefix: str = "creditgate:quota:") -> None:
        self._take = redis.register_script(_TAKE)
        self._give_back = redis.register_script(_GIVE_BACK)
        self._prefix = prefix

    def _key(self, key: str, day: date) -> str:
        return f"{self._prefix}{day.isoformat()}:{key}"

    async def take(self, key: str, limit: int, day: date) -> bool:
        return bool(await self._take(keys=[self._key(key, day)], args=[limit, _DAY_TTL_SECONDS]))

    async def give_back(self, key: str, day: date) -> None:
        await self._give_back(keys=[self._key(key, day)])

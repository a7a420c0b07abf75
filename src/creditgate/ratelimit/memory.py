"""In-process rate limits for a single gateway."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import date


class SlidingWindowLimiter:
    """Exact sliding window: the times of the last `limit` requests per key. A request is
    let through when fewer than `limit` happened in the past `window` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, limit: int, window: float) -> float | None:
        now = self._clock()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self._max_keys:
                self._forget_idle(now, window)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            return hits[0] + window - now
        hits.append(now)
        return None

    def _forget_idle(self, now: float, window: float) -> None:
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - window]:
            del self._hits[key]


class MemoryDailyQuota:
    """Calls per key per day; yesterday's counts are dropped as soon as a new day is seen."""

    def __init__(self) -> None:
        self._day: date | None = None
        self._used: dict[str, int] = {}

    def _roll(self, day: date) -> None:
        if day != self._day:
            self._day = day
            self._used.clear()

    async def take(self, key: str, limit: int, day: date) -> bool:
        self._roll(day)
        used = self._used.get(key, 0)
        if used >= limit:
            return False
        self._used[key] = used + 1
        return True

    async def give_back(self, key: str, day: date) -> None:
        if day == self._day and self._used.get(key, 0) > 0:
            self._used[key] -= 1

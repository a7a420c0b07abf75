"""Rate limits behind two small protocols, so a Redis implementation can replace the
in-memory one when several gateways share the load."""

from __future__ import annotations

from datetime import date
from typing import Protocol


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window: float) -> float | None:
        """Count one request for `key`; None when it fits in `limit` per `window` seconds,
        else the seconds until it would."""
        ...


class DailyQuota(Protocol):
    async def take(self, key: str, limit: int, day: date) -> bool:
        """Use one of `key`'s `limit` calls for `day`; False when none are left."""
        ...

    async def give_back(self, key: str, day: date) -> None:
        """Return a call that produced nothing."""
        ...

"""HTTP to upstreams: keep-alive connection pools (`http1.py`), one per provider and origin,
with the provider's timeouts (connect, first byte, total) applied to every call.

Pools are created lazily inside the running event loop and closed at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from creditgate import http1
from creditgate.config import ProviderConfig
from creditgate.providers.base import UpstreamRequest


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    retry_after: float | None
    response: http1.Response

    async def read(self) -> bytes:
        return await self.response.read()

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, piece by piece; transport failures are `UpstreamError`s."""
        return self.response.chunks()

    def close(self) -> None:
        self.response.close()


def retry_after(headers: dict[bytes, bytes]) -> float | None:
    """Seconds the upstream asks us to wait (`retry-after-ms` or `retry-after` in seconds)."""
    raw_ms = headers.get(b"retry-after-ms")
    raw = headers.get(b"retry-after")
    try:
        if raw_ms is not None:
            return float(raw_ms) / 1000
        if raw is not None:
            return float(raw)
    except ValueError:
        return None
    return None


class UpstreamPool:
    """Keep-alive connection pools, one per provider and origin."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, tuple[str, str, int]], http1.Pool] = {}
        self._targets: dict[str, http1.Target] = {}

    def _target(self, url: str) -> http1.Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > 4096:  # URLs carry model names: keep the cache bounded
                self._targets.clear()
            target = self._targets[url] = http1.Target(url)
        return target

    def _pool(self, provider: ProviderConfig, target: http1.Target) -> http1.Pool:
        key = (provider.id, target.origin)
        pool = self._pools.get(key)
        if pool is None:
            scheme, host, port = target.origin
            pool = self._pools[key] = http1.Pool(
                scheme, host, port, limit=provider.max_connections, connect_timeout=provider.timeouts.connect
            )
        return pool

    async def post(self, provider: ProviderConfig, request: UpstreamRequest) -> UpstreamResponse:
        """Send the request; return once the upstream's status line and headers arrived.
        The caller reads or streams the body, or closes the response."""
        target = self._target(request.url)
        t = provider.timeouts
        resp = await http1.post(
            self._pool(provider, target), target, request.headers, request.body, first_byte=t.first_byte, total=t.total
        )
        return UpstreamResponse(resp.status, retry_after(resp.headers), resp)

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()

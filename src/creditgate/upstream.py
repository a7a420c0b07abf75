"""HTTP to upstreams: keep-alive connection pools (`http1.py`), one per provider and origin,
with the provider's timeouts (connect, first byte, total) applied to every call.

Pools are created lazily inside the running event loop and closed at shutdown.
"""

from __future__ import annotations

from creditgate import http1
from creditgate.config import ProviderConfig
from creditgate.providers.base import UpstreamRequest

# What `UpstreamPool.post` returns: status, headers, `retry_after`, `read()`, `chunks()`, `close()`.
UpstreamResponse = http1.Response


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
        return await http1.post(
            self._pool(provider, target), target, request.headers, request.body, first_byte=t.first_byte, total=t.total
        )

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()

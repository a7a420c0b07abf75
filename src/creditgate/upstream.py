"""HTTP to upstreams: one pooled, keep-alive aiohttp session per provider, and the three
timeouts (connect, first byte, total) turned into `UpstreamError`s the router understands.

Sessions are created lazily inside the running event loop and closed at shutdown.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from creditgate.config import ProviderConfig
from creditgate.errors import UpstreamError, UpstreamTimeout
from creditgate.providers.base import UpstreamRequest


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    retry_after: float | None
    response: aiohttp.ClientResponse

    async def read(self) -> bytes:
        try:
            return await self.response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _classify(exc) from None
        finally:
            self.response.release()

    def close(self) -> None:
        self.response.close()


def _retry_after(headers: aiohttp.typedefs.LooseHeaders | None, resp: aiohttp.ClientResponse) -> float | None:
    raw_ms = resp.headers.get("retry-after-ms")
    raw = resp.headers.get("retry-after")
    try:
        if raw_ms is not None:
            return float(raw_ms) / 1000
        if raw is not None:
            return float(raw)
    except ValueError:
        return None
    return None


def _classify(exc: BaseException) -> UpstreamError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout("the upstream did not accept a connection in time", phase="connect")
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return UpstreamTimeout("the upstream did not answer in time", phase="first_byte")
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamTimeout("the upstream call took longer than its total timeout", phase="total")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError("could not connect to the upstream", upstream_status=0, kind="connect")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamError("the upstream closed the connection", upstream_status=0, kind="disconnected")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamError("the upstream's response was cut off", upstream_status=0, kind="stream_cut")
    return UpstreamError(f"upstream connection failed ({type(exc).__name__})", upstream_status=0, kind="connection")


class UpstreamPool:
    """Keep-alive connection pools, one per provider."""

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._timeouts: dict[str, aiohttp.ClientTimeout] = {}

    def _session(self, provider: ProviderConfig) -> aiohttp.ClientSession:
        session = self._sessions.get(provider.id)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=provider.max_connections,
                limit_per_host=provider.max_connections,
                ttl_dns_cache=300,
                keepalive_timeout=30,
            )
            t = provider.timeouts
            self._timeouts[provider.id] = aiohttp.ClientTimeout(
                total=t.total, sock_connect=t.connect, sock_read=t.first_byte
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeouts[provider.id],
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[provider.id] = session
        return session

    async def post(self, provider: ProviderConfig, request: UpstreamRequest) -> UpstreamResponse:
        """Send the request; return once the upstream's status line and headers arrived.
        The caller reads or streams the body and must release it."""
        session = self._session(provider)
        try:
            resp = await session.post(request.url, data=request.body, headers=request.headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _classify(exc) from None
        return UpstreamResponse(resp.status, _retry_after(None, resp), resp)

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            await s.close()


async def iter_body(response: aiohttp.ClientResponse):  # type: ignore[no-untyped-def]
    """The body as it arrives, chunk by chunk, with transport errors classified."""
    try:
        async for data in response.content.iter_any():
            yield data
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise _classify(exc) from None

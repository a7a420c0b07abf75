"""A bare pass-through HTTP proxy: the floor any Python gateway stands on.

It forwards the method, path, query and body to one upstream over one pooled client
session and streams the response back chunk by chunk. No parsing, no auth, no accounting.
Whatever creditgate adds on top of this is the cost of its features; whatever this adds on
top of going direct is the cost of a Python hop.

    python bench/passthrough.py --upstream http://127.0.0.1:8001 --port 8002
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

# hop-by-hop headers and those aiohttp recomputes itself
_DROP = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"})
_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
_UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)


async def forward(request: web.Request) -> web.StreamResponse:
    session = request.app[_SESSION]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
    body = await request.read()
    async with session.request(
        request.method, request.app[_UPSTREAM] + request.path_qs, data=body, headers=headers
    ) as upstream:
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP}
        out_headers.pop("Content-Encoding", None)
        response = web.StreamResponse(status=upstream.status, headers=out_headers)
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


def make_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[_UPSTREAM] = upstream.rstrip("/")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=4096, ttl_dns_cache=None)
        timeout = aiohttp.ClientTimeout(total=600, sock_connect=5)
        app[_SESSION] = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        yield
        await app[_SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8001")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(ImportError):  # same event loop the gateway's server uses
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(make_app(args.upstream), host=args.host, port=args.port, backlog=4096, access_log=None, print=None)


if __name__ == "__main__":
    main()

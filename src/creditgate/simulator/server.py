"""The simulator's HTTP application, and the ways to run it (in-process or blocking).

Every route exists twice: at the root (default behaviour) and under ``/x/{spec}`` where
``spec`` is a behaviour prefix (see ``behaviour.py``). ``/x/requests`` shows what was received.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from creditgate.simulator import anthropic_api, gemini_api, openai_api
from creditgate.simulator.behaviour import KNOWN_KEYS
from creditgate.simulator.endpoint import (
    STATE_KEY,
    anthropic_auth,
    endpoint,
    gemini_auth,
    openai_auth,
)
from creditgate.simulator.envelopes import Protocol
from creditgate.simulator.state import SimState
from creditgate.simulator.transport import json_response

SERVER_HEADER = "creditgate-simulator"
SHUTDOWN_TIMEOUT = 2.0


def _fixed(protocol: Protocol) -> Callable[[web.Request], Protocol]:
    return lambda _request: protocol


def _models_protocol(request: web.Request) -> Protocol:
    """``/v1/models`` is shared: Anthropic's SDK always sends ``anthropic-version``."""
    return Protocol.ANTHROPIC if "anthropic-version" in request.headers else Protocol.OPENAI


def _any_auth(request: web.Request) -> bool:
    return openai_auth(request) or anthropic_auth(request)


async def _set_server_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER


async def recent_requests(request: web.Request) -> web.Response:
    try:
        n = int(request.query.get("n", "20"))
    except ValueError:
        n = 20
    return json_response(orjson.dumps(request.app[STATE_KEY].recent(n)))


async def clear_requests(request: web.Request) -> web.Response:
    request.app[STATE_KEY].requests.clear()
    return web.Response(status=204)


_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>creditgate upstream SIMULATOR</title></head>
<body style="font-family: sans-serif; max-width: 46em; margin: 2em auto">
<h1>creditgate upstream simulator</h1>
<p><strong>This is a simulator, not a language model.</strong> Replies are deterministic text
made up from the request, so gateways, tests and benchmarks have a predictable upstream.</p>
<h2>Endpoints</h2>
<ul>
<li>OpenAI: <code>POST /v1/chat/completions</code>, <code>GET /v1/models</code>,
<code>GET /v1/models/{id}</code></li>
<li>Anthropic: <code>POST /v1/messages</code>, <code>POST /v1/messages/count_tokens</code></li>
<li>Gemini: <code>POST /v1beta/models/{model}:generateContent</code>,
<code>:streamGenerateContent?alt=sse</code>, <code>:countTokens</code>, <code>GET /v1beta/models</code></li>
<li><code>GET /x/requests?n=20</code> (the last requests received), <code>DELETE /x/requests</code></li>
</ul>
<h2>Behaviour prefixes</h2>
<p>Put <code>/x/key=value,key=value</code> before any endpoint, e.g.
<code>/x/ttft_ms=200,tps=50,tokens=40/v1/chat/completions</code>. Keys: %s.</p>
</body></html>
"""


async def index(_request: web.Request) -> web.Response:
    keys = ", ".join(f"<code>{html.escape(k)}</code>" for k in sorted(KNOWN_KEYS))
    return web.Response(text=_INDEX % keys, content_type="text/html")


def create_app() -> web.Application:
    """A fresh simulator application with its own request log and counters."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = SimState()
    app.on_response_prepare.append(_set_server_header)
    openai = _fixed(Protocol.OPENAI)
    anthropic = _fixed(Protocol.ANTHROPIC)
    gemini = _fixed(Protocol.GEMINI)
    routes = app.router
    routes.add_get("/", index)
    routes.add_get("/x/requests", recent_requests)
    routes.add_delete("/x/requests", clear_requests)
    routes.add_get("/x/{spec}/x/requests", recent_requests)
    routes.add_delete("/x/{spec}/x/requests", clear_requests)
    for base in ("", "/x/{spec}"):
        routes.add_post(base + "/v1/chat/completions", endpoint(openai, openai_auth, openai_api.chat_completions))
        routes.add_get(
            base + "/v1/models", endpoint(_models_protocol, _any_auth, openai_api.list_models, has_body=False)
        )
        routes.add_get(
            base + "/v1/models/{model_id}",
            endpoint(_models_protocol, _any_auth, openai_api.get_model, has_body=False),
        )
        routes.add_post(base + "/v1/messages", endpoint(anthropic, anthropic_auth, anthropic_api.messages))
        routes.add_post(
            base + "/v1/messages/count_tokens",
            endpoint(anthropic, anthropic_auth, anthropic_api.count_tokens),
        )
        for version in ("/v1beta", "/v1"):
            routes.add_post(base + version + "/models/{target}", endpoint(gemini, gemini_auth, gemini_api.model_action))
        routes.add_get(base + "/v1beta/models", endpoint(gemini, gemini_auth, gemini_api.list_models, has_body=False))
    return app


@dataclass
class SimulatorHandle:
    """A running in-process simulator. ``url`` has no trailing slash and no ``/v1``."""

    port: int
    url: str
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


async def start(host: str = "127.0.0.1", port: int = 0) -> SimulatorHandle:
    """Start the simulator on the running event loop; ``port=0`` picks a free port."""
    runner = web.AppRunner(create_app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1])
    shown = f"[{host}]" if ":" in host else host
    return SimulatorHandle(port=bound, url=f"http://{shown}:{bound}", runner=runner)


def serve(host: str, port: int) -> None:
    """Run the simulator until interrupted (uses uvloop when it is installed)."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop

    async def main() -> None:
        handle = await start(host, port)
        print(
            f"creditgate upstream SIMULATOR listening on {handle.url} (replies are simulated, not from a real model)",
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await handle.close()

    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())

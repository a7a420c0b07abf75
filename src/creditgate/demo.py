"""Demo mode: the gateway on SQLite with the built-in simulator as every upstream, a demo
account with credits, and a ready curl line."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import uvicorn

from creditgate.config import EnvSettings, load_settings
from creditgate.http_protocol import HttpProtocol

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
DEMO_CREDITS = 1_000 * 1_000_000  # 1,000 units of the demo currency, in micros


async def run_demo(*, host: str, port: int, sim_port: int, database: str) -> None:
    from creditgate import simulator
    from creditgate.app import create_app
    from creditgate.ledger.service import ensure_demo_account
    from creditgate.storage.migrations import migrate

    sim = await simulator.start("127.0.0.1", sim_port)
    try:
        os.environ["CREDITGATE_SIM_URL"] = sim.url
        env = EnvSettings()
        env.database_url = env.database_url or database
        settings = load_settings(DEMO_CONFIG, env=env)
        await migrate(settings.database_url)
        app = create_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(
                app, host=host, port=port, http=HttpProtocol, access_log=False, log_level="warning", lifespan="on"
            )
        )
        serving = asyncio.ensure_future(server.serve())
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no "started" event)
            await asyncio.sleep(0.05)
        if server.started:
            key = await ensure_demo_account(app.state.services.billing_service, credits=DEMO_CREDITS)
            _banner(host, port, sim.url, key, settings.file.billing.demo_key, settings.file.currency.code)
        await serving
    finally:
        await sim.close()


def _banner(host: str, port: int, sim_url: str, key: str, public_key: str | None, currency: str) -> None:
    base = f"http://{host}:{port}"
    print(
        f"""
creditgate demo is running at {base}  (docs: {base}/docs)
Every upstream is the built-in SIMULATOR at {sim_url}: replies are simulated, not from a real model.

Demo account key ({currency} 1000 of credits): {key}
Public demo key (a few free calls per IP per day, cheap models only): {public_key}

Try it:
  curl {base}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "deepseek/deepseek-chat", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

Press Ctrl-C to stop.
""",
        flush=True,
    )

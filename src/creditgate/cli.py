"""The `creditgate` command: serve, demo, simulate, and the operator's account tools."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from starlette.types import ASGIApp

from creditgate.config import ConfigError, Settings, load_settings
from creditgate.http_protocol import HttpProtocol

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="creditgate: an LLM API gateway that bills prepaid credits per token.",
)
console = Console(stderr=True)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config (or CREDITGATE_CONFIG)")]
HostOpt = Annotated[str, typer.Option(help="address to listen on")]


def _settings(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _uvicorn_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=HttpProtocol,
        access_log=False,
        log_level="warning",
        lifespan="on",
        timeout_keep_alive=30,
    )


async def _migrate(settings: Settings) -> None:
    from creditgate.storage.migrations import migrate

    await migrate(settings.database_url)


@app.command()
def serve(
    config: ConfigOpt = None,
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="worker processes (share the database)")] = 1,
) -> None:
    """Run the gateway. Applies pending database migrations first."""
    settings = _settings(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.file.billing.enabled:  # with billing off there is no database
        asyncio.run(_migrate(settings))
    if not settings.admin_token:
        console.print("[yellow]note:[/yellow] CREDITGATE_ADMIN_TOKEN is not set: the admin API is off")
    console.print(
        f"creditgate listening on http://{host}:{port} ({len(settings.file.models)} models, "
        f"database {settings.database_url.split('://')[0]}, {workers} worker(s))"
    )
    if workers > 1:
        # Each worker process builds its own app from the same config file.
        os.environ["CREDITGATE_CONFIG"] = str(Path(settings.source).resolve())
        uvicorn.run(
            "creditgate.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http=HttpProtocol,
            access_log=False,
            log_level="warning",
            timeout_keep_alive=30,
        )
        return
    from creditgate.app import create_app

    uvicorn.Server(_uvicorn_config(create_app(settings), host, port)).run()


@app.command()
def simulate(
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 9100,
) -> None:
    """Run the upstream simulator (OpenAI, Anthropic and Gemini wire protocols)."""
    from creditgate.simulator import serve as serve_simulator

    serve_simulator(host, port)


@app.command()
def demo(
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port for the gateway")] = 8000,
    sim_port: Annotated[int, typer.Option(help="port for the built-in simulator")] = 9100,
    database: Annotated[str, typer.Option(help="database URL")] = "sqlite:///creditgate-demo.db",
) -> None:
    """Run the gateway on SQLite with the built-in simulator as every upstream, and a demo
    account whose key it prints."""
    from creditgate.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run_demo(host=host, port=port, sim_port=sim_port, database=database))
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Validate a configuration file and print what it defines."""
    settings = _settings(config)
    f = settings.file
    console.print(
        f"[green]ok[/green]: {len(f.providers)} providers, {len(f.models)} models, "
        f"currency {f.currency.code}, database {settings.database_url.split('://')[0]}"
    )


def _register_admin() -> None:
    from creditgate.cli_admin import accounts_app, credits_app, keys_app

    app.add_typer(accounts_app, name="accounts", help="Create, show and suspend accounts.")
    app.add_typer(keys_app, name="keys", help="Issue, reset and revoke API keys.")
    app.add_typer(credits_app, name="credits", help="Grant credits, list transactions, expire lots.")


_register_admin()


def main() -> None:
    sys.exit(app())

"""`creditgate accounts|keys|credits ...`: the admin API's operations, run directly against
the database named by the config file (--config or CREDITGATE_CONFIG) or by
CREDITGATE_DATABASE_URL. Changes reach running gateways' caches within a second."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from creditgate.accounts import KeyOptions
from creditgate.api.admin import timestamp
from creditgate.catalog import Catalog
from creditgate.config import ConfigError, EnvSettings, FileConfig, Settings, load_settings, settings_from
from creditgate.errors import GatewayError
from creditgate.ledger.service import BillingService, open_billing
from creditgate.money import AmountError, to_micros

accounts_app = typer.Typer(no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(no_args_is_help=True, add_completion=False)
credits_app = typer.Typer(no_args_is_help=True, add_completion=False)
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config (or CREDITGATE_CONFIG)")]
T = TypeVar("T")


def load(config: str | None) -> Settings:
    env = EnvSettings()
    try:
        if config is None and env.config is None and env.database_url:
            return settings_from(FileConfig.model_validate({}), env=env)
        return load_settings(config, env=env)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def run(config: str | None, job: Callable[[BillingService], Awaitable[T]]) -> T:
    """Open the billing service on the configured database, run `job`, close it."""
    settings = load(config)

    async def main() -> T:
        service = await open_billing(settings, Catalog(settings.file), poll_interval=3600, sweep_interval=3600)
        try:
            return await job(service)
        finally:
            await service.close()

    try:
        return asyncio.run(main())
    except GatewayError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None


def micros(text: str, what: str) -> int:
    try:
        return to_micros(text)
    except AmountError as exc:
        err.print(f"[red]error:[/red] {what}: {exc}")
        raise typer.Exit(2) from None


def show_account(view: dict[str, Any]) -> None:
    table = Table(title=f"account {view['id']}", show_header=False)
    for field in (
        "email",
        "name",
        "status",
        "kind",
        "currency",
        "balance",
        "held",
        "available",
        "trial_calls_left",
        "topped_up",
        "daily_cap",
        "created_at",
    ):
        table.add_row(field, str(view.get(field)))
    out.print(table)
    if view.get("lots"):
        lots = Table("lot", "kind", "amount", "remaining", "expires at", title="lots (soonest expiry first)")
        for lot in view["lots"]:
            lots.add_row(str(lot["id"]), lot["kind"], str(lot["amount"]), str(lot["remaining"]), lot["expires_at"])
        out.print(lots)


# --- accounts ------------------------------------------------------------------------------


@accounts_app.command("create")
def accounts_create(
    email: str,
    name: Annotated[str, typer.Option(help="display name")] = "",
    trial: Annotated[bool, typer.Option(help="give the free trial calls")] = False,
    config: ConfigOpt = None,
) -> None:
    """Create an account (no free trial unless --trial)."""
    show_account(run(config, lambda s: s.create_account(email, name=name, trial=trial)))


@accounts_app.command("show")
def accounts_show(account_id: int, config: ConfigOpt = None) -> None:
    """Balance, holds, lots and trial calls of one account."""
    show_account(run(config, lambda s: s.account_view(account_id)))


@accounts_app.command("list")
def accounts_list(limit: int = 100, config: ConfigOpt = None) -> None:
    rows = run(config, lambda s: s.list_accounts(limit))
    table = Table("id", "email", "name", "status", "balance", "trial calls")
    for v in rows:
        table.add_row(
            str(v["id"]),
            v["email"],
            v["name"],
            v["status"],
            f"{v['balance']} {v['currency']}",
            str(v["trial_calls_left"]),
        )
    out.print(table)


@accounts_app.command("suspend")
def accounts_suspend(account_id: int, config: ConfigOpt = None) -> None:
    """Refuse every key of the account until it is activated again."""
    show_account(run(config, lambda s: s.set_account(account_id, status="suspended")))


@accounts_app.command("activate")
def accounts_activate(account_id: int, config: ConfigOpt = None) -> None:
    show_account(run(config, lambda s: s.set_account(account_id, status="active")))


@accounts_app.command("usage")
def accounts_usage(account_id: int, limit: int = 50, config: ConfigOpt = None) -> None:
    """The latest usage records, newest first."""
    data, _ = run(config, lambda s: s.usage_page(account_id, limit, None))
    table = Table("request", "model", "in", "out", "cost", "status", "when")
    for u in data:
        cost = f"{u['cost']}" + (" (sponsored)" if u["sponsor"] else "") + (" est." if u["estimated"] else "")
        table.add_row(
            u["request_id"],
            u["model"],
            str(u["prompt_tokens"]),
            str(u["completion_tokens"]),
            cost,
            u["status"],
            u["created_at"],
        )
    out.print(table)


# --- keys ----------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    account_id: int,
    name: Annotated[str, typer.Option(help="a label for the key")] = "",
    model: Annotated[list[str] | None, typer.Option(help="allowed model (repeat); default: all")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="allowed IP or CIDR (repeat); default: anywhere")] = None,
    expires_at: Annotated[str | None, typer.Option(help="ISO 8601 expiry time")] = None,
    daily_cap: Annotated[str | None, typer.Option(help="daily spending cap, e.g. 2.50")] = None,
    rpm: Annotated[int | None, typer.Option(help="requests per minute")] = None,
    config: ConfigOpt = None,
) -> None:
    """Issue a key. It is shown once: copy it now."""
    try:
        options = KeyOptions(
            name=name,
            models=tuple(model) if model else None,
            ip_allowlist=tuple(ip) if ip else None,
            expires_at=timestamp(expires_at, "expires_at"),
            daily_cap=micros(daily_cap, "daily cap") if daily_cap is not None else None,
            rpm=rpm,
        )
    except GatewayError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    made = run(config, lambda s: s.create_key(account_id, options))
    out.print(f"key {made['id']} for account {account_id} (shown once):")
    out.print(made["key"], soft_wrap=True)


@keys_app.command("list")
def keys_list(account_id: int, config: ConfigOpt = None) -> None:
    keys = run(config, lambda s: s.list_keys(account_id))
    table = Table("id", "name", "prefix", "models", "ip allowlist", "daily cap", "rpm", "expires at")
    for k in keys:
        table.add_row(
            str(k["id"]),
            k["name"],
            k["prefix"] + "…",
            ", ".join(k["models"] or ["all"]),
            ", ".join(k["ip_allowlist"] or ["anywhere"]),
            str(k["daily_cap"] or "-"),
            str(k["rpm"] or "-"),
            k["expires_at"] or "-",
        )
    out.print(table)


@keys_app.command("reset")
def keys_reset(key_id: int, config: ConfigOpt = None) -> None:
    """Replace the key's secret; the old one stops working at once."""
    made = run(config, lambda s: s.reset_key(key_id))
    out.print(f"new secret for key {key_id} (shown once):")
    out.print(made["key"], soft_wrap=True)


@keys_app.command("revoke")
def keys_revoke(key_id: int, config: ConfigOpt = None) -> None:
    run(config, lambda s: s.delete_key(key_id))
    out.print(f"key {key_id} revoked")


# --- credits -------------------------------------------------------------------------------


@credits_app.command("grant")
def credits_grant(
    account_id: int,
    amount: str,
    kind: Annotated[str, typer.Option(help="grant, topup or bonus")] = "grant",
    expires_in_days: Annotated[int | None, typer.Option(help="default: billing.lot_expiry_days")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="replaying it changes nothing")] = None,
    config: ConfigOpt = None,
) -> None:
    """Add a lot of credits to an account."""
    value = micros(amount, "amount")
    made = run(
        config,
        lambda s: s.add_credits(
            account_id, value, kind, expires_in_days=expires_in_days, idempotency_key=idempotency_key
        ),
    )
    note = " (replayed: nothing changed)" if made["replayed"] else ""
    out.print(
        f"{made['kind']} of {made['amount']} {made['currency']} to account {account_id}, "
        f"lot {made['lot_id']}, expires {made['expires_at']}{note}"
    )


@credits_app.command("transactions")
def credits_transactions(account_id: int, limit: int = 50, config: ConfigOpt = None) -> None:
    data, _ = run(config, lambda s: s.transactions_page(account_id, limit, None))
    table = Table("id", "type", "amount", "description", "when")
    for t in data:
        table.add_row(t["id"], t["type"], str(t["amount"]), t["description"], t["createdAt"])
    out.print(table)


@credits_app.command("expire")
def credits_expire(config: ConfigOpt = None) -> None:
    """Post the expiry of every lot past its date (the gateway also does this every minute)."""

    async def job(service: BillingService) -> int:
        with Progress(console=err) as progress:
            task = progress.add_task("expiring lots", total=None)

            def report(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            return await service.sweep_expired(progress=report)

    count = run(config, job)
    out.print(f"{count} lot(s) expired")

"""Configuration: one YAML file (providers, models, prices, billing rules) plus a few
environment settings that override it.

The YAML is validated at start-up. An error names the bad key and its line, e.g.
`creditgate.yaml:14: models[2].price.input: Input should be a valid decimal`. Strings may
use `${VAR}` (an error if VAR is unset) or `${VAR:-default}` for secrets.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from creditgate.money import AmountError, to_micros


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(Strict):
    connect: float = Field(5.0, gt=0, description="seconds to open a connection")
    first_byte: float = Field(60.0, gt=0, description="seconds until the upstream's response starts")
    total: float = Field(600.0, gt=0, description="seconds for the whole upstream call")


class ProviderConfig(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["openai", "anthropic", "gemini"]
    base_url: str
    api_key: str = ""
    timeouts: Timeouts = Timeouts()
    max_connections: int = Field(256, ge=1)
    headers: dict[str, str] = {}
    # OpenAI-compatible vendors that lack a parameter get it rewritten (PROTOCOLS.md §H).
    quirks: frozenset[str] = frozenset()

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError("base_url must start with http:// or https://")
        return v.rstrip("/")


class DeploymentConfig(Strict):
    provider: str
    model: str
    priority: int = Field(0, description="lower is tried first")
    weight: int = Field(1, ge=0, description="share of traffic among deployments of one priority")


class PriceConfig(Strict):
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write_input: Decimal | None = None

    @model_validator(mode="after")
    def _exact(self) -> PriceConfig:
        for name in ("input", "output", "cached_input", "cache_write_input"):
            value = getattr(self, name)
            if value is None:
                continue
            if value < 0:
                raise ValueError(f"{name} must not be negative")
            try:
                to_micros(value)
            except AmountError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return self


class ModelConfig(Strict):
    id: str
    name: str = ""
    owned_by: str = ""
    context_window: int = Field(8192, ge=1)
    max_output_tokens: int = Field(4096, ge=1)
    vision: bool = False
    tags: frozenset[str] = frozenset()
    rank: int = Field(0, description="quality rank for auto-best: higher is better")
    price: PriceConfig
    deployments: list[DeploymentConfig] = Field(min_length=1)


class CurrencyConfig(Strict):
    code: str = Field("USD", pattern=r"^[A-Z]{3}$")
    symbol: str = "$"
    credits_name: str = "credits"


class BillingConfig(Strict):
    enabled: bool = Field(True, description="false: no accounts, holds or charges (see open_access.py)")
    open_keys: tuple[str, ...] = Field((), description="with billing off: the accepted keys (empty: any key)")
    min_balance: Decimal = Decimal(0)
    trial_calls: int = Field(10, ge=0)
    premium_min_topup: Decimal = Decimal(5)
    lot_expiry_days: int = Field(365, ge=1)
    timezone: str = "UTC"
    demo_key: str | None = "sk-creditgate-demo-public"
    demo_calls_per_ip: int = Field(5, ge=0)
    message_overhead_tokens: int = Field(8, ge=0, description="hold allowance per message")
    image_tokens: int = Field(2000, ge=0, description="hold allowance per image")
    group_commit_ms: float = Field(
        0.0,
        ge=0,
        description="how long a settlement waits for company when the writer is idle; 0 commits at once "
        "(under load, settlements that arrive during a commit share the next one)",
    )
    sqlite_synchronous: Literal["normal", "full"] = Field(
        "normal",
        description="SQLite only: normal survives a crash of the gateway; full also survives a power cut "
        "(an fsync per commit)",
    )


class ServerConfig(Strict):
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_attempts: int = Field(3, ge=1, description="upstream attempts per request, failovers included")
    cooldown_seconds: float = Field(30.0, ge=0)
    failure_threshold: int = Field(3, ge=1, description="consecutive failures that open a breaker")


class FileConfig(Strict):
    database: str = "sqlite:///creditgate.db"
    redis: str | None = None
    currency: CurrencyConfig = CurrencyConfig()
    billing: BillingConfig = BillingConfig()
    server: ServerConfig = ServerConfig()
    providers: list[ProviderConfig] = []
    models: list[ModelConfig] = []
    auto: dict[str, Any] = {}
    demo: bool = Field(False, description="create the demo account and print its key at start-up")

    @model_validator(mode="after")
    def _references(self) -> FileConfig:
        ids = [p.id for p in self.providers]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"provider ids must be unique; repeated: {', '.join(sorted(dup))}")
        model_ids = [m.id for m in self.models]
        dup = {i for i in model_ids if model_ids.count(i) > 1}
        if dup:
            raise ValueError(f"model ids must be unique; repeated: {', '.join(sorted(dup))}")
        known = set(ids)
        for m in self.models:
            for d in m.deployments:
                if d.provider not in known:
                    raise ValueError(
                        f"model {m.id!r} deploys on provider {d.provider!r}, which is not in providers "
                        f"(known: {', '.join(sorted(known)) or 'none'})"
                    )
        return self


class EnvSettings(BaseSettings):
    """Settings from the environment; each overrides the YAML file."""

    model_config = SettingsConfigDict(env_prefix="CREDITGATE_", extra="ignore")

    config: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    admin_token: str | None = None


class Settings(BaseModel):
    """Everything the app needs, resolved."""

    model_config = ConfigDict(frozen=True)

    file: FileConfig
    database_url: str
    redis_url: str | None
    admin_token: str | None
    source: str = "<memory>"


# --- loading -------------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _substitute(node: yaml.Node, source: str) -> None:
    if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str) and "${" in node.value:

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = os.environ.get(name)
            if value is None:
                if default is None:
                    raise ConfigError(
                        f"{source}:{node.start_mark.line + 1}: environment variable {name} is not set "
                        f"(set it, or write ${{{name}:-default}})"
                    )
                return default
            return value

        node.value = _ENV.sub(repl, node.value)
    elif isinstance(node, yaml.MappingNode):
        for _key, value in node.value:
            _substitute(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _substitute(item, source)


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                # the key itself is unknown or missing: point at the mapping that holds it
                key = next((k for k, _ in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_config(text: str, source: str = "<config>") -> FileConfig:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if root is not None:
        _substitute(root, source)
    data = yaml.safe_load(yaml.serialize(root)) if root is not None else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the configuration must be a mapping of keys to values")
    if isinstance(data.get("database"), dict):  # accept `database: {url: ...}` as well
        data["database"] = data["database"].get("url", "")
    try:
        return FileConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            line = _line_of(root, loc)
            where = f"{source}:{line}" if line else source
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {_loc(loc)}: {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_settings(path: str | os.PathLike[str] | None = None, *, env: EnvSettings | None = None) -> Settings:
    env = env or EnvSettings()
    path = path or env.config
    if path is None:
        raise ConfigError("no configuration file: pass --config FILE or set CREDITGATE_CONFIG")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"configuration file {p} does not exist")
    file = parse_config(p.read_text(encoding="utf-8"), str(p))
    return settings_from(file, env=env, source=str(p))


def settings_from(file: FileConfig, *, env: EnvSettings | None = None, source: str = "<memory>") -> Settings:
    env = env or EnvSettings()
    return Settings(
        file=file,
        database_url=env.database_url or file.database,
        redis_url=env.redis_url or file.redis,
        admin_token=env.admin_token,
        source=source,
    )

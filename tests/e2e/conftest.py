"""End-to-end fixtures: a real simulator process and a real gateway process, talking HTTP on
127.0.0.1, with accounts made through the admin API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import free_port
from tests.e2e.sdk_support import Upstream

ADMIN_TOKEN = "test-admin-token-0123456789"

# Prices are per 1M tokens in the test currency (INR): 1 input token costs 1,000 micros
# and 1 output token 2,000 micros, so every charge is easy to check by hand.
CONFIG = """
database: sqlite:///unused.db
currency: {{code: INR, symbol: "₹", credits_name: Echos}}
billing:
  trial_calls: 3
  premium_min_topup: 100
  demo_key: sk-creditgate-demo-public
  demo_calls_per_ip: 2
  group_commit_ms: 2
server:
  max_body_bytes: 65536
  max_attempts: 3
  cooldown_seconds: 30
  failure_threshold: 3
providers:
  - {{id: sim, type: openai, base_url: "{sim}/v1", api_key: sim-key}}
  - {{id: sim-anthropic, type: anthropic, base_url: "{sim}", api_key: sim-key}}
  - {{id: sim-gemini, type: gemini, base_url: "{sim}", api_key: sim-key}}
  - {{id: sim-503, type: openai, base_url: "{sim}/x/status=503/v1", api_key: sim-key}}
  - {{id: sim-400, type: openai, base_url: "{sim}/x/status=400/v1", api_key: sim-key}}
  - {{id: sim-cut, type: openai, base_url: "{sim}/x/cut_after=3,tokens=20/v1", api_key: sim-key}}
  - {{id: sim-nousage, type: openai, base_url: "{sim}/x/usage=0,tokens=20/v1", api_key: sim-key}}
  - {{id: sim-slow, type: openai, base_url: "{sim}/x/tps=40,tokens=200/v1", api_key: sim-key}}
  - {{id: sim-hang, type: openai, base_url: "{sim}/x/hang=1/v1", api_key: sim-key,
     timeouts: {{connect: 1, first_byte: 1, total: 5}}}}
models:
  - {{id: test/echo, context_window: 8192, max_output_tokens: 256, tags: [cheap], rank: 10,
     price: {{input: 1000, output: 2000}}, deployments: [{{provider: sim, model: sim-echo}}]}}
  - {{id: test/vision, vision: true, max_output_tokens: 256, rank: 20,
     price: {{input: 1000, output: 2000}}, deployments: [{{provider: sim, model: sim-vision}}]}}
  - {{id: test/premium, max_output_tokens: 256, tags: [premium], rank: 90,
     price: {{input: 5000, output: 10000}}, deployments: [{{provider: sim, model: sim-premium}}]}}
  - {{id: test/claude, max_output_tokens: 256, vision: true, rank: 50,
     price: {{input: 1000, output: 2000, cached_input: 100, cache_write_input: 1250}},
     deployments: [{{provider: sim-anthropic, model: claude-sim}}]}}
  - {{id: test/gemini, max_output_tokens: 256, vision: true, rank: 40,
     price: {{input: 1000, output: 2000}}, deployments: [{{provider: sim-gemini, model: gemini-sim}}]}}
  - {{id: test/down, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-503, model: sim-down}}]}}
  - {{id: test/bad, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-400, model: sim-bad}}]}}
  - {{id: test/cut, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-cut, model: sim-cut}}]}}
  - {{id: test/nousage, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-nousage, model: sim-nousage}}]}}
  - {{id: test/slow, max_output_tokens: 1000, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-slow, model: sim-slow}}]}}
  - {{id: test/failover, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-503, model: a, priority: 0}}, {{provider: sim-hang, model: b, priority: 1}},
                   {{provider: sim, model: c, priority: 2}}]}}
"""


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def simulator() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "creditgate", "simulate", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/v1/models", proc)
        yield url
    finally:
        stop(proc)


@dataclass
class Gateway:
    url: str
    config: Path
    database_url: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    emails: list[str] = field(default_factory=list)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def start(self) -> None:
        assert self.log is not None
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "creditgate",
                "serve",
                "--config",
                str(self.config),
                "--port",
                self.url.rsplit(":", 1)[1],
            ],
            env=self.env,
            stdout=out,
            stderr=out,
        )
        wait_http(self.url + "/health", self.proc)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def admin(self, method: str, path: str, json: Any = None) -> httpx.Response:
        return httpx.request(
            method, self.url + path, json=json, timeout=30, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        )

    def account(
        self, credits: str | None = "100", *, trial: bool = False, kind: str = "grant", **key_options: Any
    ) -> tuple[int, str]:
        """A fresh account with `credits` (in INR) and a key; returns (account id, key)."""
        email = f"user{len(self.emails)}-{os.getpid()}-{time.monotonic_ns()}@example.com"
        self.emails.append(email)
        r = self.admin("POST", "/admin/accounts", {"email": email, "trial": trial})
        assert r.status_code == 201, r.text
        account_id = r.json()["id"]
        if credits is not None:
            r = self.admin("POST", f"/admin/accounts/{account_id}/credits", {"amount": credits, "kind": kind})
            assert r.status_code == 201, r.text
        r = self.admin("POST", f"/admin/accounts/{account_id}/keys", key_options)
        assert r.status_code == 201, r.text
        return account_id, r.json()["key"]

    def balance(self, account_id: int) -> dict[str, Any]:
        r = self.admin("GET", f"/admin/accounts/{account_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())


def launch_gateway(
    simulator: str, work: Path, config: str = CONFIG, *, database_url: str | None = None, **env: str
) -> Gateway:
    """Start a gateway process on `config` (a template with `{sim}` for the simulator URL),
    on SQLite in `work` unless `database_url` says otherwise. The caller stops it."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "creditgate.yaml"
    path.write_text(config.format(sim=simulator))
    db = database_url or f"sqlite:///{work / 'gateway.db'}"
    full_env = {**os.environ, "CREDITGATE_ADMIN_TOKEN": ADMIN_TOKEN, "CREDITGATE_DATABASE_URL": db, **env}
    full_env.pop("CREDITGATE_CONFIG", None)
    gw = Gateway(f"http://127.0.0.1:{free_port()}", path, db, full_env, log=work / "gateway.log")
    gw.start()
    return gw


def shutdown(gw: Gateway) -> None:
    if gw.proc is not None:
        stop(gw.proc)


def module_gateway(config: str, name: str) -> Any:
    """A module-scoped fixture: one gateway on `config` for the tests of a module."""

    @pytest.fixture(scope="module")
    def fixture(simulator: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
        gw = launch_gateway(simulator, tmp_path_factory.mktemp(name), config)
        try:
            yield gw
        finally:
            shutdown(gw)

    return fixture


@pytest.fixture
def upstream(simulator: str) -> Upstream:
    """The simulator's request log, cleared."""
    u = Upstream(simulator)
    u.clear()
    return u


@pytest.fixture(scope="session")
def gateway(simulator: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for the whole session, on the shared test catalog (`CONFIG`)."""
    gw = launch_gateway(simulator, tmp_path_factory.mktemp("gateway"))
    try:
        yield gw
    finally:
        shutdown(gw)


@pytest.fixture
def gateway_factory(simulator: str, tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start gateways of a test's own (config template, database, environment); all are
    stopped when the test ends."""
    started: list[Gateway] = []

    def make(config: str = CONFIG, **options: Any) -> Gateway:
        gw = launch_gateway(simulator, tmp_path / f"gw{len(started)}", config, **options)
        started.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in started:
            shutdown(gw)

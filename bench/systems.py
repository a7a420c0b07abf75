"""The systems a benchmark run compares, and how each one is started and reached.

Every system sits in front of the same simulator process. The client sends the same small
payload to each; only the model name differs (gateways map their public name to the
simulator's). Timing behaviour (time to first token, token rate) is chosen by a path prefix
on the simulator, so for direct and pass-through the client puts it in the URL, and for the
gateways the configured upstream base URL carries it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from procs import Proc, free_port, start, stop_on_error, wait_http

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LITELLM_VENV = BENCH / ".venv-litellm"

# scenario -> simulator behaviour prefix
PREFIX = {
    "plain": "",
    "stream": "/x/ttft_ms=0,tokens=20",
    "slow": "/x/ttft_ms=500,tps=20,tokens=20",
}
GATEWAY_MODEL = {"plain": "bench/sim", "stream": "bench/sim-stream", "slow": "bench/sim-slow"}
UPSTREAM_MODEL = "sim-fast"
CHAT = "/v1/chat/completions"
SIM_KEY = "sim"  # the simulator wants a key, any key


@dataclass
class Target:
    """One system under test, as the client sees it."""

    name: str
    base: str
    gateway: bool  # True: the model name selects the upstream timing; False: the URL prefix does
    proc: Proc | None  # the process whose CPU and memory are measured (None: nothing in between)
    key: str | None = None
    version: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def url(self, scenario: str) -> str:
        return self.base + (CHAT if self.gateway else PREFIX[scenario] + CHAT)

    def model(self, scenario: str) -> str:
        return GATEWAY_MODEL[scenario] if self.gateway else UPSTREAM_MODEL

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}


def wait_port(port: int, proc: Proc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not open port {port} within {timeout_s:.0f}s:\n{proc.tail()}")


def package_version(python: str | Path, dist: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True)
    except (subprocess.SubprocessError, OSError):
        return "unknown"
    return out.stdout.strip()


# --- the simulator and the pass-through ------------------------------------------------------


def start_simulator(log_dir: Path) -> tuple[Proc, str]:
    """The creditgate simulator, or the command in BENCH_UPSTREAM_CMD ({port} is filled in)
    to benchmark against another OpenAI-compatible upstream."""
    port = free_port()
    custom = os.environ.get("BENCH_UPSTREAM_CMD")
    if custom:
        argv = [part.replace("{port}", str(port)) for part in custom.split()]
    else:
        argv = [sys.executable, "-m", "creditgate", "simulate", "--host", "127.0.0.1", "--port", str(port)]
    proc = start("simulator", argv, env=None, log_dir=log_dir)
    with stop_on_error(proc):
        wait_port(port, proc, 60)
    return proc, f"http://127.0.0.1:{port}"


def start_passthrough(sim_url: str, log_dir: Path) -> Target:
    port = free_port()
    argv = [sys.executable, str(BENCH / "passthrough.py"), "--upstream", sim_url, "--port", str(port)]
    proc = start("passthrough", argv, env=None, log_dir=log_dir)
    with stop_on_error(proc):
        wait_port(port, proc, 30)
    return Target(
        "passthrough",
        f"http://127.0.0.1:{port}",
        gateway=False,
        proc=proc,
        key=SIM_KEY,
        version=f"aiohttp {package_version(sys.executable, 'aiohttp')}",
    )


# --- creditgate -------------------------------------------------------------------------------


def _admin(base: str, token: str, path: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        data: dict[str, object] = json.loads(resp.read())
    return data


def start_creditgate(sim_url: str, log_dir: Path, work: Path, workers: int, launcher: Sequence[str] = ()) -> Target:
    """The gateway with its normal features on, a fresh SQLite database, and one funded key
    whose per-minute limit is checked on every request but never reached. `launcher` replaces
    the `python -m creditgate` part of the command line."""
    name = "creditgate" if workers == 1 else f"creditgate x{workers}"
    data_dir = work / name.replace(" ", "-")
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob("bench.db*"):  # always a fresh ledger
        old.unlink()
    token = secrets.token_urlsafe(24)
    port = free_port()
    env = {
        **os.environ,
        "BENCH_SIM_URL": sim_url,
        "CREDITGATE_ADMIN_TOKEN": token,
        "CREDITGATE_DATABASE_URL": f"sqlite:///{data_dir / 'bench.db'}",
    }
    argv = [
        *(launcher or (sys.executable, "-m", "creditgate")),  # bench/call_profile.py brings its own
        "serve",
        "--config",
        str(BENCH / "creditgate.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    proc = start(name.replace(" ", "-"), argv, env=env, log_dir=log_dir)
    base = f"http://127.0.0.1:{port}"
    with stop_on_error(proc):
        wait_http(base + "/health", proc, 90)
        account = _admin(base, token, "/admin/accounts", {"email": "bench@example.com"})
        acc = account["id"]
        _admin(base, token, f"/admin/accounts/{acc}/credits", {"amount": "1000000", "kind": "grant"})
        try:
            key = _admin(base, token, f"/admin/accounts/{acc}/keys", {"name": "bench", "rpm": 100_000_000})
        except urllib.error.HTTPError:
            key = _admin(base, token, f"/admin/accounts/{acc}/keys", {})
    return Target(
        name,
        base,
        gateway=True,
        proc=proc,
        key=str(key["key"]),
        version=f"creditgate {package_version(sys.executable, 'creditgate')}",
        extra={"workers": workers},
    )


def start_creditgate_core(sim_url: str, log_dir: Path) -> Target:
    """The gateway with billing off (bench/creditgate-core.yaml): the same server, dialects,
    routing and upstream pool, with no accounts, holds, settlements or usage records."""
    port = free_port()
    argv = [sys.executable, "-m", "creditgate", "serve", "--config", str(BENCH / "creditgate-core.yaml")]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    proc = start("creditgate-core", argv, env={**os.environ, "BENCH_SIM_URL": sim_url}, log_dir=log_dir)
    base = f"http://127.0.0.1:{port}"
    with stop_on_error(proc):
        wait_http(base + "/health", proc, 90)
    return Target(
        "creditgate no billing",
        base,
        gateway=True,
        proc=proc,
        key="sk-bench-core",
        version=f"creditgate {package_version(sys.executable, 'creditgate')}",
    )


# --- LiteLLM ----------------------------------------------------------------------------------


def ensure_litellm(log_dir: Path, timeout_s: float = 1200) -> str:
    """Install the LiteLLM proxy into its own venv unless it is there; returns '' when it is
    usable, otherwise the reason it is not."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return ""
    log = log_dir / "litellm-install.log"
    try:
        with log.open("wb") as fh:
            if not (LITELLM_VENV / "bin" / "python").exists():
                subprocess.run(
                    [sys.executable, "-m", "venv", str(LITELLM_VENV)],
                    stdout=fh,
                    stderr=fh,
                    timeout=300,
                    check=True,
                )
            subprocess.run(
                [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"],
                stdout=fh,
                stderr=fh,
                timeout=timeout_s,
                check=True,
            )
    except (subprocess.SubprocessError, OSError) as exc:
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        tail = [ln for ln in lines if ln.startswith("ERROR")][-2:] or lines[-3:]
        return f"install failed ({type(exc).__name__}): {' / '.join(tail)[:300]}"
    return "" if exe.exists() else "install finished but the litellm command is missing"


def start_litellm(sim_url: str, log_dir: Path) -> Target:
    port = free_port()
    key = "sk-bench-" + secrets.token_hex(12)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV")}
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "BENCH_LITELLM_KEY": key,
            "BENCH_SIM_API_BASE": sim_url + PREFIX["plain"] + "/v1",
            "BENCH_SIM_STREAM_API_BASE": sim_url + PREFIX["stream"] + "/v1",
            "BENCH_SIM_SLOW_API_BASE": sim_url + PREFIX["slow"] + "/v1",
        }
    )
    argv = [
        str(LITELLM_VENV / "bin" / "litellm"),
        "--config",
        str(BENCH / "litellm.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    proc = start("litellm", argv, env=env, log_dir=log_dir)
    base = f"http://127.0.0.1:{port}"
    with stop_on_error(proc):
        wait_http(base + "/health/liveliness", proc, 180)
    return Target(
        "litellm",
        base,
        gateway=True,
        proc=proc,
        key=key,
        version=f"litellm {package_version(LITELLM_VENV / 'bin' / 'python', 'litellm')}",
    )

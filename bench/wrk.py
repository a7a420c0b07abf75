"""Throughput runs with wrk (a C load generator, one thread) and a generated Lua POST script.

wrk costs far less CPU per request than any Python client, which matters on a 2-core box
where client, gateway and upstream share the cores: with a Python client the client itself
becomes the bottleneck long before a fast server does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{auth}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nBENCH {{"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,'
    .. '"p50_us":%d,"p99_us":%d,"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


@dataclass
class WrkResult:
    requests: int
    errors: int
    duration_s: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.duration_s if self.duration_s > 0 else 0.0


def available() -> bool:
    return shutil.which("wrk") is not None


def ensure(log: Path) -> bool:
    """wrk on PATH, installing Debian's package when we are root; False if it cannot be had
    (the caller then falls back to the Python client)."""
    if available():
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("ab") as fh:
        for cmd in (
            ["apt-get", "install", "-y", "-q", "wrk"],
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "wrk"],
        ):
            try:
                subprocess.run(cmd, stdout=fh, stderr=fh, env=env, timeout=300, check=False)
            except subprocess.TimeoutExpired:
                return False
            if available():
                return True
    return False


def write_script(path: Path, body: bytes, key: str | None) -> Path:
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    path.write_text(_SCRIPT.format(body=body.decode(), auth=auth), encoding="utf-8")
    return path


def run(url: str, script: Path, *, connections: int, duration_s: float, timeout_s: float = 10.0) -> WrkResult:
    """One closed-loop wrk run: `connections` keep-alive connections, one thread."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={round(timeout_s)}s",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 30, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    data = json.loads(line[6:])
    return WrkResult(
        requests=data["requests"],
        errors=data["status_errors"] + data["socket_errors"],
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )

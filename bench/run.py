"""Side-by-side benchmark: direct to the simulator, a bare pass-through, creditgate (one and
two workers) and the LiteLLM proxy, in one run on this machine.

    .venv/bin/python bench/run.py [--quick] [--skip-litellm] [--rounds N]

Writes bench/results/latest.{md,json,png}. See bench/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load
import procs
import report
import systems
import wrk
from systems import Target

T = TypeVar("T")
RESULTS = systems.BENCH / "results"


@dataclass(frozen=True)
class Plan:
    rounds: int
    c1_s: float  # concurrency-1 run: duration cap ...
    c1_n: int  # ... and request cap
    c32_s: float
    stream_s: float
    stream_n: int
    burst: int
    warm_s: float


FULL = Plan(rounds=5, c1_s=4.0, c1_n=1500, c32_s=5.0, stream_s=3.0, stream_n=600, burst=1000, warm_s=2.0)
QUICK = Plan(rounds=1, c1_s=2.0, c1_n=600, c32_s=2.0, stream_s=1.5, stream_n=200, burst=1000, warm_s=1.0)


def arun(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log("installing matplotlib into this venv")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib>=3.8"], timeout=600, check=False)


class Bench:
    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[procs.Proc] = []
        self.sim: procs.Proc | None = None
        self.targets: list[Target] = []
        self.missing: dict[str, str] = {}
        self.notes: list[str] = []
        self.row_notes: dict[str, str] = {}  # shown next to a system's name in the table
        self.latencies: dict[str, list[float]] = {}
        self.scripts: dict[str, Path] = {}
        self.use_wrk = False  # decided in start_all

    # --- setup --------------------------------------------------------------------------------

    def add(self, target: Target) -> None:
        self.targets.append(target)
        if target.proc is not None:
            self.procs.append(target.proc)

    def start_all(self, skip_litellm: bool, use_wrk: bool) -> None:
        self.use_wrk = use_wrk and wrk.ensure(self.logs / "wrk-install.log")
        if use_wrk and not self.use_wrk:
            self.notes.append("wrk could not be installed: the Python client measured c=32 as well")
        pool = concurrent.futures.ThreadPoolExecutor(1)
        install = None if skip_litellm else pool.submit(systems.ensure_litellm, self.logs)
        self.sim, sim_url = systems.start_simulator(self.logs)
        self.procs.append(self.sim)
        log(f"simulator at {sim_url} (pid {self.sim.pid})")
        self.add(
            Target(
                "direct",
                sim_url,
                gateway=False,
                proc=None,
                key=systems.SIM_KEY,
                version=f"simulator (creditgate {systems.package_version(sys.executable, 'creditgate')})",
            )
        )
        self._try("passthrough", lambda: systems.start_passthrough(sim_url, self.logs))
        self._try("creditgate no billing", lambda: systems.start_creditgate_core(sim_url, self.logs))
        self._try("creditgate", lambda: systems.start_creditgate(sim_url, self.logs, self.work, 1))
        self._try("creditgate x2", lambda: systems.start_creditgate(sim_url, self.logs, self.work, 2))
        if install is None:
            self.missing["litellm"] = "skipped (--skip-litellm)"
        else:
            log("waiting for the LiteLLM install")
            why = install.result()
            if why:
                self.missing["litellm"] = why
            else:
                self._try("litellm", lambda: systems.start_litellm(sim_url, self.logs))
        pool.shutdown()

    def _try(self, name: str, starter: Any) -> None:
        try:
            target = starter()
        except Exception as exc:  # any failure to start is reported, the run goes on
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            # prefer the exception line of a traceback over a server's closing words
            lines = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception)\b", ln)] or lines
            self.missing[name] = f"did not start: {lines[-1][:200] if lines else type(exc).__name__}"
            log(f"{name}: {exc}")
            return
        self.add(target)
        log(f"{name} at {target.base} (pid {target.proc.pid if target.proc else '-'})")

    def check(self) -> None:
        """One request of each kind per system; a system that fails is dropped with the reason."""
        for t in list(self.targets):
            for scenario, stream in (("plain", False), ("stream", True)):
                body = load.chat_body(t.model(scenario), stream=stream)
                res = arun(
                    load.run_load(
                        t.url(scenario),
                        body,
                        t.headers(),
                        concurrency=1,
                        duration_s=30,
                        max_requests=1,
                        stream=stream,
                        timeout_s=30,
                    )
                )
                if res.errors:
                    self.missing[t.name] = f"{scenario} request failed: {res.error_samples[0][:200]}"
                    log(f"{t.name}: {self.missing[t.name]}")
                    self.targets.remove(t)
                    break
        if self.targets and (workers := self._workers("creditgate x2")) is not None and workers < 2:
            self.notes.append(f"creditgate x2 ran as {workers} process(es): the server did not fork workers")
            self.row_notes["creditgate x2"] = f"ran as {workers} process"

    def _workers(self, name: str) -> int | None:
        t = next((t for t in self.targets if t.name == name), None)
        if t is None or t.proc is None:
            return None
        return len(procs.tree(t.proc.pid))

    def script(self, t: Target) -> Path:
        if t.name not in self.scripts:
            path = self.work / f"{t.name.replace(' ', '-')}.lua"
            self.scripts[t.name] = wrk.write_script(path, load.chat_body(t.model("plain")), t.key)
        return self.scripts[t.name]

    # --- measuring ----------------------------------------------------------------------------

    def throughput(self, t: Target, seconds: float) -> tuple[float, float, int, int]:
        """(req/s, p99 ms, successful requests, errors) at concurrency 32."""
        if self.use_wrk:
            w = wrk.run(t.url("plain"), self.script(t), connections=32, duration_s=seconds)
            return w.rps, w.p99_ms, w.requests - w.errors, w.errors
        r = arun(
            load.run_load(
                t.url("plain"),
                load.chat_body(t.model("plain")),
                t.headers(),
                concurrency=32,
                duration_s=seconds,
                max_requests=10_000_000,
            )
        )
        return r.rps, load.percentile(r.latencies_ms, 99), r.ok, r.errors

    def warm_up(self) -> None:
        for t in self.targets:
            log(f"warm-up {t.name}")
            arun(
                load.run_load(
                    t.url("plain"),
                    load.chat_body(t.model("plain")),
                    t.headers(),
                    concurrency=4,
                    duration_s=self.plan.warm_s,
                    max_requests=2000,
                )
            )
            arun(
                load.run_load(
                    t.url("stream"),
                    load.chat_body(t.model("stream"), stream=True),
                    t.headers(),
                    concurrency=2,
                    duration_s=self.plan.warm_s / 2,
                    max_requests=200,
                    stream=True,
                )
            )
            self.throughput(t, 1)

    def measure(self, t: Target) -> dict[str, float]:
        p = self.plan
        fig: dict[str, float] = {}
        r = arun(
            load.run_load(
                t.url("plain"),
                load.chat_body(t.model("plain")),
                t.headers(),
                concurrency=1,
                duration_s=p.c1_s,
                max_requests=p.c1_n,
            )
        )
        self.latencies.setdefault(t.name, []).extend(r.latencies_ms)
        fig.update(
            c1_p50=load.percentile(r.latencies_ms, 50),
            c1_p99=load.percentile(r.latencies_ms, 99),
            c1_n=len(r.latencies_ms),
            c1_errors=r.errors,
        )

        assert self.sim is not None
        pids = procs.tree((t.proc or self.sim).pid)
        sim_pids = procs.tree(self.sim.pid)
        cpu0, sim0 = procs.cpu_seconds(pids), procs.cpu_seconds(sim_pids)
        rps, p99, ok, errors = self.throughput(t, p.c32_s)
        cpu1, sim1 = procs.cpu_seconds(pids), procs.cpu_seconds(sim_pids)
        fig.update(
            c32_rps=rps,
            c32_p99=p99,
            c32_errors=errors,
            cpu_us=(cpu1 - cpu0) / ok * 1e6 if ok else float("nan"),
            sim_cpu_us=(sim1 - sim0) / ok * 1e6 if ok else float("nan"),
        )

        r = arun(
            load.run_load(
                t.url("stream"),
                load.chat_body(t.model("stream"), stream=True),
                t.headers(),
                concurrency=1,
                duration_s=p.stream_s,
                max_requests=p.stream_n,
                stream=True,
            )
        )
        fig.update(
            ttft_p50=load.percentile(r.ttft_ms, 50),
            gap_p50=load.percentile(r.gaps_ms, 50),
            stream_p50=load.percentile(r.latencies_ms, 50),  # to the last byte (JSON only)
            stream_n=len(r.ttft_ms),
            stream_errors=r.errors,
        )
        return fig

    def rounds(self) -> list[dict[str, dict[str, float]]]:
        out: list[dict[str, dict[str, float]]] = []
        for i in range(self.plan.rounds):
            order = self.targets[i % len(self.targets) :] + self.targets[: i % len(self.targets)]
            current: dict[str, dict[str, float]] = {}
            for t in order:
                fig = self.measure(t)
                current[t.name] = fig
                log(
                    f"round {i + 1}/{self.plan.rounds} {t.name:14} c1 p50 {fig['c1_p50']:.2f} ms "
                    f"p99 {fig['c1_p99']:.2f} ms | c32 {fig['c32_rps']:.0f} req/s | "
                    f"ttft {fig['ttft_p50']:.2f} ms "
                    f"| cpu {fig['cpu_us']:.0f} µs/req"
                )
            out.append(current)
        return out

    def burst(self) -> dict[str, dict[str, Any]]:
        """Many slow streams at once through direct, the pass-through and creditgate."""
        out: dict[str, dict[str, Any]] = {}
        assert self.sim is not None
        for name in ("direct", "passthrough", "creditgate"):
            t = next((t for t in self.targets if t.name == name), None)
            if t is None:
                out[name] = {"skipped": self.missing.get(name, "not running")}
                continue
            pids = procs.tree((t.proc or self.sim).pid)
            if not procs.reset_peak_rss(pids):
                self.notes.append("peak RSS of the stream crowd could not be reset: it is the whole run's peak")
            log(f"{self.plan.burst} slow streams through {name}")
            r = arun(
                load.run_burst(
                    t.url("slow"),
                    load.chat_body(t.model("slow"), stream=True),
                    t.headers(),
                    count=self.plan.burst,
                    timeout_s=90,
                )
            )
            out[name] = {
                "completed": len(r.latencies_ms),
                "errors": r.errors,
                "wall_s": r.elapsed_s,
                "ttft_p50": load.percentile(r.ttft_ms, 50),
                "ttft_p99": load.percentile(r.ttft_ms, 99),
                "rss_mib": procs.peak_rss_mib(pids),
                "error_samples": r.error_samples[:2],
            }
            log(
                f"  completed {len(r.latencies_ms)} errors {r.errors} "
                f"ttft p50 {out[name]['ttft_p50']:.0f} ms "
                f"p99 {out[name]['ttft_p99']:.0f} ms"
            )
        return out

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                procs.stop(proc)
        self.procs.clear()


def conditions(plan: Plan, quick: bool, bench: Bench, wall_s: float, load_before: float) -> dict[str, Any]:
    model = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    client = (
        "wrk -t1 -c32 (Lua POST script) for c=32; bench/load.py (aiohttp, one pooled session) "
        "for c=1, streams and the stream crowd"
        if bench.use_wrk
        else "bench/load.py (aiohttp, one pooled session, uvloop) for everything"
    )
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cores": os.cpu_count(),
        "machine": f"{model}, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": list(dict.fromkeys(t.version for t in bench.targets if t.version)),
        "client": client,
        "rounds": plan.rounds,
        "quick": quick,
        "wall_s": wall_s,
        # other work on the machine skews everything; the 1-minute load average says how much
        "loadavg": f"{load_before:.2f} before the run, {os.getloadavg()[0]:.2f} at its end",
        "c1": f"≤{plan.c1_n} requests or {plan.c1_s:g} s",
        "c32": f"{plan.c32_s:g} s",
        "stream": f"≤{plan.stream_n} streams or {plan.stream_s:g} s at concurrency 1",
        "burst_count": plan.burst,
        "burst_behaviour": "first token after 500 ms, then 20 tokens at 20 tokens/s (simulator prefix "
        "ttft_ms=500,tps=20,tokens=20)",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one short round (about a minute and a half)")
    parser.add_argument("--skip-litellm", action="store_true", help="do not install or run the LiteLLM proxy")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python client for c=32 too")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.{md,json,png} go")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = Plan(**{**plan.__dict__, "rounds": args.rounds})
    load.use_fast_loop()

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    ensure_matplotlib()
    work = systems.BENCH / "work" / time.strftime("%Y%m%d-%H%M%S")
    bench = Bench(plan, work)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    try:
        bench.start_all(args.skip_litellm, not args.no_wrk)
        bench.check()
        if not any(t.name == "direct" for t in bench.targets):
            log(f"the simulator does not answer: {bench.missing.get('direct')}")
            return 1
        bench.warm_up()
        rounds = bench.rounds()
        rss = {
            t.name: procs.peak_rss_mib(procs.tree((t.proc or bench.sim).pid))  # type: ignore[union-attr]
            for t in bench.targets
        }
        burst = bench.burst()
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        return 130
    finally:
        bench.stop_all()
    summary = report.summarize(rounds)
    for name, fig in summary.items():
        fig["rss_mib"] = rss.get(name, float("nan"))
        values = [r[name]["c32_rps"] for r in rounds if name in r]
        fig["c32_rps_min"], fig["c32_rps_max"] = min(values), max(values)
    cdfs = {name: [round(load.percentile(v, q / 2), 3) for q in range(201)] for name, v in bench.latencies.items()}
    result = {
        "conditions": conditions(plan, args.quick, bench, time.monotonic() - started, load_before),
        "summary": summary,
        "rounds": rounds,
        "burst": burst,
        "missing": bench.missing,
        "notes": sorted(set(bench.notes)),
        "row_notes": bench.row_notes,
    }
    for path in report.write(result, cdfs, args.out):
        log(f"wrote {path}")
    readme = Path(__file__).resolve().parents[1] / "README.md"
    if args.out == RESULTS and not args.quick and report.update_readme(readme, report.markdown(result)):
        log(f"updated the benchmark table in {readme.name}")
    print()
    print(report.markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A deterministic (cProfile) profile of creditgate under load.

cProfile counts every call of the gateway process, so it gives calls per request (divide
by the request count), which a sampling profiler cannot; it slows the process down, so
read its shares and call counts, not its absolute times. Under load the settlement SQL runs
in the ledger writer process, which this profile does not include.

    .venv/bin/python bench/call_profile.py [--duration 8]

Writes bench/results/profile-cprofile.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load
import procs
import systems
import wrk


def _package(path: str, func: str) -> str:
    if "/src/creditgate/" in path:
        return "creditgate/" + path.split("/src/creditgate/", 1)[1].split("/", 1)[0]
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if path == "~":
        return "built-in " + func.split(" of ")[0].strip("<>")
    return "stdlib " + Path(path).stem


def by_package(stats_file: Path, n: int = 15) -> list[str]:
    """Own time summed per package (creditgate per subpackage), largest first."""
    stats = pstats.Stats(str(stats_file))
    totals: dict[str, float] = {}
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    for (path, _line, func), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        key = _package(path, func)
        totals[key] = totals.get(key, 0.0) + tottime
    grand = sum(totals.values()) or 1.0
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:n]
    return [f"- {t / grand * 100:5.1f}%  {name}" for name, t in top]


def child(stats_file: str, argv: list[str]) -> None:
    """Run `creditgate ARGV...` under cProfile in this process. The server re-raises SIGTERM
    after its graceful shutdown; here that signal becomes SystemExit, so the stats get written."""
    import cProfile
    import signal

    from creditgate.cli import main as creditgate_main

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    sys.argv = ["creditgate", *argv]
    profiler = cProfile.Profile()
    try:
        profiler.runcall(creditgate_main)
    except SystemExit:
        pass
    finally:
        profiler.dump_stats(stats_file)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--out", type=Path, default=systems.BENCH / "results")
    args = parser.parse_args()
    work = systems.BENCH / "work" / ("cprofile-" + time.strftime("%Y%m%d-%H%M%S"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stats_file = work / "creditgate.pstats"
    started: list[procs.Proc] = []
    served = 0
    try:
        sim, sim_url = systems.start_simulator(logs)
        started.append(sim)
        launcher = (sys.executable, str(Path(__file__).resolve()), "--child", str(stats_file))
        target = systems.start_creditgate(sim_url, logs, work, 1, launcher)
        assert target.proc is not None
        started.append(target.proc)
        body = load.chat_body(target.model("plain"))
        warm = asyncio.run(
            load.run_load(target.url("plain"), body, target.headers(), concurrency=8, duration_s=2, max_requests=2000)
        )
        served = warm.ok
        if wrk.available():
            w = wrk.run(
                target.url("plain"),
                wrk.write_script(work / "p.lua", body, target.key),
                connections=32,
                duration_s=args.duration,
            )
            served += w.requests - w.errors
        else:
            r = asyncio.run(
                load.run_load(
                    target.url("plain"),
                    body,
                    target.headers(),
                    concurrency=32,
                    duration_s=args.duration,
                    max_requests=10**7,
                )
            )
            served += r.ok
    finally:
        for proc in reversed(started):
            procs.stop(proc, timeout_s=30)  # a clean exit is what writes the profile
    if not stats_file.exists():
        print("no profile was written (the gateway did not exit cleanly)")
        return 1
    sections = ["## Own time by package", "", *by_package(stats_file), ""]
    # cumulative times of coroutines and greenlets count time spent elsewhere: own time only
    for key, title in (("tottime", "own time"), ("ncalls", "number of calls")):
        buf = io.StringIO()
        stats = pstats.Stats(str(stats_file), stream=buf)
        stats.strip_dirs().sort_stats(key).print_stats(35)
        text = buf.getvalue()
        table = text[text.index("   ncalls") :] if "   ncalls" in text else text
        sections += [f"## Top functions by {title}", "", "```", table.rstrip(), "```", ""]
    out = args.out / "profile-cprofile.md"
    args.out.mkdir(parents=True, exist_ok=True)
    header = [
        "# cProfile of creditgate under load",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}; c=32 non-streaming for {args.duration} s after a warm-up; "
        f"{served:,} requests in the whole profile (divide ncalls by that for calls per request). "
        "Times are inflated by cProfile itself; compare shares and call counts.",
        "",
    ]
    out.write_text("\n".join(header + sections), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

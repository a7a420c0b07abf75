"""Where creditgate spends its time under load: a py-spy profile of the gateway process
while wrk (or bench/load.py) keeps 32 non-streaming requests in flight.

    .venv/bin/python bench/sample_profile.py [--duration 10] [--system creditgate|passthrough]

Writes bench/results/profile.svg (flame graph; profile-passthrough.svg for the other) and
bench/results/profile-top-<system>.md (the functions with the most samples, by own time and
including callees, line numbers folded together). py-spy is installed into this venv if it
is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load
import procs
import systems
import wrk

_TICKS = os.sysconf("SC_CLK_TCK")
_LINE = re.compile(r":\d+\)$")


def py_spy() -> str:
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists() and shutil.which("py-spy") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], timeout=600, check=True)
    return str(exe) if exe.exists() else "py-spy"


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of `pid`, keyed "tid name"."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[f"{task.name} {name}"] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def top_frames(raw: Path, n: int = 25) -> tuple[int, list[tuple[float, str]], list[tuple[float, str]]]:
    """From py-spy's raw (collapsed) output, main thread only (threads started with
    threading.Thread are left out: in a non-blocking profile their waiting looks like work):
    total samples, top own-time and inclusive frames."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [_LINE.sub(")", f) for f in stack.split(";") if f.strip()]
        if any(f.startswith("Thread._bootstrap ") for f in frames):
            continue
        total += k
        if frames:
            own[frames[-1]] += k
        for frame in set(frames):
            incl[frame] += k

    def share(c: Counter[str]) -> list[tuple[float, str]]:
        return [(v / total * 100, f) for f, v in c.most_common(n)]

    return total, share(own), share(incl)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--system", choices=["creditgate", "passthrough"], default="creditgate")
    parser.add_argument("--out", type=Path, default=systems.BENCH / "results")
    args = parser.parse_args()
    spy = py_spy()
    work = systems.BENCH / "work" / ("profile-" + time.strftime("%Y%m%d-%H%M%S"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    started: list[procs.Proc] = []
    try:
        sim, sim_url = systems.start_simulator(logs)
        started.append(sim)
        if args.system == "creditgate":
            target = systems.start_creditgate(sim_url, logs, work, 1)
        else:
            target = systems.start_passthrough(sim_url, logs)
        assert target.proc is not None
        started.append(target.proc)
        body = load.chat_body(target.model("plain"))
        asyncio.run(
            load.run_load(target.url("plain"), body, target.headers(), concurrency=8, duration_s=3, max_requests=5000)
        )
        raw = work / "profile.txt"
        svg = args.out / ("profile.svg" if args.system == "creditgate" else f"profile-{args.system}.svg")
        cmd = [
            "--pid",
            str(target.proc.pid),
            "--duration",
            str(args.duration),
            "--rate",
            "200",
        ]
        # --nonblocking: sampling must not pause the gateway, or the profile measures py-spy
        cmd.append("--nonblocking")
        flame = subprocess.Popen(
            [spy, "record", "-o", str(svg), *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        collapsed = subprocess.Popen(
            [spy, "record", "-f", "raw", "-o", str(raw), *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        time.sleep(1)
        cpu0 = procs.cpu_seconds([target.proc.pid])
        threads0 = thread_cpu(target.proc.pid)
        if wrk.available():
            w = wrk.run(
                target.url("plain"),
                wrk.write_script(work / "p.lua", body, target.key),
                connections=32,
                duration_s=args.duration - 2,
            )
            served, rps = w.requests - w.errors, w.rps
        else:
            r = asyncio.run(
                load.run_load(
                    target.url("plain"),
                    body,
                    target.headers(),
                    concurrency=32,
                    duration_s=args.duration - 2,
                    max_requests=10**7,
                )
            )
            served, rps = r.ok, r.rps
        cpu = procs.cpu_seconds([target.proc.pid]) - cpu0
        threads1 = thread_cpu(target.proc.pid)
        flame.wait(timeout=args.duration + 60)
        collapsed.wait(timeout=args.duration + 60)
        if svg.exists():  # the flame graph's title holds the command line: keep paths relative
            svg.write_text(svg.read_text().replace(str(systems.ROOT) + "/", ""))
    finally:
        for proc in reversed(started):
            procs.stop(proc)
    total, own, incl = top_frames(raw)
    lines = [
        f"# py-spy profile of {args.system} under load",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {args.duration} s at 200 Hz, {total} main-thread samples; "
        "c=32 non-streaming, "
        f"{rps:,.0f} req/s, {cpu / served * 1e6 if served else float('nan'):,.0f} CPU µs per request.",
        "",
        "## CPU per thread during the load (from /proc, µs per request)",
        "",
        *[
            f"- {(threads1[k] - threads0.get(k, 0.0)) / max(served, 1) * 1e6:8,.0f}  {k}"
            for k in sorted(threads1, key=lambda k: threads0.get(k, 0.0) - threads1[k])
            if threads1[k] - threads0.get(k, 0.0) > 0
        ],
        "",
        "## Main thread: own time (the function itself)",
        "",
        *[f"- {pct:5.1f}% `{frame}`" for pct, frame in own],
        "",
        "## Main thread: including callees",
        "",
        *[f"- {pct:5.1f}% `{frame}`" for pct, frame in incl],
        "",
    ]
    (args.out / f"profile-top-{args.system}.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines[:3]))
    print(f"wrote {svg} and {args.out / f'profile-top-{args.system}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Turning a run's figures into bench/results/latest.{json,md,png}.

The summary of each figure is the median over the rounds; "added" figures are computed
per round against the direct run of the same round, then the median of those is taken, so
slow drift of the machine (other load, thermal) cancels as far as it can.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROWS = ["direct", "passthrough", "creditgate no billing", "creditgate", "creditgate x2", "litellm"]

# key in a round's figures -> is it compared with direct ("added")?
ADDED = {
    "c1_p50": "add_c1_p50",
    "c1_p99": "add_c1_p99",
    "ttft_p50": "add_ttft_p50",
    "stream_p50": "add_stream_p50",
}


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def summarize(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """rounds[i][system][figure] -> system -> figure -> median over rounds (plus added_*)."""
    out: dict[str, dict[str, float]] = {}
    systems = {name for r in rounds for name in r}
    for name in systems:
        keys = {k for r in rounds if name in r for k in r[name]}
        fig = {k: median([r[name][k] for r in rounds if name in r and k in r[name]]) for k in keys}
        for key, added in ADDED.items():
            diffs = [
                r[name][key] - r["direct"][key]
                for r in rounds
                if name in r and "direct" in r and key in r[name] and key in r["direct"]
            ]
            fig[added] = median(diffs)
        out[name] = fig
    return out


def _f(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:,.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    cond = result["conditions"]
    lines = [
        "# creditgate benchmark: latest run",
        "",
        f"{cond['date']} · {cond['cores']} cores · Python {cond['python']} · {cond['rounds']} round(s), "
        f"medians over rounds · {'quick' if cond['quick'] else 'full'} run, {cond['wall_s']:.0f} s",
        "",
        "Added = the system's figure minus direct-to-simulator in the same round. Latency in ms.",
        "",
        "| system | c=1 p50 | added p50 | c=1 p99 | added p99 | req/s c=32 | p99 c=32 | added TTFT p50 "
        "| chunk gap p50 | CPU µs/req | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ROWS:
        if name not in s:
            why = str(result["missing"].get(name, "not run")).replace("|", "/")
            lines.append(f"| {name} | {why} | | | | | | | | | |")
            continue
        f = s[name]
        label = f"{name} ({result['row_notes'][name]})" if name in result.get("row_notes", {}) else name
        lines.append(
            f"| {label} | {_f(f.get('c1_p50'))} | {_f(f.get('add_c1_p50'), signed=True)} | "
            f"{_f(f.get('c1_p99'))} | {_f(f.get('add_c1_p99'), signed=True)} | {_f(f.get('c32_rps'), 0)} | "
            f"{_f(f.get('c32_p99'), 1)} | {_f(f.get('add_ttft_p50'), signed=True)} | "
            f"{_f(f.get('gap_p50'), 3)} | "
            f"{_f(f.get('cpu_us'), 0)} | {_f(f.get('rss_mib'), 0)} |"
        )
    lines += [
        "",
        "For direct, CPU µs/req and RSS are the simulator's own (the work every row includes); "
        "for the others they are the proxy process's (all workers summed).",
        "",
    ]
    if result.get("burst"):
        lines += [
            f"## {cond['burst_count']:,} slow streams held open at once",
            "",
            f"Each stream: {cond['burst_behaviour']}; all opened at the same moment.",
            "",
            "| system | completed | errors | TTFT p50 ms | TTFT p99 ms | wall s | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, b in result["burst"].items():
            if "skipped" in b:
                lines.append(f"| {name} | {b['skipped']} | | | | | |")
                continue
            lines.append(
                f"| {name} | {b['completed']:,} | {b['errors']} | {_f(b['ttft_p50'], 1)} | "
                f"{_f(b['ttft_p99'], 1)} "
                f"| {_f(b['wall_s'], 2)} | {_f(b.get('rss_mib'), 0)} |"
            )
        errs = [f"{n}: {e}" for n, b in result["burst"].items() for e in b.get("error_samples", [])]
        if errs:
            lines += ["", "Error samples: " + "; ".join(errs[:4])]
        lines.append("")
    lines += [
        "## Conditions",
        "",
        f"- machine: {cond['cores']} cores, {cond['machine']}; load average {cond.get('loadavg', '?')}",
        f"- systems: {', '.join(cond['versions'])}",
        f"- load: {cond['client']}",
        f"- per round and system: c=1 {cond['c1']}; c=32 {cond['c32']}; streams {cond['stream']}",
        "- payload: a two-message chat completion with max_tokens 32; the simulator answers at once "
        "(no prefix); streams use the prefix ttft_ms=0,tokens=20",
        "- every system runs at the same time against one simulator process; runs are interleaved "
        "round-robin with a rotating order, after a warm-up of each system",
    ]
    for name, why in result["missing"].items():
        lines.append(f"- {name} missing: {why}")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], cdfs: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["summary"]
    names = [n for n in ROWS if n in s]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for name in names:
        qs = cdfs.get(name)
        if not qs:
            continue
        ys = [i / (len(qs) - 1) for i in range(len(qs))]
        ax1.plot(qs, ys, label=name, linewidth=1.6)
    ax1.set_xscale("log")
    ax1.set_xlabel("latency per request, ms (log scale)")
    ax1.set_ylabel("fraction of requests")
    ax1.set_title("Non-streaming latency at concurrency 1 (all rounds)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend()

    rps = [s[n].get("c32_rps", 0.0) for n in names]
    lo = [s[n].get("c32_rps", 0.0) - s[n].get("c32_rps_min", s[n].get("c32_rps", 0.0)) for n in names]
    hi = [s[n].get("c32_rps_max", s[n].get("c32_rps", 0.0)) - s[n].get("c32_rps", 0.0) for n in names]
    bars = ax2.bar(names, rps, yerr=[lo, hi], capsize=4, color="#4C72B0")
    for bar, value in zip(bars, rps, strict=True):
        ax2.annotate(
            f"{value:,.0f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax2.set_ylabel("requests per second")
    ax2.set_title("Throughput at concurrency 32 (median, min–max of rounds)")
    ax2.tick_params(axis="x", rotation=15)
    ax2.grid(True, axis="y", alpha=0.3)
    fig.suptitle(
        f"creditgate benchmark · {result['conditions']['date']} · {result['conditions']['cores']} cores",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def readme_section(markdown_text: str) -> str:
    """The results for the README: the tables and conditions of `latest.md`, less its title."""
    body = markdown_text.split("\n", 1)[1].strip() if markdown_text.startswith("# ") else markdown_text.strip()
    return body.replace("\n## ", "\n#### ")


def update_readme(readme: Path, markdown_text: str) -> bool:
    """Put the latest results between the README's bench markers; False when it has none."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    section = f"{README_START}\n{readme_section(markdown_text)}\n{README_END}"
    readme.write_text(text[:start] + section + text[end + len(README_END) :], encoding="utf-8")
    return True


def write(result: dict[str, Any], cdfs: dict[str, list[float]], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "latest.json", out_dir / "latest.md"]
    paths[0].write_text(json.dumps({**result, "c1_cdf_ms": cdfs}, indent=1, default=str) + "\n")
    paths[1].write_text(markdown(result), encoding="utf-8")
    try:
        plot(result, cdfs, out_dir / "latest.png")
        paths.append(out_dir / "latest.png")
    except ImportError as exc:
        print(f"no plot: {exc}")
    return paths

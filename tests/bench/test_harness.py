"""The benchmark harness: its arithmetic, its load generator and its pass-through proxy.

A benchmark that miscounts is worse than none, so the parts whose errors would silently
skew the published table are checked here against a tiny in-process upstream.
"""

from __future__ import annotations

import asyncio
import math
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import load
import passthrough
import report


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_percentile_interpolates_and_handles_empty() -> None:
    assert load.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert load.percentile([5.0, 1.0, 3.0], 100) == 5.0
    assert load.percentile([7.0], 99) == 7.0
    assert math.isnan(load.percentile([], 50))


def test_added_latency_is_median_of_per_round_differences() -> None:
    rounds = [
        {"direct": {"c1_p50": 1.0}, "creditgate": {"c1_p50": 2.0}},
        {"direct": {"c1_p50": 3.0}, "creditgate": {"c1_p50": 3.5}},
        {"direct": {"c1_p50": 1.0}, "creditgate": {"c1_p50": 1.6}},
    ]
    summary = report.summarize(rounds)
    assert summary["creditgate"]["c1_p50"] == 2.0
    assert summary["creditgate"]["add_c1_p50"] == pytest.approx(0.6)  # not 2.0 - 1.0
    assert summary["direct"]["add_c1_p50"] == 0.0


def test_markdown_names_missing_systems_and_why() -> None:
    result = {
        "summary": {"direct": {"c1_p50": 0.4, "add_c1_p50": 0.0, "c32_rps": 9000.0}},
        "missing": {"litellm": "install failed: no index"},
        "burst": {},
        "conditions": {
            "date": "today",
            "cores": 2,
            "python": "3.11",
            "rounds": 1,
            "quick": True,
            "wall_s": 1.0,
            "machine": "m",
            "versions": [],
            "client": "c",
            "c1": "",
            "c32": "",
            "stream": "",
        },
    }
    text = report.markdown(result)
    assert "| litellm | install failed: no index |" in text
    assert "| direct | 0.40 | +0.00 |" in text
    assert "9,000" in text


async def _upstream(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    if not body.get("stream"):
        return web.json_response({"echo": body["model"], "auth": request.headers.get("Authorization")})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i in range(3):
        chunk = {"choices": [{"index": 0, "delta": {"content": f"t{i}"}}]}
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await asyncio.sleep(0.02)
    await resp.write(b'data: {"choices":[{"index":0,"delta":{}}]}\n\ndata: [DONE]\n\n')
    return resp


@pytest.fixture
async def proxy_url() -> AsyncIterator[str]:
    up = web.Application()
    up.router.add_post("/x/{beh}/v1/chat/completions", _upstream)
    up.router.add_post("/v1/chat/completions", _upstream)
    up_runner = web.AppRunner(up)
    await up_runner.setup()
    up_port = _port()
    await web.TCPSite(up_runner, "127.0.0.1", up_port).start()
    px_runner = web.AppRunner(passthrough.make_app(f"http://127.0.0.1:{up_port}"))
    await px_runner.setup()
    px_port = _port()
    await web.TCPSite(px_runner, "127.0.0.1", px_port).start()
    yield f"http://127.0.0.1:{px_port}"
    await px_runner.cleanup()
    await up_runner.cleanup()


async def test_passthrough_forwards_body_headers_and_path(proxy_url: str) -> None:
    res = await load.run_load(
        proxy_url + "/v1/chat/completions",
        load.chat_body("m1"),
        {"Authorization": "Bearer k"},
        concurrency=2,
        duration_s=5,
        max_requests=6,
    )
    assert (res.requests, res.errors, len(res.latencies_ms)) == (6, 0, 6)


async def test_streams_through_passthrough_arrive_chunk_by_chunk(proxy_url: str) -> None:
    res = await load.run_load(
        proxy_url + "/x/ttft_ms=0/v1/chat/completions",
        load.chat_body("m1", stream=True),
        concurrency=1,
        duration_s=5,
        max_requests=2,
        stream=True,
    )
    assert res.errors == 0
    assert len(res.ttft_ms) == 2
    # three content chunks per stream -> two gaps each; the upstream spaces them out, so a
    # proxy that buffered the whole response would show gaps of about zero
    assert len(res.gaps_ms) == 4
    assert max(res.gaps_ms) > 5


async def test_load_counts_upstream_errors_with_a_sample(proxy_url: str) -> None:
    res = await load.run_load(
        proxy_url + "/nowhere",
        load.chat_body("m1"),
        concurrency=1,
        duration_s=5,
        max_requests=3,
    )
    assert res.errors == 3 and res.ok == 0
    assert res.error_samples and res.error_samples[0].startswith("HTTP 404")


def test_readme_gets_the_latest_tables_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\nold table\n<!-- bench:end -->\noutro\n")
    latest = "# creditgate benchmark: latest run\n\n| system | x |\n|---|---|\n| a | 1 |\n\n## Conditions\n\n- m\n"
    assert report.update_readme(readme, latest)
    text = readme.read_text()
    assert "old table" not in text and "| a | 1 |" in text and "#### Conditions" in text
    assert text.startswith("intro\n") and text.endswith("outro\n")
    assert "latest run" not in text
    plain = tmp_path / "OTHER.md"
    plain.write_text("no markers\n")
    assert not report.update_readme(plain, latest)
    assert plain.read_text() == "no markers\n"

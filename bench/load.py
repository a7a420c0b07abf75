"""A small asyncio load generator for OpenAI-style chat completions.

It keeps a fixed number of requests in flight over one pooled aiohttp session, stops at a
request budget or a deadline (whichever comes first), and records per-request latency. For
streams it also records the time to the first content chunk and the gaps between content
chunks, which is what a user of a streaming chat notices.

The same client drives every system in a run, so its own cost cancels out when a system's
percentile is compared with the direct-to-upstream one.

Command line (for poking at one system by hand):

    python bench/load.py URL --concurrency 8 --duration 5 [--stream] [--key KEY] [--model M]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import orjson


@dataclass
class LoadResult:
    """What one load run saw. Times are in milliseconds."""

    requests: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.requests - self.errors

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def note_error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5 and text not in self.error_samples:
            self.error_samples.append(text[:300])


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def chat_body(model: str, *, stream: bool = False, max_tokens: int = 32) -> bytes:
    """The fixed small payload every system receives (only the model name differs)."""
    body: dict[str, object] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Say hello to the benchmark in five words."},
        ],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def _content_of(data: bytes) -> bool:
    """True when an SSE data payload carries a non-empty content delta."""
    if data == b"[DONE]":
        return False
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    for choice in event.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content"):
            return True
    return False


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    stream: bool,
    result: LoadResult,
) -> None:
    start = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            if resp.status != 200:
                text = (await resp.read()).decode("utf-8", "replace")
                result.note_error(f"HTTP {resp.status}: {text}")
                return
            if not stream:
                await resp.read()
            else:
                first: float | None = None
                last = 0.0
                buf = b""
                async for chunk in resp.content.iter_any():
                    now = time.perf_counter()
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for raw in lines:
                        line = raw.rstrip(b"\r")
                        if not line.startswith(b"data:") or not _content_of(line[5:].strip()):
                            continue
                        if first is None:
                            first = now
                            result.ttft_ms.append((now - start) * 1000)
                        else:
                            result.gaps_ms.append((now - last) * 1000)
                        last = now
                if first is None:
                    result.note_error("stream ended without a content chunk")
                    return
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        result.note_error(f"{type(exc).__name__}: {exc}")
        return
    result.latencies_ms.append((time.perf_counter() - start) * 1000)


async def run_load(
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    stream: bool = False,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Keep `concurrency` requests in flight until `max_requests` were sent or
    `duration_s` has passed; a request in flight at the deadline is still completed."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    result = LoadResult()
    budget = max_requests
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=None)
    client_timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        start = time.perf_counter()
        deadline = start + duration_s

        async def worker() -> None:
            nonlocal budget
            while budget > 0 and time.perf_counter() < deadline:
                budget -= 1
                result.requests += 1
                await _one(session, url, body, hdrs, stream, result)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - start
    return result


async def run_burst(
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    count: int,
    stream: bool = True,
    timeout_s: float = 60.0,
) -> LoadResult:
    """Open `count` requests at the same moment and wait for all of them (the
    many-slow-streams test: how a server copes with a crowd held open at once)."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    result = LoadResult(requests=count)
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
        start = time.perf_counter()
        await asyncio.gather(*(_one(s, url, body, hdrs, stream, result) for _ in range(count)))
        result.elapsed_s = time.perf_counter() - start
    return result


def use_fast_loop() -> None:
    """Use uvloop when it is installed: the client should cost as little as possible."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--model", default="bench/sim")
    parser.add_argument("--key", default="")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args(argv)
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    use_fast_loop()
    res = asyncio.run(
        run_load(
            args.url,
            chat_body(args.model, stream=args.stream),
            headers,
            concurrency=args.concurrency,
            duration_s=args.duration,
            max_requests=args.requests,
            stream=args.stream,
        )
    )
    print(f"requests {res.requests}  errors {res.errors}  {res.rps:.0f} req/s")
    print(f"latency p50 {percentile(res.latencies_ms, 50):.2f} ms  p99 {percentile(res.latencies_ms, 99):.2f} ms")
    if args.stream:
        print(f"ttft p50 {percentile(res.ttft_ms, 50):.2f} ms  gap p50 {percentile(res.gaps_ms, 50):.3f} ms")
    for sample in res.error_samples:
        print("error:", sample)


if __name__ == "__main__":
    main()

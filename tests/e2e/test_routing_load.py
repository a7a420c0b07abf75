"""Routing under load, through real HTTP: weights spread traffic in their ratio, and a
deployment that fails every other request costs the clients nothing (failover takes it)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
from tests.e2e.conftest import Gateway, module_gateway
from tests.e2e.routing_support import chat_body, deployments, label_of, metric, sim_requests

CONFIG = """
database: sqlite:///unused.db
currency:
  code: INR
billing:
  group_commit_ms: 2
server:
  max_attempts: 3
  cooldown_seconds: 1
  failure_threshold: 3
providers:
  - {{id: ld-w3, type: openai, base_url: "{sim}/x/id=ld-w3/v1", api_key: k}}
  - {{id: ld-w1, type: openai, base_url: "{sim}/x/id=ld-w1/v1", api_key: k}}
  - {{id: ld-wp1, type: openai, base_url: "{sim}/x/id=ld-wp1/v1", api_key: k}}
  - {{id: ld-s1, type: openai, base_url: "{sim}/x/tokens=8,id=ld-s1/v1", api_key: k}}
  - {{id: ld-s2, type: openai, base_url: "{sim}/x/tokens=8,id=ld-s2/v1", api_key: k}}
  - {{id: ld-half, type: openai, base_url: "{sim}/x/fail_every=2,tokens=8,id=ld-half/v1", api_key: k}}
models:
  - {{id: ld/weighted, max_output_tokens: 64, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: ld-w3, model: m, weight: 3}}, {{provider: ld-w1, model: m, weight: 1}},
                   {{provider: ld-wp1, model: m, priority: 1, weight: 100}}]}}
  - {{id: ld/steady, max_output_tokens: 64, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: ld-s1, model: m}}, {{provider: ld-s2, model: m}}, {{provider: ld-half, model: m}}]}}
"""


gw = module_gateway(CONFIG, "routing-load")


async def one(client: httpx.AsyncClient, body: dict[str, Any]) -> str | None:
    """None when the request succeeded from the client's point of view, else what went wrong."""
    if not body.get("stream"):
        r = await client.post("/chat/completions", json=body)
        return None if r.status_code == 200 and r.json()["choices"] else f"HTTP {r.status_code}: {r.text[:200]}"
    async with client.stream("POST", "/chat/completions", json=body) as r:
        text = (await r.aread()).decode()
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {text[:200]}"
    if '"error"' in text or not text.rstrip().endswith("data: [DONE]"):
        return f"broken stream: {text[-300:]}"
    return None


async def load(gw: Gateway, key: str, bodies: list[dict[str, Any]], concurrency: int) -> list[str]:
    """Send `bodies` with `concurrency` requests in flight; the failures seen."""
    queue = iter(bodies)
    failures: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=gw.v1, headers=headers, limits=limits, timeout=30) as client:

        async def worker() -> None:
            for body in queue:
                problem = await one(client, body)
                if problem is not None:
                    failures.append(problem)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


def test_weights_spread_load_in_their_ratio(gw: Gateway, simulator: str) -> None:
    _, key = gw.account()
    httpx.delete(simulator + "/x/requests", timeout=10)
    failures = asyncio.run(load(gw, key, [chat_body("ld/weighted", max_tokens=8)] * 1000, concurrency=16))
    assert failures == []
    counts = Counter(label_of(r["path"]) for r in sim_requests(simulator))
    assert counts["ld-w3"] + counts["ld-w1"] == 1000
    # weights 3:1 -> 750 / 250, within 10% of the larger share
    assert abs(counts["ld-w3"] - 750) <= 75 and abs(counts["ld-w1"] - 250) <= 75, counts
    assert counts["ld-wp1"] == 0  # a lower priority gets nothing while the first is healthy


def test_one_deployment_failing_half_its_requests_costs_clients_nothing(gw: Gateway, simulator: str) -> None:
    _, key = gw.account()
    failovers = metric(gw, "creditgate_failovers_total", deployment="ld-half/m", reason="http_503")
    decisions = metric(gw, "creditgate_route_decisions_total", model="ld/steady")
    plain = chat_body("ld/steady", max_tokens=8)
    streamed = chat_body("ld/steady", max_tokens=8, stream=True)
    bodies = [streamed if i % 2 else plain for i in range(600)]
    failures = asyncio.run(load(gw, key, bodies, concurrency=32))
    assert failures == []
    # the half-failing deployment was really in rotation and really failed
    health = deployments(gw)["ld-half/m"]
    assert health["requests"] > 0 and health["failures"] >= health["requests"] // 2
    assert metric(gw, "creditgate_failovers_total", deployment="ld-half/m", reason="http_503") > failovers
    assert metric(gw, "creditgate_route_decisions_total", model="ld/steady") == decisions + 600
    counts = Counter(label_of(r["path"]) for r in sim_requests(simulator))
    assert counts["ld-half"] > 0 and counts["ld-s1"] > 0 and counts["ld-s2"] > 0

"""Failover through real HTTP: a gateway process whose deployments are simulator prefixes
that answer 503, 400, 429, hang or fail their first requests. Each test uses its own
models and `id=` labels, so the simulator's log tells which deployment received what."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from tests.e2e.conftest import Gateway, module_gateway
from tests.e2e.routing_support import (
    chat_body,
    cost_micros,
    deployments,
    metric,
    micros,
    post_chat,
    received,
    usage_records,
)

CONFIG = """
database: sqlite:///unused.db
currency:
  code: INR
billing:
  group_commit_ms: 2
server:
  max_attempts: 3
  cooldown_seconds: 1
  failure_threshold: 2
providers:
  - {{id: fo-down, type: openai, base_url: "{sim}/x/status=503,id=fo-down/v1", api_key: k}}
  - {{id: fo-next, type: openai, base_url: "{sim}/x/id=fo-next/v1", api_key: k}}
  - {{id: fo-down2, type: openai, base_url: "{sim}/x/status=503,id=fo-down2/v1", api_key: k}}
  - {{id: fo-fb, type: openai, base_url: "{sim}/x/id=fo-fb/v1", api_key: k}}
  - {{id: fo-400, type: openai, base_url: "{sim}/x/status=400,id=fo-400/v1", api_key: k}}
  - {{id: fo-400-spare, type: openai, base_url: "{sim}/x/id=fo-400-spare/v1", api_key: k}}
  - {{id: fo-cool-a, type: openai, base_url: "{sim}/x/fail_first=2,id=fo-cool-a/v1", api_key: k}}
  - {{id: fo-cool-b, type: openai, base_url: "{sim}/x/id=fo-cool-b/v1", api_key: k}}
  - {{id: fo-all-1, type: openai, base_url: "{sim}/x/status=503,id=fo-all-1/v1", api_key: k}}
  - {{id: fo-all-2, type: openai, base_url: "{sim}/x/status=500,id=fo-all-2/v1", api_key: k}}
  - {{id: fo-all-3, type: openai, base_url: "{sim}/x/status=502,id=fo-all-3/v1", api_key: k}}
  - {{id: fo-429, type: openai, base_url: "{sim}/x/status=429,retry_after=5,id=fo-429/v1", api_key: k}}
  - {{id: fo-429-b, type: openai, base_url: "{sim}/x/id=fo-429-b/v1", api_key: k}}
  - {{id: fo-429-only, type: openai, base_url: "{sim}/x/status=429,retry_after=5,id=fo-429-only/v1", api_key: k}}
  - {{id: fo-hang, type: openai, base_url: "{sim}/x/hang=1,id=fo-hang/v1", api_key: k,
     timeouts: {{connect: 1, first_byte: 0.5, total: 60}}}}
  - {{id: fo-hang-b, type: openai, base_url: "{sim}/x/id=fo-hang-b/v1", api_key: k}}
  - {{id: fo-prio-a, type: openai, base_url: "{sim}/x/fail_first=2,id=fo-prio-a/v1", api_key: k}}
  - {{id: fo-prio-b, type: openai, base_url: "{sim}/x/fail_first=2,id=fo-prio-b/v1", api_key: k}}
  - {{id: fo-prio-c, type: openai, base_url: "{sim}/x/id=fo-prio-c/v1", api_key: k}}
  - {{id: fo-probe-a, type: openai, base_url: "{sim}/x/fail_first=2,ttft_ms=800,id=fo-probe-a/v1", api_key: k}}
  - {{id: fo-probe-b, type: openai, base_url: "{sim}/x/id=fo-probe-b/v1", api_key: k}}
  - {{id: fo-401, type: openai, base_url: "{sim}/x/status=401,id=fo-401/v1", api_key: k}}
  - {{id: fo-401-b, type: openai, base_url: "{sim}/x/id=fo-401-b/v1", api_key: k}}
  - {{id: fo-anth, type: openai, base_url: "{sim}/x/status=503,id=fo-anth/v1", api_key: k}}
models:
  - {{id: fo/primary, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fo-down, model: m, priority: 0}}, {{provider: fo-next, model: m, priority: 1}}]}}
  - {{id: fo/broken, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fo-down2, model: m}}]}}
  - {{id: fo/fallback, max_output_tokens: 256, price: {{input: 5000, output: 10000}},
     deployments: [{{provider: fo-fb, model: m}}]}}
  - {{id: fo/bad, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fo-400, model: m, priority: 0}}, {{provider: fo-400-spare, model: m, priority: 1}}]}}
  - {{id: fo/cool, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fo-cool-a, model: m, priority: 0}}, {{provider: fo-cool-b, model: m, priority: 1}}]}}
  - {{id: fo/all, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fo-all-1, model: m, priority: 0}}, {{provider: fo-all-2, model: m, priority: 1}},
                   {{provider: fo-all-3, model: m, priority: 2}}]}}
  - {{id: fo/429, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fo-429, model: m, priority: 0}}, {{provider: fo-429-b, model: m, priority: 1}}]}}
  - {{id: fo/429-only, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fo-429-only, model: m}}]}}
  - {{id: fo/hang, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fo-hang, model: m, priority: 0}}, {{provider: fo-hang-b, model: m, priority: 1}}]}}
  - {{id: fo/prio, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fo-prio-a, model: m, priority: 0}}, {{provider: fo-prio-b, model: m, priority: 0}},
                   {{provider: fo-prio-c, model: m, priority: 1}}]}}
  - {{id: fo/probe, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fo-probe-a, model: m, priority: 0}}, {{provider: fo-probe-b, model: m, priority: 1}}]}}
  - {{id: fo/401, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fo-401, model: m, priority: 0}}, {{provider: fo-401-b, model: m, priority: 1}}]}}
  - {{id: fo/anthropic-down, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fo-anth, model: m}}]}}
"""


gw = module_gateway(CONFIG, "routing-failover")


def wait_until_state(gw: Gateway, key: str, state: str, timeout: float = 5.0) -> dict[str, object]:
    """Poll /admin/deployments until `key` shows `state` (the cooldown passes in real time)."""
    deadline = time.monotonic() + timeout
    row = deployments(gw)[key]
    while row["state"] != state and time.monotonic() < deadline:
        time.sleep(0.1)
        row = deployments(gw)[key]
    return row


def test_a_503_fails_over_to_the_next_priority_and_bills_what_served(gw: Gateway, simulator: str) -> None:
    account, key = gw.account()
    before = micros(gw.balance(account)["balance"])
    r = post_chat(gw, key, chat_body("fo/primary"))
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "fo/primary"
    assert received(simulator, "fo-down", "fo-next") == {"fo-down": 1, "fo-next": 1}
    [record] = usage_records(gw, account)
    assert record["model"] == "fo/primary" and record["deployment"] == "fo-next/m" and record["status"] == "ok"
    assert micros(record["cost"]) == cost_micros(record, 1000, 2000) > 0
    assert before - micros(gw.balance(account)["balance"]) == micros(record["cost"])


def test_a_fallback_model_serves_and_is_billed_at_its_own_price(gw: Gateway, simulator: str) -> None:
    account, key = gw.account()
    before = micros(gw.balance(account)["balance"])
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model="fo/broken",
        messages=[{"role": "user", "content": "Tell me about meadows"}],
        max_tokens=50,
        extra_body={"models": ["fo/fallback"]},
    )
    assert reply.model == "fo/fallback"
    assert received(simulator, "fo-down2", "fo-fb") == {"fo-down2": 1, "fo-fb": 1}
    [record] = usage_records(gw, account)
    assert record["model"] == "fo/fallback" and record["deployment"] == "fo-fb/m"
    assert reply.usage is not None
    assert (record["prompt_tokens"], record["completion_tokens"]) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )
    # the fallback's price (5,000 / 10,000 per 1M), not the requested model's (1,000 / 2,000)
    assert micros(record["cost"]) == cost_micros(record, 5000, 10000)
    assert before - micros(gw.balance(account)["balance"]) == micros(record["cost"])


def test_an_upstream_400_is_not_retried_elsewhere(gw: Gateway, simulator: str) -> None:
    account, key = gw.account()
    failovers = metric(gw, "creditgate_failovers_total", deployment="fo-400/m")
    r = post_chat(gw, key, chat_body("fo/bad"))
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    counts = received(simulator, "fo-400", "fo-400-spare")
    assert counts["fo-400"] == 1 and counts["fo-400-spare"] == 0
    assert metric(gw, "creditgate_failovers_total", deployment="fo-400/m") == failovers
    # the request's fault says nothing about the deployment: it stays in rotation
    assert deployments(gw)["fo-400/m"]["state"] == "healthy"
    assert gw.balance(account)["balance"] == gw.balance(account)["available"]


def test_cooldown_opens_after_the_threshold_and_a_probe_closes_it(gw: Gateway, simulator: str) -> None:
    _, key = gw.account()
    # fo-cool-a fails its first two requests; failure_threshold is 2
    for _ in range(2):
        r = post_chat(gw, key, chat_body("fo/cool"))
        assert r.status_code == 200, r.text
    row = deployments(gw)["fo-cool-a/m"]
    assert row["state"] == "open" and row["cooling_down_until"] is not None
    assert row["consecutive_failures"] == 2
    # while it cools down it receives nothing: the next priority serves at once
    r = post_chat(gw, key, chat_body("fo/cool"))
    assert r.status_code == 200
    assert received(simulator, "fo-cool-a", "fo-cool-b") == {"fo-cool-a": 2, "fo-cool-b": 3}
    # after cooldown_seconds one probe goes through; it succeeds and restores the deployment
    assert wait_until_state(gw, "fo-cool-a/m", "half_open")["state"] == "half_open"
    r = post_chat(gw, key, chat_body("fo/cool"))
    assert r.status_code == 200
    assert received(simulator, "fo-cool-a", "fo-cool-b") == {"fo-cool-a": 3, "fo-cool-b": 3}
    row = deployments(gw)["fo-cool-a/m"]
    assert row["state"] == "healthy" and row["cooling_down_until"] is None
    for _ in range(3):
        assert post_chat(gw, key, chat_body("fo/cool")).status_code == 200
    assert received(simulator, "fo-cool-a", "fo-cool-b") == {"fo-cool-a": 6, "fo-cool-b": 3}


def test_half_open_lets_exactly_one_probe_through(gw: Gateway, simulator: str) -> None:
    _, key = gw.account()
    for _ in range(2):  # fo-probe-a fails twice and cools down
        assert post_chat(gw, key, chat_body("fo/probe")).status_code == 200
    assert wait_until_state(gw, "fo-probe-a/m", "half_open")["state"] == "half_open"
    # six requests at once: the probe is slow (800 ms), so the others arrive while it is out
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: post_chat(gw, key, chat_body("fo/probe")).status_code, range(6)))
    assert statuses == [200] * 6
    assert received(simulator, "fo-probe-a", "fo-probe-b") == {"fo-probe-a": 3, "fo-probe-b": 7}
    assert deployments(gw)["fo-probe-a/m"]["state"] == "healthy"


def test_an_upstream_that_rejects_its_own_key_fails_over(gw: Gateway, simulator: str) -> None:
    # a 401/403 from upstream is about that deployment's credentials, not about the request:
    # another deployment can serve it
    account, key = gw.account()
    r = post_chat(gw, key, chat_body("fo/401"))
    assert r.status_code == 200, r.text
    assert received(simulator, "fo-401", "fo-401-b") == {"fo-401": 1, "fo-401-b": 1}
    [record] = usage_records(gw, account)
    assert record["deployment"] == "fo-401-b/m"


def test_priorities_lower_tiers_serve_only_while_the_best_are_unavailable(gw: Gateway, simulator: str) -> None:
    _, key = gw.account()
    # both priority-0 deployments fail their first two requests: each request tries both, then c
    for _ in range(2):
        assert post_chat(gw, key, chat_body("fo/prio")).status_code == 200
    assert received(simulator, "fo-prio-a", "fo-prio-b", "fo-prio-c") == {
        "fo-prio-a": 2,
        "fo-prio-b": 2,
        "fo-prio-c": 2,
    }
    # both are cooling down now: priority 1 serves alone
    for _ in range(3):
        assert post_chat(gw, key, chat_body("fo/prio")).status_code == 200
    assert received(simulator, "fo-prio-c")["fo-prio-c"] == 5
    # once the cooldown is over and they answer again, priority 1 gets nothing
    wait_until_state(gw, "fo-prio-a/m", "half_open")
    wait_until_state(gw, "fo-prio-b/m", "half_open")
    for _ in range(20):
        assert post_chat(gw, key, chat_body("fo/prio")).status_code == 200
    counts = received(simulator, "fo-prio-a", "fo-prio-b", "fo-prio-c")
    assert counts["fo-prio-c"] == 5
    assert counts["fo-prio-a"] > 2 and counts["fo-prio-b"] > 2
    assert counts["fo-prio-a"] + counts["fo-prio-b"] == 4 + 20


def test_all_failing_is_a_502_then_all_cooling_down_is_a_503(gw: Gateway, simulator: str) -> None:
    account, key = gw.account()
    r = post_chat(gw, key, chat_body("fo/all"))
    assert r.status_code == 502, r.text
    message = r.json()["error"]["message"]
    assert "tried 3 deployments" in message and "HTTP 502" in message, message
    assert received(simulator, "fo-all-1", "fo-all-2", "fo-all-3") == {"fo-all-1": 1, "fo-all-2": 1, "fo-all-3": 1}
    # the second failure of each opens its breaker (failure_threshold 2)
    assert post_chat(gw, key, chat_body("fo/all")).status_code == 502
    r = post_chat(gw, key, chat_body("fo/all"))
    assert r.status_code == 503, r.text
    assert 1 <= int(r.headers["retry-after"]) <= 2
    assert "cooling down" in r.json()["error"]["message"]
    assert received(simulator, "fo-all-1", "fo-all-2", "fo-all-3") == {"fo-all-1": 2, "fo-all-2": 2, "fo-all-3": 2}
    # nothing was served, so nothing was charged
    assert all(micros(u["cost"]) == 0 for u in usage_records(gw, account))
    assert micros(gw.balance(account)["balance"]) == 100_000_000


def test_anthropic_clients_get_502_and_503_in_their_own_envelope(gw: Gateway) -> None:
    _, key = gw.account()
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    body = {"model": "fo/anthropic-down", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    statuses = []
    for _ in range(3):
        r = httpx.post(gw.v1 + "/messages", json=body, headers=headers, timeout=20)
        statuses.append(r.status_code)
        assert r.json()["type"] == "error" and r.json()["error"]["message"], r.text
    # two failures open the only deployment's breaker (failure_threshold 2)
    assert statuses == [502, 502, 503]
    assert r.json()["error"]["type"] == "overloaded_error"
    assert int(r.headers["retry-after"]) >= 1


def test_retry_after_from_an_upstream_429_is_respected(gw: Gateway, simulator: str) -> None:
    _, key = gw.account()
    # a 429 fails over at once, and the deployment is left alone for its Retry-After (5 s),
    # longer than the 1 s cooldown and although one failure does not open its breaker
    assert post_chat(gw, key, chat_body("fo/429")).status_code == 200
    row = deployments(gw)["fo-429/m"]
    assert row["cooling_down_until"] is not None and row["state"] == "healthy"
    time.sleep(1.2)
    for _ in range(3):
        assert post_chat(gw, key, chat_body("fo/429")).status_code == 200
    assert received(simulator, "fo-429", "fo-429-b") == {"fo-429": 1, "fo-429-b": 4}
    # with nowhere else to go the client sees the 429's Retry-After, then a 503 until it passes
    r = post_chat(gw, key, chat_body("fo/429-only"))
    assert r.status_code == 502 and r.headers["retry-after"] == "5", r.text
    r = post_chat(gw, key, chat_body("fo/429-only"))
    assert r.status_code == 503, r.text
    assert 3 <= int(r.headers["retry-after"]) <= 5
    assert received(simulator, "fo-429-only") == {"fo-429-only": 1}


@pytest.mark.parametrize("stream", [False, True])
def test_a_hung_upstream_is_abandoned_at_the_first_byte_timeout(gw: Gateway, simulator: str, stream: bool) -> None:
    account, key = gw.account()
    before = received(simulator, "fo-hang", "fo-hang-b")
    timeouts = metric(gw, "creditgate_failovers_total", deployment="fo-hang/m", reason="timeout_first_byte")
    body = chat_body("fo/hang", stream=stream)
    # the total timeout is 60 s: a client that gives up after 15 s sees an answer only if the
    # gateway gave up on the hung upstream at its first-byte timeout (0.5 s)
    with httpx.stream(
        "POST", gw.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=15
    ) as r:
        text = r.read().decode()
    assert r.status_code == 200, text
    if stream:
        assert text.rstrip().endswith("data: [DONE]") and '"error"' not in text
    after = received(simulator, "fo-hang", "fo-hang-b")
    assert after["fo-hang"] - before["fo-hang"] == 1 and after["fo-hang-b"] - before["fo-hang-b"] == 1
    [record] = usage_records(gw, account)
    assert record["deployment"] == "fo-hang-b/m" and record["status"] == "ok"
    assert metric(gw, "creditgate_failovers_total", deployment="fo-hang/m", reason="timeout_first_byte") == timeouts + 1


def test_failovers_and_routing_decisions_show_in_metrics(gw: Gateway) -> None:
    _, key = gw.account()
    failovers = metric(gw, "creditgate_failovers_total", deployment="fo-down/m", reason="http_503")
    decisions = metric(gw, "creditgate_route_decisions_total", model="fo/primary")
    for _ in range(2):
        assert post_chat(gw, key, chat_body("fo/primary")).status_code == 200
    assert metric(gw, "creditgate_route_decisions_total", model="fo/primary") == decisions + 2
    # fo-down fails over until its breaker opens; every attempt on it was a failover
    assert metric(gw, "creditgate_failovers_total", deployment="fo-down/m", reason="http_503") > failovers
    assert metric(gw, "creditgate_breaker_transitions_total", deployment="fo-down/m", state="open") >= 1

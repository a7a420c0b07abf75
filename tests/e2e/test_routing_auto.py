"""The virtual `auto-*` models through HTTP: each picks what its documentation says, among
the models the key may use and that can see the request's images; the chosen model is
named in the response and in the usage record, and billed at its own price."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import Gateway, module_gateway
from tests.e2e.routing_support import chat_body, cost_micros, metric, micros, post_chat, received, usage_records

# blended price = (3 x input + output) / 4: free 0, cheap 125, eye 1,250, coder 2,500, best 6,250
PRICES = {
    "au/free": (0, 0),
    "au/cheap": (100, 200),
    "au/eye": (1000, 2000),
    "au/coder": (2000, 4000),
    "au/best": (5000, 10000),
}

CONFIG = """
database: sqlite:///unused.db
currency:
  code: INR
billing:
  group_commit_ms: 2
auto:
  long_prompt_tokens: 300
providers:
  - {{id: au, type: openai, base_url: "{sim}/x/id=au/v1", api_key: k}}
models:
  - {{id: au/free, context_window: 400, max_output_tokens: 256, rank: 1, price: {{input: 0, output: 0}},
     deployments: [{{provider: au, model: free}}]}}
  - {{id: au/cheap, max_output_tokens: 256, rank: 10, price: {{input: 100, output: 200}},
     deployments: [{{provider: au, model: cheap}}]}}
  - {{id: au/eye, vision: true, max_output_tokens: 256, rank: 60, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: au, model: eye}}]}}
  - {{id: au/coder, tags: [code], max_output_tokens: 256, rank: 50, price: {{input: 2000, output: 4000}},
     deployments: [{{provider: au, model: coder}}]}}
  - {{id: au/best, vision: true, max_output_tokens: 256, rank: 100, price: {{input: 5000, output: 10000}},
     deployments: [{{provider: au, model: best}}]}}
"""

IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ],
    }
]
CODE = [{"role": "user", "content": "Why does this fail?\n```python\ndef f(x):\n    return x +\n```"}]
LONG = [{"role": "user", "content": "Summarise the following notes. " + "The meadow was quiet that day. " * 60}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
EVERYTHING_BUT = {m: [other for other in PRICES if other != m] for m in PRICES}


gw = module_gateway(CONFIG, "routing-auto")


Ask = Callable[..., str]


@pytest.fixture
def ask(gw: Gateway) -> Ask:
    """`ask(policy, messages=..., allowed=[...], **body)`: the model that served, checked
    against the response, the usage record and the price of that model."""

    def run(policy: str, *, allowed: list[str] | None = None, **body: Any) -> str:
        options = {"models": allowed} if allowed is not None else {}
        account, key = gw.account(**options)
        r = post_chat(gw, key, chat_body(policy, **body))
        assert r.status_code == 200, r.text
        chosen = str(r.json()["model"])
        [record] = usage_records(gw, account)
        assert record["model"] == chosen and record["status"] == "ok"
        assert micros(record["cost"]) == cost_micros(record, *PRICES[chosen])
        assert micros(r.json()["usage"]["cost"]) == micros(record["cost"])
        return chosen

    return run


def test_auto_cheap_picks_the_lowest_blended_price(ask: Ask) -> None:
    assert ask("auto-cheap") == "au/free"
    assert ask("auto-cheap", allowed=EVERYTHING_BUT["au/free"]) == "au/cheap"
    # images: only models with vision, cheapest first
    assert ask("auto-cheap", messages=IMAGE) == "au/eye"


def test_auto_best_picks_the_highest_rank(ask: Ask) -> None:
    assert ask("auto-best") == "au/best"
    assert ask("auto-best", allowed=EVERYTHING_BUT["au/best"]) == "au/eye"
    assert ask("auto-best", allowed=["au/cheap", "au/free"]) == "au/cheap"


def test_auto_code_prefers_models_tagged_code(ask: Ask) -> None:
    assert ask("auto-code") == "au/coder"
    assert ask("auto-code", messages=CODE) == "au/coder"
    # without the code model the key gets the best-ranked model it may use
    assert ask("auto-code", allowed=EVERYTHING_BUT["au/coder"]) == "au/best"
    # images: au/coder cannot see them
    assert ask("auto-code", messages=IMAGE) == "au/best"


def test_auto_free_uses_only_free_models(ask: Ask, gw: Gateway) -> None:
    assert ask("auto-free") == "au/free"
    _, key = gw.account(models=EVERYTHING_BUT["au/free"])
    r = post_chat(gw, key, chat_body("auto-free"))
    assert r.status_code == 403, r.text
    assert "auto-free" in r.json()["error"]["message"]
    # no free model can see images: nothing to route to, and nothing paid is used instead
    _, key = gw.account()
    r = post_chat(gw, key, chat_body("auto-free", messages=IMAGE))
    assert r.status_code == 503, r.text
    assert "free" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "chosen"),
    [
        ({}, "au/free"),  # default: auto-cheap
        ({"messages": CODE}, "au/coder"),  # code: auto-code
        ({"tools": TOOLS}, "au/coder"),  # tools: auto-code
        ({"messages": IMAGE}, "au/best"),  # images: auto-best among vision models
        ({"messages": LONG}, "au/cheap"),  # long prompt: auto-cheap among windows that hold it
    ],
)
def test_auto_reads_the_request(ask: Ask, body: dict[str, Any], chosen: str) -> None:
    assert ask("auto", **body) == chosen


def test_routing_decisions_show_in_metrics(ask: Ask, gw: Gateway) -> None:
    before = metric(gw, "creditgate_route_decisions_total", policy="auto-code", model="au/coder")
    assert ask("auto", messages=CODE) == "au/coder"
    assert metric(gw, "creditgate_route_decisions_total", policy="auto-code", model="au/coder") == before + 1


def test_auto_respects_the_keys_allowed_models(ask: Ask) -> None:
    assert ask("auto", messages=CODE, allowed=["au/cheap", "au/eye"]) == "au/eye"
    assert ask("auto", messages=IMAGE, allowed=["au/cheap", "au/eye"]) == "au/eye"


def test_the_anthropic_dialect_reports_the_chosen_model(gw: Gateway) -> None:
    account, key = gw.account()
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    body = {"model": "auto-best", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(gw.v1 + "/messages", json=body, headers=headers, timeout=20)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "au/best"
    [record] = usage_records(gw, account)
    assert record["model"] == "au/best"


def test_a_stream_names_the_chosen_model(gw: Gateway) -> None:
    account, key = gw.account()
    body = chat_body("auto-best", stream=True, stream_options={"include_usage": True})
    with httpx.stream(
        "POST", gw.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=20
    ) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
    assert r.status_code == 200
    assert lines and all('"model":"au/best"' in line for line in lines)
    [record] = usage_records(gw, account)
    assert record["model"] == "au/best"


FAST_CONFIG = """
database: sqlite:///unused.db
currency:
  code: INR
billing:
  group_commit_ms: 2
auto:
  fast_prior_ms: 0
providers:
  - {{id: fast-slow, type: openai, base_url: "{sim}/x/ttft_ms=500,id=fast-slow/v1", api_key: k}}
  - {{id: fast-mid, type: openai, base_url: "{sim}/x/ttft_ms=250,id=fast-mid/v1", api_key: k}}
  - {{id: fast-quick, type: openai, base_url: "{sim}/x/id=fast-quick/v1", api_key: k}}
models:
  - {{id: fast/slow, rank: 90, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fast-slow, model: m}}]}}
  - {{id: fast/mid, rank: 50, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fast-mid, model: m}}]}}
  - {{id: fast/quick, rank: 10, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: fast-quick, model: m}}]}}
"""


def test_auto_fast_tries_unmeasured_models_then_keeps_to_the_fastest(
    gateway_factory: Callable[..., Gateway], simulator: str
) -> None:
    gw = gateway_factory(FAST_CONFIG)
    account, key = gw.account()
    chosen = []
    for _ in range(5):
        r = post_chat(gw, key, chat_body("auto-fast"))
        assert r.status_code == 200, r.text
        chosen.append(r.json()["model"])
    # with fast_prior_ms 0 an unmeasured model goes first (best rank breaking the tie); once
    # all are measured the quickest keeps the traffic, whatever its rank
    assert chosen == ["fast/slow", "fast/mid", "fast/quick", "fast/quick", "fast/quick"]
    assert [u["model"] for u in reversed(usage_records(gw, account))] == chosen
    assert received(simulator, "fast-slow", "fast-mid", "fast-quick") == {
        "fast-slow": 1,
        "fast-mid": 1,
        "fast-quick": 3,
    }

"""The output cap the gateway asks of an upstream is the one it quoted the hold on: the
model's `max_output_tokens`, or the client's own smaller maximum. So a long-winded upstream
cannot produce more than was held (which would go uncharged), in either dialect and on
every provider type."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import CONFIG, Gateway, module_gateway
from tests.e2e.sdk_support import Upstream

CAP = 40
# Upstreams that would say 300 tokens if nobody stopped them.
PROVIDERS = """\
  - {{id: long-openai, type: openai, base_url: "{sim}/x/tokens=300,id=cap/v1", api_key: sim-key}}
  - {{id: long-anthropic, type: anthropic, base_url: "{sim}/x/tokens=300,id=cap", api_key: sim-key}}
  - {{id: long-gemini, type: gemini, base_url: "{sim}/x/tokens=300,id=cap", api_key: sim-key}}
"""
MODELS = f"""\
  - {{{{id: cap/openai, max_output_tokens: {CAP}, price: {{{{input: 1000, output: 2000}}}},
     deployments: [{{{{provider: long-openai, model: sim-long}}}}]}}}}
  - {{{{id: cap/claude, max_output_tokens: {CAP}, price: {{{{input: 1000, output: 2000}}}},
     deployments: [{{{{provider: long-anthropic, model: claude-sim}}}}]}}}}
  - {{{{id: cap/gemini, max_output_tokens: {CAP}, price: {{{{input: 1000, output: 2000}}}},
     deployments: [{{{{provider: long-gemini, model: gemini-sim}}}}]}}}}
"""
CAPPED = ["cap/openai", "cap/claude", "cap/gemini"]
HELLO: list[Any] = [{"role": "user", "content": "Tell me everything."}]


assert CONFIG.count("\nmodels:\n") == 1
gw = module_gateway(CONFIG.replace("\nmodels:\n", "\n" + PROVIDERS + "models:\n") + MODELS, "caps")


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.account(credits="1000")[1]


def chat(gw: Gateway, key: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(gw.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def charged(usage: dict[str, Any]) -> Decimal:
    return Decimal(usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 2000) / 1_000_000


@pytest.mark.parametrize("model", CAPPED)
def test_without_a_client_maximum_the_models_cap_applies(gw: Gateway, key: str, model: str) -> None:
    completion = chat(gw, key, {"model": model, "messages": HELLO})
    usage = completion["usage"]
    assert 0 < usage["completion_tokens"] <= CAP
    assert completion["choices"][0]["finish_reason"] == "length"
    assert Decimal(str(usage["cost"])) == charged(usage), "the charge is not the cost of what was produced"


@pytest.mark.parametrize("model", CAPPED)
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_client_maximum_above_the_cap_is_lowered_to_it(gw: Gateway, key: str, model: str, field: str) -> None:
    completion = chat(gw, key, {"model": model, "messages": HELLO, field: 1000})
    usage = completion["usage"]
    assert 0 < usage["completion_tokens"] <= CAP
    assert Decimal(str(usage["cost"])) == charged(usage)


@pytest.mark.parametrize("model", CAPPED)
def test_a_client_maximum_below_the_cap_is_kept(gw: Gateway, key: str, model: str) -> None:
    completion = chat(gw, key, {"model": model, "messages": HELLO, "max_tokens": 10})
    assert 0 < completion["usage"]["completion_tokens"] <= 10


@pytest.mark.parametrize("model", CAPPED)
def test_anthropic_dialect_max_tokens_above_the_cap(gw: Gateway, key: str, model: str) -> None:
    r = httpx.post(
        gw.url + "/v1/messages",
        json={"model": model, "max_tokens": 4000, "messages": HELLO},
        headers={"x-api-key": key},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert 0 < r.json()["usage"]["output_tokens"] <= CAP
    assert r.json()["stop_reason"] == "max_tokens"


def test_streams_are_capped_too(gw: Gateway, key: str, simulator: str) -> None:
    upstream = Upstream(simulator)
    for model in CAPPED:
        upstream.clear()
        with httpx.stream(
            "POST",
            gw.v1 + "/chat/completions",
            json={"model": model, "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}},
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        ) as r:
            text = r.read().decode()
        last_data = [line for line in text.splitlines() if line.startswith("data: {")][-1]
        assert '"completion_tokens":' in last_data
        usage = httpx.Response(200, content=last_data[6:]).json()["usage"]
        assert 0 < usage["completion_tokens"] <= CAP, model
        assert upstream.received(), model


def test_openai_upstreams_are_asked_for_the_cap(gw: Gateway, key: str, simulator: str) -> None:
    """A request without a maximum is sent with the model's; a smaller one is kept as sent."""
    upstream = Upstream(simulator)
    upstream.clear()
    chat(gw, key, {"model": "test/echo", "messages": HELLO})
    sent = upstream.last("/chat/completions")["body"]
    assert sent["max_completion_tokens"] == 256 and "max_tokens" not in sent
    chat(gw, key, {"model": "test/echo", "messages": HELLO, "max_tokens": 30})
    sent = upstream.last("/chat/completions")["body"]
    assert sent["max_tokens"] == 30 and "max_completion_tokens" not in sent

"""Usage is translated consistently: the same exchange with upstreams of all three types,
asked in both client dialects, streamed or not, reports the same token counts (in each
dialect's terms) and costs the same, with cached and reasoning tokens accounted for."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from tests.e2e.conftest import CONFIG, Gateway, module_gateway

# Upstreams that report 3 cached prompt tokens and 7 reasoning tokens.
PROVIDERS = """\
  - {{id: usage-openai, type: openai, base_url: "{sim}/x/reasoning=7,cached=3/v1", api_key: sim-key}}
  - {{id: usage-anthropic, type: anthropic, base_url: "{sim}/x/reasoning=7,cached=3", api_key: sim-key}}
  - {{id: usage-gemini, type: gemini, base_url: "{sim}/x/reasoning=7,cached=3", api_key: sim-key}}
"""
PRICE = "{{input: 1000, output: 2000, cached_input: 100}}"
MODELS = f"""\
  - {{{{id: usage/openai, max_output_tokens: 256, price: {PRICE},
     deployments: [{{{{provider: usage-openai, model: m}}}}]}}}}
  - {{{{id: usage/claude, max_output_tokens: 256, price: {PRICE},
     deployments: [{{{{provider: usage-anthropic, model: claude-sim}}}}]}}}}
  - {{{{id: usage/gemini, max_output_tokens: 256, price: {PRICE},
     deployments: [{{{{provider: usage-gemini, model: gemini-sim}}}}]}}}}
"""
UPSTREAMS = ["usage/openai", "usage/claude", "usage/gemini"]
MESSAGES: list[Any] = [{"role": "user", "content": "hello there friend " * 5}]


assert CONFIG.count("\nmodels:\n") == 1
gw = module_gateway(CONFIG.replace("\nmodels:\n", "\n" + PROVIDERS + "models:\n") + MODELS, "usage")


@pytest.fixture(scope="module")
def clients(gw: Gateway) -> Iterator[tuple[openai.OpenAI, anthropic.Anthropic]]:
    key = gw.account(credits="100")[1]
    with (
        openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=30) as o,
        anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=30) as a,
    ):
        yield o, a


def cost_of(prompt: int, cached: int, completion: int) -> Decimal:
    return Decimal((prompt - cached) * 1000 + cached * 100 + completion * 2000) / 1_000_000


def openai_usage(client: openai.OpenAI, model: str, stream: bool) -> dict[str, Any]:
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
        usage = chunks[-1].usage
    else:
        usage = client.chat.completions.create(model=model, messages=MESSAGES).usage
    assert usage is not None
    return usage.model_dump()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_openai_dialect(clients: tuple[openai.OpenAI, anthropic.Anthropic], stream: bool) -> None:
    seen = {model: openai_usage(clients[0], model, stream) for model in UPSTREAMS}
    reference = seen["usage/openai"]
    for model, usage in seen.items():
        assert usage["prompt_tokens"] == reference["prompt_tokens"] > 3, model
        assert usage["completion_tokens"] == reference["completion_tokens"] > 7, model
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert usage["prompt_tokens_details"]["cached_tokens"] == 3, model
        cost = cost_of(usage["prompt_tokens"], 3, usage["completion_tokens"])
        assert Decimal(str(usage["cost"])) == cost, model
    # Anthropic does not break thinking out of its output tokens; the others report it.
    assert seen["usage/openai"]["completion_tokens_details"]["reasoning_tokens"] == 7
    assert seen["usage/gemini"]["completion_tokens_details"]["reasoning_tokens"] == 7


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_anthropic_dialect(clients: tuple[openai.OpenAI, anthropic.Anthropic], stream: bool) -> None:
    reference = openai_usage(clients[0], "usage/openai", False)
    for model in UPSTREAMS:
        if stream:
            with clients[1].messages.stream(model=model, max_tokens=100, messages=MESSAGES) as s:
                usage = s.get_final_message().usage
        else:
            usage = clients[1].messages.create(model=model, max_tokens=100, messages=MESSAGES).usage
        # Anthropic's input_tokens leaves out what was read from the cache.
        assert usage.cache_read_input_tokens == 3, model
        assert usage.input_tokens == reference["prompt_tokens"] - 3, model
        assert usage.output_tokens == reference["completion_tokens"], model

"""The output cap on OpenAI-compatible upstreams: a maximum above it is lowered, none gets
it as `max_completion_tokens` (or `max_tokens` for vendors with the `max_tokens_only` quirk),
and a request without a cap passes through as it came."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from creditgate.canonical import JSON, ChatRequest
from creditgate.catalog import Deployment
from creditgate.config import ProviderConfig
from creditgate.providers.openai_compat import OpenAIProvider

HELLO = [{"role": "user", "content": "hi"}]


def sent(body: JSON, cap: int | None, quirks: frozenset[str] = frozenset()) -> JSON:
    config = ProviderConfig(id="p", type="openai", base_url="https://upstream.example/v1", api_key="k", quirks=quirks)
    deployment = Deployment(key="p/m", provider=config, upstream_model="m", priority=0, weight=1)
    request = ChatRequest(body={"model": "x", "messages": HELLO, **body}, model="x", max_output_tokens=cap)
    result: JSON = orjson.loads(OpenAIProvider().build_request(request, deployment).body)
    return result


@pytest.mark.parametrize(
    ("body", "cap", "expected"),
    [
        ({}, 256, {"max_completion_tokens": 256}),
        ({"max_tokens": 1000}, 256, {"max_tokens": 256}),
        ({"max_completion_tokens": 1000}, 256, {"max_completion_tokens": 256}),
        ({"max_tokens": 30}, 256, {"max_tokens": 30}),
        ({"max_tokens": 1000, "max_completion_tokens": 1000}, 40, {"max_tokens": 40, "max_completion_tokens": 40}),
        ({}, None, {}),
        ({"max_tokens": 1000}, None, {"max_tokens": 1000}),
    ],
)
def test_cap(body: dict[str, Any], cap: int | None, expected: dict[str, int]) -> None:
    out = sent(body, cap)
    assert {k: out[k] for k in ("max_tokens", "max_completion_tokens") if k in out} == expected


def test_vendors_that_only_know_max_tokens_get_the_cap_there() -> None:
    out = sent({}, 256, frozenset({"max_tokens_only"}))
    assert out["max_tokens"] == 256 and "max_completion_tokens" not in out

"""`billing.enabled: false`: the gateway core with no accounts, holds or charges."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest
from tests.e2e.conftest import CONFIG, Gateway

OPEN = CONFIG.replace("billing:\n", "billing:\n  enabled: false\n  open_keys: [team-key-1, team-key-2]\n", 1)


def test_open_gateway_serves_its_keys_and_charges_nothing(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(OPEN)
    client = openai.OpenAI(base_url=gw.v1, api_key="team-key-2", max_retries=0)
    reply = client.chat.completions.create(model="test/echo", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.usage.model_dump()["cost"] == 0

    chunks = list(
        client.chat.completions.create(
            model="test/claude",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0

    with pytest.raises(openai.AuthenticationError) as refused:
        openai.OpenAI(base_url=gw.v1, api_key="someone-else", max_retries=0).chat.completions.create(
            model="test/echo", messages=[{"role": "user", "content": "hi"}]
        )
    assert "not one of this gateway's keys" in refused.value.message

    ready = httpx.get(gw.url + "/health/ready", timeout=10)
    assert ready.json() == {"status": "ready", "db": "disabled", "redis": "disabled"}
    # No wallets without billing: the credit routes do not exist.
    assert httpx.get(gw.v1 + "/credits", headers={"authorization": "Bearer team-key-1"}).status_code == 404

"""Billing when upstreams misbehave or the request is unusual: a stream cut by the upstream is
billed for what it produced and ends in an error, never `[DONE]`; failover charges once; the
Anthropic dialect and several choices are billed at the catalog price of their tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anthropic
import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tests.e2e.billing_support import (
    assert_ledger_balances,
    chat_body,
    client,
    micros,
    price_of,
    sdk_error,
    usage_records,
    wait_for,
)
from tests.e2e.conftest import Gateway, launch_gateway, shutdown

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "tell me a story"}]


@pytest.fixture(scope="module")
def gateway(simulator: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway of this module's own, so that no other test's failures have opened a
    circuit breaker on the broken upstreams used here."""
    gw = launch_gateway(simulator, tmp_path_factory.mktemp("billing-upstreams"))
    try:
        yield gw
    finally:
        shutdown(gw)


def test_stream_cut_by_the_upstream_is_billed_for_what_it_produced(gateway: Gateway) -> None:
    account_id, key = gateway.account("5")
    body = chat_body("tell me a story", model="test/cut", stream=True, stream_options={"include_usage": True})
    with httpx.stream(
        "POST", gateway.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    ) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    last = orjson.loads(events[-1])
    assert set(last) == {"error"} and set(last["error"]) == {"message", "type", "param", "code"}
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in map(orjson.loads, events[:-1]) if c.get("choices")
    )
    assert text

    (record,) = usage_records(gateway, account_id)
    assert record["status"] == "cut" and record["estimated"] is True
    assert record["completion_tokens"] == -(-len(text.encode()) // 4)
    cost = micros(record["cost"])
    assert cost == price_of(record["prompt_tokens"], record["completion_tokens"]) > 0
    _, charges = assert_ledger_balances(gateway, account_id, key)
    assert charges == cost


def test_non_stream_cut_is_an_error_and_free(gateway: Gateway) -> None:
    account_id, key = gateway.account("5")
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway, key).chat.completions.create(model="test/cut", messages=MESSAGES)
    assert caught.value.status_code >= 500
    sdk_error(caught.value, caught.value.status_code)
    records = usage_records(gateway, account_id)
    assert records and all(micros(r["cost"]) == 0 for r in records)
    _, charges = assert_ledger_balances(gateway, account_id, key)
    assert charges == 0


def test_failover_charges_once_at_the_deployment_that_answered(gateway: Gateway) -> None:
    """test/failover: a 503, then an upstream that never answers (1 s timeout), then a good one."""
    account_id, key = gateway.account("5")
    raw = client(gateway, key).chat.completions.with_raw_response.create(
        model="test/failover", messages=MESSAGES, max_tokens=10
    )
    completion = raw.parse()
    assert completion.usage is not None
    cost = micros(completion.usage.model_dump()["cost"])
    assert cost == price_of(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    (record,) = usage_records(gateway, account_id)
    assert record["deployment"] == "sim/c" and record["request_id"] == raw.headers["x-request-id"]
    assert micros(record["cost"]) == cost
    _, charges = assert_ledger_balances(gateway, account_id, key)
    assert charges == cost


def test_several_choices_are_all_billed(gateway: Gateway) -> None:
    account_id, key = gateway.account("5")
    completion = client(gateway, key).chat.completions.create(model="test/echo", messages=MESSAGES, max_tokens=6, n=3)
    assert len(completion.choices) == 3 and completion.usage is not None
    usage = completion.usage.model_dump()
    assert usage["completion_tokens"] >= 3 * 1
    assert micros(usage["cost"]) == price_of(usage["prompt_tokens"], usage["completion_tokens"])
    (record,) = usage_records(gateway, account_id)
    assert micros(record["cost"]) == micros(usage["cost"])
    assert micros(record["cost"]) <= micros(record["hold"])


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_dialect_is_billed_like_openai(gateway: Gateway, stream: bool) -> None:
    account_id, key = gateway.account("5")
    sdk = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=30)
    message: anthropic.types.Message
    if stream:
        with sdk.messages.stream(
            model="test/echo", max_tokens=10, messages=[{"role": "user", "content": "tell me a story"}]
        ) as s:
            message = s.get_final_message()
    else:
        message = sdk.messages.create(
            model="test/echo", max_tokens=10, messages=[{"role": "user", "content": "tell me a story"}]
        )
    (record,) = usage_records(gateway, account_id)
    assert record["status"] == "ok" and record["estimated"] is False
    assert (record["prompt_tokens"], record["completion_tokens"]) == (
        message.usage.input_tokens,
        message.usage.output_tokens,
    )
    cost = micros(record["cost"])
    assert cost == price_of(message.usage.input_tokens, message.usage.output_tokens) > 0
    _, charges = assert_ledger_balances(gateway, account_id, key)
    assert charges == cost

    with pytest.raises(anthropic.APIStatusError) as caught:
        anthropic.Anthropic(base_url=gateway.url, api_key=gateway.account("0.01")[1], max_retries=0).messages.create(
            model="test/echo", max_tokens=200, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 402
    body = caught.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] and "not enough credits" in body["error"]["message"]


def test_many_clients_dropping_streams_at_once_each_pay_for_their_part(gateway: Gateway) -> None:
    """Twenty slow streams at once (40 tokens a second); client n leaves after 5 + n chunks."""
    account_id, key = gateway.account("60")  # a hold of about 2 INR each

    async def drop(http: httpx.AsyncClient, n: int) -> tuple[str, int]:
        body = chat_body(f"story {n}", model="test/slow", stream=True)
        async with http.stream("POST", gateway.v1 + "/chat/completions", json=body) as r:
            assert r.status_code == 200
            received, seen = b"", 0
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = orjson.loads(line[6:])
                for choice in chunk.get("choices") or ():
                    received += (choice["delta"].get("content") or "").encode()
                seen += 1
                if seen == 5 + n:
                    break
        return r.headers["x-request-id"], len(received)

    async def run() -> list[tuple[str, int]]:
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30) as http:
            return list(await asyncio.gather(*(drop(http, n) for n in range(20))))

    dropped = dict(asyncio.run(run()))
    records = wait_for(
        lambda: (recs := usage_records(gateway, account_id)) and len(recs) == 20 and recs,
        what="twenty usage records",
    )
    by_request = {r["request_id"]: r for r in records}
    assert set(by_request) == set(dropped)
    for request_id, received_bytes in dropped.items():
        record = by_request[request_id]
        assert record["status"] == "disconnected" and record["estimated"] is True
        assert record["completion_tokens"] >= -(-received_bytes // 4) > 0
        assert record["completion_tokens"] < 100  # far from the 200 tokens a whole reply has
        assert micros(record["cost"]) == price_of(record["prompt_tokens"], record["completion_tokens"])
        assert 0 < micros(record["cost"]) < micros(record["hold"])
    _, charges = assert_ledger_balances(gateway, account_id, key)
    assert charges == sum(micros(r["cost"]) for r in records)

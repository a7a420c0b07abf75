"""The OpenAI SDK against models served by Anthropic and Gemini upstreams: the gateway
translates both ways, so the client sees plain OpenAI replies, streams, tool calls and usage;
and the requests the gateway sent upstream are valid in the upstream's own protocol."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionToolParam
from tests.e2e.conftest import Gateway
from tests.e2e.sdk_support import SchemaErrors, Upstream, assembled_tool_calls, openai_chunks, upstream_body

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
HELLO: list[Any] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
# Where each model's requests land on the simulator, and the schema they must satisfy.
MODELS = ["test/claude", "test/gemini"]


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    key = gateway.account(credits="1000")[1]
    with openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0, timeout=30) as c:
        yield c


@pytest.mark.parametrize("model", MODELS)
def test_plain(client: openai.OpenAI, model: str, upstream: Upstream, schema_errors: SchemaErrors) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
    assert schema_errors(json.loads(raw.content), "openai:CreateChatCompletionResponse") == []
    completion = raw.parse()
    assert completion.model == model
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    body = upstream_body(upstream, model, schema_errors)
    if model == "test/claude":
        assert body["system"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
    else:
        assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}]


@pytest.mark.parametrize("model", MODELS)
def test_streamed_with_usage(
    client: openai.OpenAI, model: str, upstream: Upstream, schema_errors: SchemaErrors
) -> None:
    chunks = list(
        client.chat.completions.create(model=model, messages=HELLO, stream=True, stream_options={"include_usage": True})
    )
    for c in chunks:
        assert schema_errors(c.model_dump(exclude_unset=True), "openai:CreateChatCompletionStreamResponse") == []
    text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
    assert text
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert finishes == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.model_extra is not None and float(usage.model_extra["cost"]) > 0
    upstream_body(upstream, model, schema_errors)


RAW_CASES: dict[str, dict[str, Any]] = {
    "text": {"messages": HELLO},
    "usage": {"messages": HELLO, "stream_options": {"include_usage": True}},
    "tools": {
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [WEATHER],
        "tool_choice": "required",
        "stream_options": {"include_usage": True},
    },
    "json": {"messages": HELLO, "response_format": {"type": "json_object"}},
}


@pytest.mark.parametrize("case", sorted(RAW_CASES))
@pytest.mark.parametrize("model", ["test/echo", *MODELS])
def test_every_raw_stream_chunk_is_valid(gateway: Gateway, model: str, case: str, schema_errors: SchemaErrors) -> None:
    key = gateway.account(credits="10")[1]
    with httpx.stream(
        "POST",
        gateway.v1 + "/chat/completions",
        json={"model": model, "stream": True, **RAW_CASES[case]},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers.get("content-encoding") is None
        assert r.headers.get("cache-control") == "no-cache"
        assert r.headers.get("x-request-id")
        chunks, done = openai_chunks(r.read())
    assert done and chunks
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert schema_errors(chunk, "openai:CreateChatCompletionStreamResponse") == [], chunk
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    roles = [c["choices"][0]["delta"].get("role") for c in chunks if c["choices"]]
    assert roles.count("assistant") == 1, "the role belongs in the first delta only"


@pytest.mark.parametrize("model", ["test/echo", *MODELS])
def test_every_chunk_of_a_stream_has_the_same_id(client: openai.OpenAI, model: str) -> None:
    """id, created, model and system_fingerprint repeat on every chunk, the usage chunk too."""
    chunks = list(
        client.chat.completions.create(model=model, messages=HELLO, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].usage is not None
    assert len({c.id for c in chunks}) == 1, [c.id for c in chunks]
    assert len({c.created for c in chunks}) == 1
    assert {c.model for c in chunks} == {model}
    assert len({c.system_fingerprint for c in chunks}) == 1


@pytest.mark.parametrize("model", MODELS)
def test_tool_call(client: openai.OpenAI, model: str, upstream: Upstream, schema_errors: SchemaErrors) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    upstream_body(upstream, model, schema_errors)


@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_call(client: openai.OpenAI, model: str, upstream: Upstream, schema_errors: SchemaErrors) -> None:
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for c in chunks:
        assert schema_errors(c.model_dump(exclude_unset=True), "openai:CreateChatCompletionStreamResponse") == []
    calls = assembled_tool_calls(chunks)
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert "city" in json.loads(calls[0]["arguments"])
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    upstream_body(upstream, model, schema_errors)


@pytest.mark.parametrize("model", ["test/echo", *MODELS])
def test_non_ascii_tool_arguments_survive_translation_and_streaming(client: openai.OpenAI, model: str) -> None:
    place = "Zürich 🌍 東京"
    tool: ChatCompletionToolParam = {
        "type": "function",
        "function": {
            "name": "pick",
            "parameters": {
                "type": "object",
                "properties": {"place": {"type": "string", "enum": [place]}},
                "required": ["place"],
            },
        },
    }
    messages: list[Any] = [{"role": "user", "content": "Grüße 👋"}]
    completion = client.chat.completions.create(model=model, messages=messages, tools=[tool], tool_choice="required")
    calls = completion.choices[0].message.tool_calls
    assert calls and calls[0].type == "function"
    assert json.loads(calls[0].function.arguments) == {"place": place}
    chunks = list(
        client.chat.completions.create(
            model=model, messages=messages, tools=[tool], tool_choice="required", stream=True
        )
    )
    assert json.loads(assembled_tool_calls(chunks)[0]["arguments"]) == {"place": place}


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
FORMATS: dict[str, Any] = {
    "json_object": {"type": "json_object"},
    "json_schema": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("model", MODELS)
def test_json_mode_returns_json(client: openai.OpenAI, model: str, fmt: str, stream: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "Describe a person."}]
    if stream:
        chunks = list(
            client.chat.completions.create(model=model, messages=messages, response_format=FORMATS[fmt], stream=True)
        )
        text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
        finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    else:
        completion = client.chat.completions.create(model=model, messages=messages, response_format=FORMATS[fmt])
        assert not completion.choices[0].message.tool_calls
        text = completion.choices[0].message.content or ""
        finishes = [completion.choices[0].finish_reason]
    value = json.loads(text)
    assert isinstance(value, dict)
    if fmt == "json_schema":
        assert isinstance(value["name"], str) and isinstance(value["age"], int)
    assert finishes == ["stop"]


def test_json_object_with_tools_leaves_the_model_free_to_call_them(client: openai.OpenAI, upstream: Upstream) -> None:
    completion = client.chat.completions.create(
        model="test/claude",
        messages=[{"role": "user", "content": "What is the get_weather in Paris?"}],
        tools=[WEATHER],
        response_format={"type": "json_object"},
    )
    sent = upstream.last("/v1/messages")["body"]
    assert [t["name"] for t in sent["tools"]] == ["get_weather"]
    assert sent.get("tool_choice", {}).get("type", "auto") == "auto"
    calls = completion.choices[0].message.tool_calls
    assert calls and calls[0].type == "function" and calls[0].function.name == "get_weather"


PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.mark.parametrize("model", MODELS)
def test_images_as_data_urls_and_links(
    client: openai.OpenAI, model: str, upstream: Upstream, schema_errors: SchemaErrors
) -> None:
    link = "https://example.com/cat.webp"
    completion = client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these."},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                    {"type": "image_url", "image_url": {"url": link, "detail": "low"}},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content
    body = upstream_body(upstream, model, schema_errors)
    if model == "test/claude":
        sources = [b["source"] for b in body["messages"][0]["content"] if b["type"] == "image"]
        assert sources == [
            {"type": "base64", "media_type": "image/png", "data": PIXEL},
            {"type": "url", "url": link},
        ]
    else:
        parts = body["contents"][0]["parts"]
        assert {"inlineData": {"mimeType": "image/png", "data": PIXEL}} in parts
        assert {"fileData": {"mimeType": "image/webp", "fileUri": link}} in parts


def test_tool_result_round_trip(client: openai.OpenAI, upstream: Upstream, schema_errors: SchemaErrors) -> None:
    """An agent loop's second turn: the assistant's tool call and its result go back upstream
    in each protocol's form, and the model answers in text."""
    for model in MODELS:
        first = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER], tool_choice="required"
        )
        call = first.choices[0].message.tool_calls
        assert call
        messages: list[Any] = [
            {"role": "user", "content": "Weather?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call[0].id, "content": "18C and sunny"},
        ]
        second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
        assert second.choices[0].message.content
        upstream_body(upstream, model, schema_errors)


def test_cache_true_marks_the_anthropic_request(client: openai.OpenAI, upstream: Upstream) -> None:
    client.chat.completions.create(model="test/claude", messages=HELLO, extra_body={"cache": True})
    body = upstream.last("/v1/messages")["body"]
    assert "cache" not in body
    marked = json.dumps(body).count('"cache_control"')
    assert marked >= 1, body


def test_cached_prompt_is_read_back_at_the_cached_price(client: openai.OpenAI) -> None:
    """test/claude prices: input 1,000, cache write 1,250, cached input 100, output 2,000
    micros a token. The first call writes the cache, the second reads it."""
    system = f"Standing instructions {uuid.uuid4()}. " + "Follow the house style. " * 100
    messages: list[Any] = [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
    costs = []
    for expect in ("cache_write_tokens", "cached_tokens"):
        raw = client.chat.completions.with_raw_response.create(
            model="test/claude", messages=messages, extra_body={"cache": True}
        )
        usage = json.loads(raw.content)["usage"]
        details = usage["prompt_tokens_details"]
        assert details.get(expect) == usage["prompt_tokens"] > 0, usage
        price = 1250 if expect == "cache_write_tokens" else 100
        cost = Decimal(usage["prompt_tokens"] * price + usage["completion_tokens"] * 2000) / 1_000_000
        assert Decimal(str(usage["cost"])) == cost
        assert Decimal(raw.headers["x-creditgate-cost"]) == cost
        costs.append(cost)
    assert costs[1] < costs[0]


@pytest.mark.parametrize("model", MODELS)
def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI, model: str) -> None:
    chunks = list(client.chat.completions.create(model=model, messages=HELLO, stream=True))
    assert chunks and all(c.usage is None and c.choices for c in chunks)


def test_without_cache_nothing_is_marked(client: openai.OpenAI, upstream: Upstream) -> None:
    client.chat.completions.create(model="test/claude", messages=HELLO)
    body = upstream.last("/v1/messages")["body"]
    assert "cache_control" not in json.dumps(body)


@pytest.mark.parametrize("model", ["test/claude", "test/echo", "test/gemini"])
def test_no_cache_is_accepted_and_not_sent_upstream(client: openai.OpenAI, upstream: Upstream, model: str) -> None:
    completion = client.chat.completions.create(model=model, messages=HELLO, extra_body={"no_cache": True})
    assert completion.choices[0].message.content
    received = upstream.received()
    assert received
    assert "no_cache" not in json.dumps(received[-1]["body"])

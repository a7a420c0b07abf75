"""The OpenAI Chat Completions ingress through real HTTP with the official `openai` SDK (and
httpx where the raw bytes matter), against the session gateway and its simulator upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionToolParam
from tests.e2e.conftest import Gateway
from tests.e2e.sdk_support import SchemaErrors, Upstream, assembled_tool_calls, assert_openai_error, openai_chunks

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TIME: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.account(credits="1000")[1]


@pytest.fixture(scope="module")
def client(gateway: Gateway, key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0, timeout=30) as c:
        yield c


def raw_post(gateway: Gateway, key: str | None, body: Any, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(gateway.v1 + "/chat/completions", json=body, headers=headers, timeout=30, **kwargs)


def raw_stream(gateway: Gateway, key: str, body: dict[str, Any]) -> tuple[int, bytes]:
    with httpx.stream(
        "POST",
        gateway.v1 + "/chat/completions",
        json={**body, "stream": True},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    ) as r:
        return r.status_code, r.read()


# --- replies ----------------------------------------------------------------------------------


def test_plain_completion_has_text_usage_and_cost(client: openai.OpenAI, schema_errors: SchemaErrors) -> None:
    raw = client.chat.completions.with_raw_response.create(model="test/echo", messages=HELLO)
    assert raw.headers.get("x-request-id")
    completion = raw.parse()
    assert completion.model == "test/echo"
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    wire = json.loads(raw.content)
    assert schema_errors(wire, "openai:CreateChatCompletionResponse") == []
    # Prices: 1,000 micros per input token and 2,000 per output token.
    usage = wire["usage"]
    expected = Decimal(usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 2000) / 1_000_000
    assert Decimal(str(usage["cost"])) == expected


def test_stream_without_include_usage_sends_no_usage(client: openai.OpenAI, schema_errors: SchemaErrors) -> None:
    chunks = list(client.chat.completions.create(model="test/echo", messages=HELLO, stream=True))
    assert chunks
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "a chunk without choices was sent though usage was not asked for"
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    for c in chunks:
        assert schema_errors(c.model_dump(exclude_unset=True), "openai:CreateChatCompletionStreamResponse") == []


def test_stream_with_include_usage_ends_with_a_usage_chunk_with_cost(
    gateway: Gateway, key: str, schema_errors: SchemaErrors
) -> None:
    status, raw = raw_stream(
        gateway,
        key,
        {"model": "test/echo", "messages": HELLO, "stream_options": {"include_usage": True}},
    )
    assert status == 200
    chunks, done = openai_chunks(raw)
    assert done
    for c in chunks:
        assert schema_errors(c, "openai:CreateChatCompletionStreamResponse") == [], c
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] > 0
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
    assert Decimal(str(last["usage"]["cost"])) > 0
    assert all(c.get("usage") is None for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text


def test_stream_with_include_usage_through_the_sdk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="test/echo", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1]
    assert with_usage[0].usage is not None
    assert with_usage[0].usage.model_extra is not None and "cost" in with_usage[0].usage.model_extra


def test_usage_chunk_even_when_the_upstream_reports_none(client: openai.OpenAI) -> None:
    """test/nousage streams without usage; the gateway estimates it (about 4 bytes a token)."""
    chunks = list(
        client.chat.completions.create(
            model="test/nousage", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert usage.completion_tokens == -(-len(text.encode()) // 4)
    assert usage.model_extra is not None and Decimal(str(usage.model_extra["cost"])) > 0


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_tool_call(client: openai.OpenAI, tool_choice: Any, schema_errors: SchemaErrors) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="test/echo",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER, TIME],
        tool_choice=tool_choice,
    )
    assert schema_errors(json.loads(raw.content), "openai:CreateChatCompletionResponse") == []
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.id
    expected = "get_weather" if tool_choice == "required" else "get_time"
    assert call.function.name == expected
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments, dict)
    assert ("city" if expected == "get_weather" else "zone") in arguments


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_streamed_tool_call_assembles_into_json(
    client: openai.OpenAI, tool_choice: Any, schema_errors: SchemaErrors
) -> None:
    chunks = list(
        client.chat.completions.create(
            model="test/echo",
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER, TIME],
            tool_choice=tool_choice,
            stream=True,
        )
    )
    for c in chunks:
        assert schema_errors(c.model_dump(exclude_unset=True), "openai:CreateChatCompletionStreamResponse") == []
    calls = assembled_tool_calls(chunks)
    assert list(calls) == [0]
    expected = "get_weather" if tool_choice == "required" else "get_time"
    assert calls[0]["name"] == expected and calls[0]["id"]
    assert isinstance(json.loads(calls[0]["arguments"]), dict)
    fragments = sum(1 for c in chunks for ch in c.choices for _ in ch.delta.tool_calls or ())
    assert fragments >= 2, "the arguments were not streamed in fragments"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_stream_helper_assembles_tool_calls(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="test/echo",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER],
        tool_choice="required",
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert "city" in json.loads(calls[0].function.arguments)


def test_json_object_mode_returns_json(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="test/echo",
        messages=[{"role": "user", "content": "Reply in JSON."}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


def test_json_schema_mode_returns_json_of_the_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model="test/echo",
        messages=[{"role": "user", "content": "A person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    value = json.loads(completion.choices[0].message.content or "")
    assert isinstance(value["name"], str) and isinstance(value["age"], int)


def test_n_2_gives_two_choices(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="test/echo", messages=HELLO, n=2)
    assert sorted(c.index for c in completion.choices) == [0, 1]
    assert all(c.message.content for c in completion.choices)


def test_n_2_streamed_gives_two_choices(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="test/echo", messages=HELLO, n=2, stream=True))
    texts: dict[int, str] = {}
    for c in chunks:
        for choice in c.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert sorted(texts) == [0, 1] and all(texts.values())


# --- what the upstream receives ---------------------------------------------------------------


def test_fields_pass_through_to_the_upstream(client: openai.OpenAI, upstream: Upstream) -> None:
    client.chat.completions.create(
        model="test/echo",
        messages=HELLO,
        seed=7,
        stop=["\n\n"],
        metadata={"team": "blue"},
        user="user-42",
        extra_body={"future_field": {"x": 1}},
    )
    sent = upstream.last("/chat/completions")["body"]
    assert sent["model"] == "sim-echo"
    assert sent["seed"] == 7
    assert sent["stop"] == ["\n\n"]
    assert sent["metadata"] == {"team": "blue"}
    assert sent["user"] == "user-42"
    assert sent["future_field"] == {"x": 1}
    assert "stream_options" not in sent


def test_stream_always_asks_the_upstream_for_usage(client: openai.OpenAI, upstream: Upstream) -> None:
    list(client.chat.completions.create(model="test/echo", messages=HELLO, stream=True))
    sent = upstream.last("/chat/completions")["body"]
    assert sent["stream"] is True
    assert sent["stream_options"]["include_usage"] is True


def test_upstream_gets_the_provider_key_not_the_clients(client: openai.OpenAI, key: str, upstream: Upstream) -> None:
    client.chat.completions.create(model="test/echo", messages=HELLO)
    headers = upstream.last("/chat/completions")["headers"]
    assert headers["authorization"] == "Bearer sim-key"
    assert key not in json.dumps(headers)
    assert not any(h.startswith("x-stainless") for h in headers)


# --- models -----------------------------------------------------------------------------------


def test_models_list_has_catalog_models_with_prices_and_virtual_models(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"test/echo", "test/claude", "test/gemini", "test/vision"} <= set(models)
    echo = models["test/echo"].model_dump()
    assert echo["context_window"] == 8192
    # INR per 1M tokens: 1,000 micros a token is 1,000 INR per million.
    assert echo["pricing"]["unit"] == "per 1M tokens" and echo["pricing"]["currency"] == "INR"
    assert Decimal(str(echo["pricing"]["input"])) == 1000
    assert Decimal(str(echo["pricing"]["output"])) == 2000
    assert models["test/vision"].model_dump()["vision"] is True
    assert any(i.startswith("auto-") for i in models), sorted(models)


def test_models_retrieve(client: openai.OpenAI) -> None:
    assert client.models.retrieve("test/echo").id == "test/echo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("test/nope")


def test_auto_model_answers(client: openai.OpenAI) -> None:
    auto = [m.id for m in client.models.list() if m.id.startswith("auto-")]
    completion = client.chat.completions.create(model=auto[0], messages=HELLO)
    assert completion.choices[0].message.content
    assert not completion.model.startswith("auto-")


# --- errors -----------------------------------------------------------------------------------


def test_no_key_is_401(gateway: Gateway) -> None:
    error = assert_openai_error(raw_post(gateway, None, {"model": "test/echo", "messages": HELLO}), 401)
    assert "key" in error["message"].lower()


@pytest.mark.parametrize("wrong", ["sk-wrong-key", "sk-" + "0" * 64], ids=["malformed", "unknown"])
def test_wrong_key_is_401_in_the_sdk(gateway: Gateway, wrong: str) -> None:
    with (
        openai.OpenAI(base_url=gateway.v1, api_key=wrong, max_retries=0) as c,
        pytest.raises(openai.AuthenticationError) as info,
    ):
        c.chat.completions.create(model="test/echo", messages=HELLO)
    assert info.value.request_id
    assert info.value.status_code == 401
    assert isinstance(info.value.body, dict)
    assert set(info.value.body) >= {"message", "type", "param", "code"}, info.value.body


def test_unknown_model_is_404_naming_it(gateway: Gateway, key: str, client: openai.OpenAI) -> None:
    error = assert_openai_error(raw_post(gateway, key, {"model": "test/nope", "messages": HELLO}), 404)
    assert "test/nope" in error["message"]
    assert "/v1/models" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="test/nope", messages=HELLO)


def test_malformed_json_is_400_saying_where(gateway: Gateway, key: str) -> None:
    r = httpx.post(
        gateway.v1 + "/chat/completions",
        content=b'{"model": "test/echo", "messages": [}',
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        timeout=30,
    )
    error = assert_openai_error(r, 400)
    assert "JSON" in error["message"]
    assert "column" in error["message"] or "character" in error["message"]


def test_body_over_the_limit_is_413(gateway: Gateway, key: str) -> None:
    big = [{"role": "user", "content": "x" * 70_000}]
    error = assert_openai_error(raw_post(gateway, key, {"model": "test/echo", "messages": big}), 413)
    assert "65536" in error["message"]


def test_image_to_a_non_vision_model_is_400_naming_vision_models(gateway: Gateway, key: str) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    r = raw_post(gateway, key, {"model": "test/echo", "messages": [{"role": "user", "content": content}]})
    error = assert_openai_error(r, 400)
    assert "test/vision" in error["message"] and "test/claude" in error["message"]


def test_image_to_a_vision_model_is_answered(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="test/vision",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content


def test_concurrent_streams_with_the_async_clients(gateway: Gateway, key: str) -> None:
    """Eight streams at once over the async SDKs, half in each dialect: each gets a whole
    answer of its own."""

    async def main() -> tuple[list[str], list[str]]:
        async with (
            openai.AsyncOpenAI(base_url=gateway.v1, api_key=key, max_retries=0) as oai,
            anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0) as ant,
        ):

            async def one_openai(i: int) -> str:
                stream = await oai.chat.completions.create(
                    model="test/echo", messages=[{"role": "user", "content": f"Question {i}"}], stream=True
                )
                ids, parts, finishes = set(), [], []
                async for chunk in stream:
                    ids.add(chunk.id)
                    for choice in chunk.choices:
                        parts.append(choice.delta.content or "")
                        if choice.finish_reason:
                            finishes.append(choice.finish_reason)
                assert len(ids) == 1 and finishes == ["stop"] and "".join(parts)
                return ids.pop()

            async def one_anthropic(i: int) -> str:
                async with ant.messages.stream(
                    model="test/claude", max_tokens=64, messages=[{"role": "user", "content": f"Question {i}"}]
                ) as stream:
                    message = await stream.get_final_message()
                assert message.stop_reason == "end_turn" and message.content
                return message.id

            ids = await asyncio.gather(*(one_openai(i) for i in range(4)), *(one_anthropic(i) for i in range(4)))
            return list(ids[:4]), list(ids[4:])

    openai_ids, anthropic_ids = asyncio.run(main())
    assert len(set(openai_ids)) == 4 and len(set(anthropic_ids)) == 4

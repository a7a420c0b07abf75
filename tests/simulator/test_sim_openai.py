"""OpenAI Chat Completions and Models, through the official SDK and on the raw wire."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import pytest

from creditgate.simulator.tokens import count_tokens, openai_prompt_tokens

from .sim_support import BEARER, sse_events

USER = [{"role": "user", "content": "Tell me about rivers"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
Client = Callable[..., openai.AsyncOpenAI]


async def test_plain_completion_counts_are_reproducible(oai: Client) -> None:
    result = await oai().chat.completions.create(model="sim-small", messages=USER)  # type: ignore[arg-type]
    choice = result.choices[0]
    assert choice.message.content and choice.message.content.startswith("Simulated reply:")
    assert choice.finish_reason == "stop"
    assert result.model == "sim-small"
    assert result.usage is not None
    assert result.usage.completion_tokens == count_tokens(choice.message.content) == 12
    assert result.usage.prompt_tokens == openai_prompt_tokens({"messages": USER})
    assert result.usage.total_tokens == result.usage.prompt_tokens + 12


async def test_stream_with_usage_has_one_token_per_chunk(oai: Client) -> None:
    stream = await oai("tokens=5").chat.completions.create(
        model="m",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = [c async for c in stream]
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) == 5
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5 == count_tokens("".join(contents))
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"


async def test_stream_without_include_usage_has_no_usage_chunk(oai: Client) -> None:
    stream = await oai().chat.completions.create(model="m", messages=USER, stream=True)  # type: ignore[arg-type]
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_n_choices_differ_and_usage_sums_them(oai: Client) -> None:
    result = await oai("tokens=6").chat.completions.create(model="m", messages=USER, n=2)  # type: ignore[arg-type]
    texts = [c.message.content for c in result.choices]
    assert [c.index for c in result.choices] == [0, 1]
    assert texts[0] != texts[1]
    assert result.usage is not None and result.usage.completion_tokens == 12


async def test_max_tokens_truncates_with_length(oai: Client) -> None:
    result = await oai().chat.completions.create(model="m", messages=USER, max_tokens=4)  # type: ignore[arg-type]
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 4
    assert count_tokens(result.choices[0].message.content or "") == 4


async def test_stop_sequence_cuts_before_the_match(oai: Client) -> None:
    result = await oai().chat.completions.create(model="m", messages=USER, stop=[":"])  # type: ignore[arg-type]
    assert result.choices[0].message.content == "Simulated reply"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.completion_tokens == 2


async def test_json_object_and_json_schema_modes(oai: Client) -> None:
    client = oai("tokens=30")
    plain = await client.chat.completions.create(
        model="m",
        messages=USER,
        response_format={"type": "json_object"},  # type: ignore[arg-type]
    )
    assert isinstance(json.loads(plain.choices[0].message.content or ""), dict)
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
        "required": ["title", "year"],
    }
    typed = await client.chat.completions.create(
        model="m",
        messages=USER,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "movie", "schema": schema}},
    )
    movie = json.loads(typed.choices[0].message.content or "")
    assert isinstance(movie["title"], str) and isinstance(movie["year"], int)


async def test_required_tool_call(oai: Client) -> None:
    result = await oai().chat.completions.create(
        model="m",
        messages=USER,
        tools=[WEATHER],
        tool_choice="required",  # type: ignore[arg-type, list-item]
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.function.name == "get_weather"  # type: ignore[union-attr]
    args = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert isinstance(args["city"], str) and isinstance(args["days"], int)
    assert result.usage is not None
    assert result.usage.completion_tokens == count_tokens("get_weather") + count_tokens(call.function.arguments)  # type: ignore[union-attr]


async def test_auto_tool_choice_calls_only_when_mentioned_and_not_after_a_result(oai: Client) -> None:
    client = oai()
    mentioned = [{"role": "user", "content": "please use get_weather for Paris"}]
    called = await client.chat.completions.create(model="m", messages=mentioned, tools=[WEATHER])  # type: ignore
    assert called.choices[0].finish_reason == "tool_calls"
    unrelated = await client.chat.completions.create(model="m", messages=USER, tools=[WEATHER])  # type: ignore
    assert unrelated.choices[0].finish_reason == "stop"
    call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
    followup = [
        *mentioned,
        called.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C"},
    ]
    answered = await client.chat.completions.create(model="m", messages=followup, tools=[WEATHER])  # type: ignore
    assert answered.choices[0].finish_reason == "stop"


async def test_streamed_tool_call_is_assembled_by_the_sdk(oai: Client) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    async with oai().chat.completions.stream(
        model="m",
        messages=USER,
        tools=[WEATHER],
        tool_choice=named,  # type: ignore[arg-type, list-item]
    ) as stream:
        final = await stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert final.choices[0].finish_reason == "tool_calls"
    assert set(json.loads(call.function.arguments)) == {"city", "days"}


async def test_stream_payloads_match_the_spec(
    sim: Any, http: aiohttp.ClientSession, schema_errors: Callable[[Any, str], list[str]]
) -> None:
    body = {
        "model": "m",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [WEATHER],
        "n": 2,
    }
    async with http.post(sim.url + "/x/tokens=3/v1/chat/completions", json=body, headers=BEARER) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = await sse_events(response)
    assert events[-1] == (None, "[DONE]")
    chunks = [data for _, data in events[:-1]]
    for chunk in chunks:
        assert schema_errors(chunk, "openai:CreateChatCompletionStreamResponse") == []
        assert chunk["id"] == chunks[0]["id"] and chunk["system_fingerprint"]
    assert {c["choices"][0]["index"] for c in chunks if c["choices"]} == {0, 1}

    tool_body = {**body, "n": 1, "tool_choice": "required"}
    async with http.post(sim.url + "/v1/chat/completions", json=tool_body, headers=BEARER) as response:
        chunks = [data for _, data in (await sse_events(response))[:-1]]
    fragments = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
    ]
    assert fragments[0]["id"].startswith("call_") and fragments[0]["function"] == {
        "name": "get_weather",
        "arguments": "",
    }
    assert len(fragments) >= 3 and all("id" not in f and f["index"] == 0 for f in fragments[1:])
    for chunk in chunks:
        assert schema_errors(chunk, "openai:CreateChatCompletionStreamResponse") == []


async def test_response_matches_the_spec(
    sim: Any, http: aiohttp.ClientSession, schema_errors: Callable[[Any, str], list[str]]
) -> None:
    for extra in ({}, {"tools": [WEATHER], "tool_choice": "required"}):
        body = {"model": "m", "messages": USER, **extra}
        async with http.post(sim.url + "/v1/chat/completions", json=body, headers=BEARER) as response:
            payload = await response.json()
            assert response.headers["x-request-id"]
        assert schema_errors(payload, "openai:CreateChatCompletionResponse") == []
        message = payload["choices"][0]
        assert message["logprobs"] is None and message["message"]["refusal"] is None


async def test_models_are_labelled_as_simulated(oai: Client) -> None:
    client = oai()
    models = [m async for m in client.models.list()]
    assert models and all(m.owned_by == "creditgate-simulator" for m in models)
    one = await client.models.retrieve("anything-you-like")
    assert one.id == "anything-you-like" and one.owned_by == "creditgate-simulator"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
    ],
)
async def test_bad_requests_name_the_field(
    sim: Any, http: aiohttp.ClientSession, body: dict[str, Any], param: str
) -> None:
    async with http.post(sim.url + "/v1/chat/completions", json=body, headers=BEARER) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["param"] == param and param in error["message"]


async def test_sdk_sees_bad_request(oai: Client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oai().chat.completions.create(model="m", messages=USER, n=0)  # type: ignore[arg-type]
    assert caught.value.param == "n"


async def test_bad_json_and_missing_key(sim: Any, http: aiohttp.ClientSession) -> None:
    async with http.post(sim.url + "/v1/chat/completions", data=b"{nope", headers=BEARER) as response:
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "invalid_request_error"
    async with http.post(sim.url + "/v1/chat/completions", json={"model": "m", "messages": USER}) as response:
        assert response.status == 401
        error = (await response.json())["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_api_key"

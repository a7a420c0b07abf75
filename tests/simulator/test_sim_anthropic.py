"""Anthropic Messages, through the official SDK and on the raw wire."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import anthropic

from creditgate.simulator.tokens import anthropic_prompt_tokens, count_tokens

from .sim_support import sse_events

USER: list[Any] = [{"role": "user", "content": "Tell me about glaciers"}]
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
Client = Callable[..., anthropic.AsyncAnthropic]
HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}


async def test_plain_message_counts_are_reproducible(claude: Client) -> None:
    body = {"model": "sim-claude", "max_tokens": 100, "system": "Be brief.", "messages": USER}
    message = await claude().messages.create(**body)
    assert message.content[0].type == "text" and message.content[0].text.startswith("Simulated reply:")
    assert message.stop_reason == "end_turn" and message.model == "sim-claude"
    assert message.usage.output_tokens == count_tokens(message.content[0].text) == 12
    assert message.usage.input_tokens == anthropic_prompt_tokens(body)
    assert message._request_id


async def test_max_tokens_and_stop_sequences(claude: Client) -> None:
    client = claude()
    short = await client.messages.create(model="c", max_tokens=3, messages=USER)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3
    stopped = await client.messages.create(model="c", max_tokens=50, messages=USER, stop_sequences=[" reply"])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == " reply"
    assert stopped.content[0].text == "Simulated"  # type: ignore[union-attr]


async def test_max_tokens_is_required(sim: Any, http: aiohttp.ClientSession) -> None:
    async with http.post(sim.url + "/v1/messages", json={"model": "c", "messages": USER}, headers=HEADERS) as r:
        assert r.status == 400
        body = await r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


async def test_missing_key_is_an_authentication_error(sim: Any, http: aiohttp.ClientSession) -> None:
    body = {"model": "c", "max_tokens": 5, "messages": USER}
    async with http.post(sim.url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}) as r:
        assert r.status == 401
        assert (await r.json())["error"]["type"] == "authentication_error"
    bearer = {"Authorization": "Bearer test-key", "anthropic-version": "2026-10-21"}
    async with http.post(sim.url + "/v1/messages", json=body, headers=bearer) as r:
        assert r.status == 200


async def test_tool_use_forced_auto_and_after_a_result(claude: Client) -> None:
    client = claude()
    forced = await client.messages.create(
        model="c", max_tokens=100, messages=USER, tools=[WEATHER], tool_choice={"type": "any"}
    )
    block = forced.content[0]
    assert forced.stop_reason == "tool_use" and block.type == "tool_use"
    assert block.id.startswith("toolu_") and isinstance(block.input["city"], str)  # type: ignore[index]
    unrelated = await client.messages.create(model="c", max_tokens=100, messages=USER, tools=[WEATHER])
    assert unrelated.stop_reason == "end_turn"
    asked = [{"role": "user", "content": "what does get_weather say for Oslo?"}]
    called = await client.messages.create(model="c", max_tokens=100, messages=asked, tools=[WEATHER])
    assert called.stop_reason == "tool_use"
    result = [
        *asked,
        {"role": "assistant", "content": [b.model_dump() for b in called.content]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": called.content[0].id,  # type: ignore
                    "content": "-3C",
                }
            ],
        },
    ]
    answered = await client.messages.create(model="c", max_tokens=100, messages=result, tools=[WEATHER])
    assert answered.stop_reason == "end_turn"


async def test_images_are_accepted(claude: Client) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR" * 40}}
    linked = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    content = [image, linked, {"type": "text", "text": "describe"}]
    body = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": content}]}
    message = await claude().messages.create(**body)
    assert message.usage.input_tokens == anthropic_prompt_tokens(body) == 3 + 4 + 85 + 27 + 1


async def test_prompt_cache_writes_then_reads(claude: Client) -> None:
    system = [
        {
            "type": "text",
            "text": "A long shared context about fjords " * 5,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    client = claude()
    first = await client.messages.create(model="cache-test", max_tokens=5, system=system, messages=USER)
    second = await client.messages.create(
        model="cache-test",
        max_tokens=5,
        system=system,
        messages=[{"role": "user", "content": "Another question"}],
    )
    written = first.usage.cache_creation_input_tokens
    assert written and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == written and second.usage.cache_creation_input_tokens == 0
    total = anthropic_prompt_tokens({"system": system, "messages": USER})
    assert first.usage.input_tokens + written == total


async def test_stream_helper_assembles_text_and_tool_input(claude: Client) -> None:
    client = claude("tokens=7")
    async with client.messages.stream(model="c", max_tokens=100, messages=USER) as stream:
        texts = [t async for t in stream.text_stream]
        message = await stream.get_final_message()
    assert len(texts) == 7 and message.usage.output_tokens == 7
    async with client.messages.stream(
        model="c",
        max_tokens=100,
        messages=USER,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason == "tool_use"
    assert message.content[0].input == {"city": "simulated city"}  # type: ignore[union-attr]


async def test_stream_event_sequence_matches_the_spec(
    sim: Any, http: aiohttp.ClientSession, schema_errors: Callable[[Any, str], list[str]]
) -> None:
    for extra in ({}, {"tools": [WEATHER], "tool_choice": {"type": "any"}}):
        body = {"model": "c", "max_tokens": 50, "messages": USER, "stream": True, **extra}
        async with http.post(sim.url + "/x/tokens=3/v1/messages", json=body, headers=HEADERS) as response:
            events = await sse_events(response)
        names = [name for name, _ in events]
        deltas = names.count("content_block_delta")
        assert names == [
            "message_start",
            "content_block_start",
            "ping",
            *["content_block_delta"] * deltas,
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        assert deltas >= (2 if extra else 3)
        for name, data in events:
            assert data["type"] == name
            if name != "ping":  # ping is a keep-alive, outside the SDK's event union
                assert schema_errors(data, "anthropic.RawMessageStreamEvent") == []


async def test_message_matches_the_schema(
    sim: Any, http: aiohttp.ClientSession, schema_errors: Callable[[Any, str], list[str]]
) -> None:
    for extra in ({}, {"tools": [WEATHER], "tool_choice": {"type": "any"}}):
        body = {"model": "c", "max_tokens": 50, "messages": USER, **extra}
        async with http.post(sim.url + "/v1/messages", json=body, headers=HEADERS) as response:
            assert response.headers["request-id"]
            payload = await response.json()
        assert schema_errors(payload, "anthropic.Message") == []


async def test_models_list_in_anthropic_shape(claude: Client) -> None:
    models = [m async for m in claude().models.list()]
    assert models and all("simulated" in m.display_name for m in models)

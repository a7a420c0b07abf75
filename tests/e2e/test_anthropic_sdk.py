"""The Anthropic Messages ingress through real HTTP with the official `anthropic` SDK (and
httpx where the raw bytes matter), against models on OpenAI, Anthropic and Gemini upstreams."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from anthropic.types import ToolParam
from tests.e2e.conftest import Gateway
from tests.e2e.sdk_support import SchemaErrors, Upstream, sse_events, upstream_body

MODELS = ["test/echo", "test/claude", "test/gemini"]
VISION_MODELS = ["test/vision", "test/claude", "test/gemini"]
# Where each model's requests land on the simulator, and the schema they must satisfy there.
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME: ToolParam = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
}
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]
# A 1x1 PNG.
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.account(credits="1000")[1]


@pytest.fixture(scope="module")
def client(gateway: Gateway, key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=30) as c:
        yield c


def raw_messages(gateway: Gateway, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/messages",
        json=body,
        headers={"anthropic-version": "2023-06-01", **headers},
        timeout=30,
    )


def stream_events(gateway: Gateway, key: str, body: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    with httpx.stream(
        "POST",
        gateway.url + "/v1/messages",
        json={**body, "stream": True},
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=30,
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read()
    assert b"[DONE]" not in raw
    return [(name, orjson.loads(data)) for name, data in sse_events(raw)]


def check_event_stream(events: list[tuple[str | None, dict[str, Any]]], schema_errors: SchemaErrors) -> None:
    """Every event is named, its data's type matches the name and it is a valid stream event;
    the stream starts with message_start and ends with message_stop."""
    assert events
    for name, data in events:
        assert name == data["type"], (name, data)
        if name != "ping":
            assert schema_errors(data, "anthropic.RawMessageStreamEvent") == [], data
    assert events[0][0] == "message_start"
    assert events[-1][0] == "message_stop"


# --- messages.create ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_create_plain(client: anthropic.Anthropic, model: str, upstream: Upstream, schema_errors: SchemaErrors) -> None:
    raw = client.messages.with_raw_response.create(model=model, max_tokens=64, messages=HELLO)
    assert schema_errors(json.loads(raw.http_response.content), "anthropic.Message") == []
    message = raw.parse()
    assert message._request_id and message._request_id == raw.headers["x-request-id"]
    assert message.type == "message" and message.role == "assistant"
    assert message.model == model
    assert message.content and message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    upstream_body(upstream, model, schema_errors)


@pytest.mark.parametrize("model", MODELS)
def test_create_with_system_prompt(
    client: anthropic.Anthropic, model: str, upstream: Upstream, schema_errors: SchemaErrors
) -> None:
    message = client.messages.create(model=model, max_tokens=64, system="Answer in French.", messages=HELLO)
    assert message.content[0].type == "text" and message.content[0].text
    body = upstream_body(upstream, model, schema_errors)
    if model == "test/echo":
        assert body["messages"][0] == {"role": "system", "content": "Answer in French."}
    elif model == "test/claude":
        assert body["system"] in ("Answer in French.", [{"type": "text", "text": "Answer in French."}])
    else:
        assert body["systemInstruction"]["parts"] == [{"text": "Answer in French."}]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "get_time"}])
def test_create_with_tools_gives_a_tool_use_block(
    client: anthropic.Anthropic, model: str, choice: Any, upstream: Upstream, schema_errors: SchemaErrors
) -> None:
    raw = client.messages.with_raw_response.create(
        model=model,
        max_tokens=128,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER, TIME],
        tool_choice=choice,
    )
    assert schema_errors(json.loads(raw.http_response.content), "anthropic.Message") == []
    message = raw.parse()
    assert message.stop_reason == "tool_use"
    uses = [b for b in message.content if b.type == "tool_use"]
    assert len(uses) == 1
    expected = "get_weather" if choice["type"] == "any" else "get_time"
    assert uses[0].name == expected and uses[0].id
    assert isinstance(uses[0].input, dict) and ("city" if expected == "get_weather" else "zone") in uses[0].input
    upstream_body(upstream, model, schema_errors)


@pytest.mark.parametrize("model", MODELS)
def test_tool_result_round_trip(
    client: anthropic.Anthropic, model: str, upstream: Upstream, schema_errors: SchemaErrors
) -> None:
    first = client.messages.create(
        model=model,
        max_tokens=128,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER],
        tool_choice={"type": "any"},
    )
    use = next(b for b in first.content if b.type == "tool_use")
    history: list[Any] = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C"}]},
    ]
    second = client.messages.create(model=model, max_tokens=128, tools=[WEATHER], messages=history)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and second.content[0].text
    upstream_body(upstream, model, schema_errors)


@pytest.mark.parametrize("model", VISION_MODELS)
def test_create_with_a_base64_image(
    client: anthropic.Anthropic, model: str, upstream: Upstream, schema_errors: SchemaErrors
) -> None:
    message = client.messages.create(
        model=model,
        max_tokens=64,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
                    {"type": "text", "text": "What is this?"},
                ],
            }
        ],
    )
    assert message.content[0].type == "text" and message.content[0].text
    body = upstream_body(upstream, model, schema_errors)
    sent = json.dumps(body)
    if model == "test/vision":
        assert f"data:image/png;base64,{PIXEL}" in sent
    elif model == "test/claude":
        image = body["messages"][0]["content"][0]
        assert image == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}}
    else:
        assert {"inlineData": {"mimeType": "image/png", "data": PIXEL}} in body["contents"][0]["parts"]


@pytest.mark.parametrize("model", VISION_MODELS)
def test_create_with_an_image_url(
    client: anthropic.Anthropic, model: str, upstream: Upstream, schema_errors: SchemaErrors
) -> None:
    url = "https://example.com/cat.png"
    message = client.messages.create(
        model=model,
        max_tokens=64,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": url}},
                    {"type": "text", "text": "What is this?"},
                ],
            }
        ],
    )
    assert message.content[0].type == "text" and message.content[0].text
    assert url in json.dumps(upstream_body(upstream, model, schema_errors))


def test_image_to_a_non_vision_model_is_refused(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model="test/echo",
            max_tokens=64,
            messages=[
                {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://a/b"}}]}
            ],
        )
    assert "test/vision" in str(info.value)


# --- messages.stream ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_stream_text(client: anthropic.Anthropic, model: str) -> None:
    with client.messages.stream(model=model, max_tokens=64, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_stream_events_on_the_wire(
    gateway: Gateway, key: str, model: str, upstream: Upstream, schema_errors: SchemaErrors
) -> None:
    events = stream_events(gateway, key, {"model": model, "max_tokens": 64, "messages": HELLO})
    check_event_stream(events, schema_errors)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text
    delta = next(d for n, d in events if n == "message_delta")
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] > 0
    upstream_body(upstream, model, schema_errors)


@pytest.mark.parametrize("model", MODELS)
def test_stream_tool_input_arrives_as_input_json_delta(
    gateway: Gateway, key: str, model: str, upstream: Upstream, schema_errors: SchemaErrors
) -> None:
    events = stream_events(
        gateway,
        key,
        {
            "model": model,
            "max_tokens": 128,
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [WEATHER],
            "tool_choice": {"type": "tool", "name": "get_weather"},
        },
    )
    check_event_stream(events, schema_errors)
    starts = {d["index"]: d["content_block"] for n, d in events if n == "content_block_start"}
    tool_blocks = [i for i, b in starts.items() if b["type"] == "tool_use"]
    assert len(tool_blocks) == 1
    index = tool_blocks[0]
    assert starts[index]["name"] == "get_weather" and starts[index]["id"]
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["index"] == index and d["delta"]["type"] == "input_json_delta"
    )
    assert "city" in json.loads(partial)
    delta = next(d for n, d in events if n == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use"
    upstream_body(upstream, model, schema_errors)


@pytest.mark.parametrize("model", MODELS)
def test_stream_helper_assembles_tool_input(client: anthropic.Anthropic, model: str) -> None:
    with client.messages.stream(
        model=model,
        max_tokens=128,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "any"},
    ) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather"
    assert isinstance(uses[0].input, dict) and "city" in uses[0].input
    assert final.stop_reason == "tool_use"


# --- auth and errors ---------------------------------------------------------------------------


def test_beta_messages(client: anthropic.Anthropic) -> None:
    """The SDK's beta namespace posts to /v1/messages?beta=true with an anthropic-beta header."""
    message = client.beta.messages.create(
        model="test/claude", max_tokens=32, messages=HELLO, betas=["prompt-caching-2024-07-31"]
    )
    assert message.content[0].type == "text" and message.content[0].text
    with client.beta.messages.stream(model="test/gemini", max_tokens=32, messages=HELLO) as stream:
        assert "".join(stream.text_stream)


def test_key_as_x_api_key(gateway: Gateway, key: str) -> None:
    r = raw_messages(gateway, {"x-api-key": key}, {"model": "test/echo", "max_tokens": 32, "messages": HELLO})
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "message"


def test_key_as_x_api_key_through_the_sdk(gateway: Gateway, key: str) -> None:
    with anthropic.Anthropic(
        base_url=gateway.url, api_key=None, default_headers={"x-api-key": key}, max_retries=0
    ) as c:
        assert c.messages.create(model="test/echo", max_tokens=32, messages=HELLO).content


def test_key_as_bearer(gateway: Gateway, key: str) -> None:
    r = raw_messages(
        gateway, {"authorization": f"Bearer {key}"}, {"model": "test/echo", "max_tokens": 32, "messages": HELLO}
    )
    assert r.status_code == 200, r.text


def test_unknown_anthropic_version_is_accepted(gateway: Gateway, key: str) -> None:
    r = httpx.post(
        gateway.url + "/v1/messages",
        json={"model": "test/echo", "max_tokens": 32, "messages": HELLO},
        headers={"x-api-key": key, "anthropic-version": "2031-01-01"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "sk-wrong"}, {"authorization": "Bearer sk-wrong"}])
def test_missing_or_wrong_key_is_401_in_the_anthropic_envelope(
    gateway: Gateway, headers: dict[str, str], schema_errors: SchemaErrors
) -> None:
    r = raw_messages(gateway, headers, {"model": "test/echo", "max_tokens": 32, "messages": HELLO})
    assert r.status_code == 401
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["error"]["message"]
    assert schema_errors(body, "anthropic.ErrorResponse") == []


def test_wrong_key_raises_authentication_error_with_request_id(gateway: Gateway) -> None:
    with (
        anthropic.Anthropic(base_url=gateway.url, api_key="sk-wrong", max_retries=0) as c,
        pytest.raises(anthropic.AuthenticationError) as info,
    ):
        c.messages.create(model="test/echo", max_tokens=32, messages=HELLO)
    assert info.value.request_id, "the SDK found no request-id header"


def test_unknown_model_is_404_not_found_error(client: anthropic.Anthropic, schema_errors: SchemaErrors) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="test/nope", max_tokens=32, messages=HELLO)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "test/nope" in body["error"]["message"]
    assert schema_errors(body, "anthropic.ErrorResponse") == []


def test_missing_max_tokens_is_400(gateway: Gateway, key: str) -> None:
    r = raw_messages(gateway, {"x-api-key": key}, {"model": "test/echo", "messages": HELLO})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in r.json()["error"]["message"]


# --- models -------------------------------------------------------------------------------------


def test_models_list_in_the_anthropic_sdk(client: anthropic.Anthropic) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"test/echo", "test/claude", "test/gemini"} <= set(models)
    claude = models["test/claude"]
    assert claude.type == "model"
    assert claude.display_name
    assert claude.created_at.year >= 2024


def test_models_retrieve_in_the_anthropic_sdk(client: anthropic.Anthropic) -> None:
    model = client.models.retrieve("test/claude")
    assert model.id == "test/claude" and model.type == "model" and model.display_name
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("test/nope")

"""The Anthropic Messages ingress dialect: parsing, rendering, SSE encoding and errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from tests.providers.conformance import Recording, deployment, sse_bytes
from tests.providers.conformance_cases import a_stream, a_text, a_tool, g_response, g_stream, g_usage
from tests.schemas import PROTOCOLS

from creditgate.canonical import JSON
from creditgate.dialects.anthropic import AnthropicDialect
from creditgate.errors import (
    AllUpstreamsFailed,
    BadRequest,
    Forbidden,
    GatewayError,
    NoDeployment,
    NotFound,
    PayloadTooLarge,
    PaymentRequired,
    RateLimited,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from creditgate.providers.anthropic import AnthropicProvider
from creditgate.providers.gemini import GeminiProvider
from creditgate.sse import SSEParser

SchemaErrors = Any
dialect = AnthropicDialect()


def minimal(**fields: Any) -> JSON:
    return {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **fields}


# -- parse ---------------------------------------------------------------------------------


def test_sample_request_becomes_an_openai_body(schema_errors: SchemaErrors) -> None:
    body = orjson.loads((PROTOCOLS / "samples" / "anthropic_request.json").read_bytes())
    assert schema_errors(body, "anthropic.MessageCreateParams") == []
    request = dialect.parse(body)
    assert schema_errors(request.body, "openai:CreateChatCompletionRequest") == []
    messages = request.body["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
    }
    assert messages[2]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert messages[3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "18C sunny"}
    assert request.body["tools"][0]["function"]["parameters"]["required"] == ["city"]
    assert request.body["tool_choice"] == "auto"
    assert request.body["stop"] == ["\n\nHuman:"]
    assert request.body["temperature"] == 0.2
    assert (request.stream, request.include_usage, request.has_images) == (True, True, True)
    assert (request.max_output_tokens, request.body["max_tokens"]) == (1024, 1024)


def test_tool_results_come_before_the_text_of_their_turn() -> None:
    body = minimal(
        messages=[
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "a", "input": {}},
                    {"type": "tool_use", "id": "t2", "name": "b", "input": {"x": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and then?"},
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "A"}]},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "B"},
                ],
            },
        ]
    )
    messages = dialect.parse(body).body["messages"]
    assert [(m["role"], m.get("tool_call_id")) for m in messages[2:]] == [
        ("tool", "t1"),
        ("tool", "t2"),
        ("user", None),
    ]
    assert messages[1]["content"] is None
    assert messages[4]["content"] == "and then?"


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
        ({"type": "tool", "name": "w"}, {"type": "function", "function": {"name": "w"}}, None),
        ({"type": "none"}, "none", None),
    ],
)
def test_tool_choice(choice: JSON, expected: Any, parallel: bool | None) -> None:
    tools = [{"name": "w", "input_schema": {"type": "object"}}]
    body = dialect.parse(minimal(tools=tools, tool_choice=choice)).body
    assert body["tool_choice"] == expected
    assert body.get("parallel_tool_calls") == parallel


def test_cache_control_asks_for_caching_and_stays_on_the_part() -> None:
    system = [{"type": "text", "text": "Rules", "cache_control": {"type": "ephemeral"}}]
    request = dialect.parse(minimal(system=system))
    assert request.cache_prompt is True
    assert request.body["messages"][0]["content"] == [
        {"type": "text", "text": "Rules", "cache_control": {"type": "ephemeral"}}
    ]
    assert dialect.parse(minimal()).cache_prompt is False


def test_metadata_sampling_and_structured_output() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = dialect.parse(
        minimal(
            metadata={"user_id": "u1"},
            top_p=0.5,
            top_k=20,
            thinking={"type": "enabled", "budget_tokens": 2000},
            output_config={"format": {"type": "json_schema", "schema": schema}},
        )
    ).body
    assert (body["user"], body["top_p"], body["top_k"]) == ("u1", 0.5, 20)
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert "thinking" not in body


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "c", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        (minimal(max_tokens=0), "max_tokens"),
        (minimal(model=None), "model"),
        (minimal(messages="hi"), "messages"),
        (minimal(messages=[]), "messages"),
        (minimal(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
        (
            minimal(messages=[{"role": "user", "content": [{"type": "text", "text": " "}]}]),
            "messages.0.content.0.text",
        ),
        (minimal(messages=[{"role": "user", "content": ""}]), "messages.0.content"),
        (minimal(temperature=1.5), "temperature"),
        (minimal(stream="yes"), "stream"),
        (minimal(tools=[{"name": "w"}]), "tools.0.input_schema"),
        (minimal(tool_choice={"type": "sometimes"}), "tool_choice"),
    ],
)
def test_bad_input_names_the_field(body: JSON, param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        dialect.parse(body)
    assert caught.value.param == param
    assert param.split(".")[0] in caught.value.message


# -- render --------------------------------------------------------------------------------


def completion(finish: str = "stop", **message: Any) -> JSON:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "catalog/model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None, **message},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 130,
            "completion_tokens": 9,
            "total_tokens": 139,
            "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
            "cost": "0.0125",
        },
    }


def test_render_text_and_tool_use(schema_errors: SchemaErrors) -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"city":"Paris"}'}}]
    message = dialect.render(completion("tool_calls", content="Checking.", tool_calls=calls))
    assert schema_errors(message, "anthropic.Message") == []
    assert message["id"] == "msg_abc"
    assert message["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Paris"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 10,
        "output_tokens": 9,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 100,
        "cost": "0.0125",
    }


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("function_call", "tool_use"),
    ],
)
def test_render_stop_reasons(finish: str, stop_reason: str, schema_errors: SchemaErrors) -> None:
    message = dialect.render(completion(finish, content="x"))
    assert message["stop_reason"] == stop_reason
    assert schema_errors(message, "anthropic.Message") == []


# -- stream encoding -----------------------------------------------------------------------


def events_of(raw: bytes, schema_errors: SchemaErrors) -> list[JSON]:
    """Parses our SSE as the SDK would and checks the rules it relies on."""
    assert b"[DONE]" not in raw
    events = SSEParser().feed(raw)
    payloads = []
    for event in events:
        payload = orjson.loads(event.data)
        assert event.event == payload["type"], "every event needs an event: line matching its type"
        if payload["type"] not in ("error", "ping"):  # the SDK ignores ping; error is checked apart
            assert schema_errors(payload, "anthropic.RawMessageStreamEvent") == []
        payloads.append(payload)
    return payloads


def accumulate(payloads: list[JSON]) -> JSON:
    """Rebuilds the final Message the way the SDK's stream helper does, enforcing its order."""
    assert payloads[0]["type"] == "message_start"
    message = payloads[0]["message"]
    open_blocks: set[int] = set()
    json_bufs: dict[int, str] = {}
    for p in payloads[1:]:
        if p["type"] == "content_block_start":
            assert p["index"] == len(message["content"])
            message["content"].append(dict(p["content_block"]))
            open_blocks.add(p["index"])
        elif p["type"] == "content_block_delta":
            assert p["index"] in open_blocks, "delta before its content_block_start"
            block, delta = message["content"][p["index"]], p["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                json_bufs[p["index"]] = json_bufs.get(p["index"], "") + delta["partial_json"]
        elif p["type"] == "content_block_stop":
            open_blocks.remove(p["index"])
            if p["index"] in json_bufs:
                message["content"][p["index"]]["input"] = orjson.loads(json_bufs[p["index"]])
        elif p["type"] == "message_delta":
            message.update(p["delta"])
            message["usage"].update(p["usage"])
    assert not open_blocks and payloads[-1]["type"] == "message_stop"
    return dict(message)


def relay(recording: Recording, provider: Any, schema_errors: SchemaErrors) -> JSON:
    """An upstream stream through a provider's decoder and this dialect's encoder."""
    request = dialect.parse(minimal(stream=True))
    decoder = provider.stream_decoder(request, deployment(provider.type))
    encoder = dialect.encoder(request)
    chunks: list[JSON] = []
    for event in SSEParser().feed(sse_bytes(recording.events)):
        chunks.extend(decoder.feed(event.event, event.data))
    chunks.extend(decoder.finish())
    raw = b"".join(encoder.chunk(c) for c in chunks if c["choices"])
    usage_chunk = [c for c in chunks if not c["choices"]][-1]
    raw += encoder.end({**usage_chunk, "usage": {**usage_chunk["usage"], "cost": "0.5"}})
    message = accumulate(events_of(raw, schema_errors))
    assert schema_errors(message, "anthropic.Message") == []
    return message


def test_anthropic_upstream_relays_to_an_equivalent_stream(schema_errors: SchemaErrors) -> None:
    upstream = a_stream(
        a_text(0, "Checking", " now."),
        a_tool(1, "toolu_1", "w", '{"city"', ': "Paris"}'),
        a_tool(2, "toolu_2", "w", '{"city": "Rome"}'),
        stop="tool_use",
        usage={"output_tokens": 30, "cache_read_input_tokens": 4},
    )
    message = relay(Recording(events=upstream), AnthropicProvider(), schema_errors)
    assert message["content"] == [
        {"type": "text", "text": "Checking now."},
        {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "w", "input": {"city": "Rome"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 10,
        "output_tokens": 30,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4,
        "cost": "0.5",
    }


def test_gemini_upstream_relays_to_an_anthropic_stream(schema_errors: SchemaErrors) -> None:
    upstream = g_stream(
        g_response([{"text": "Hi "}], finish=None),
        g_response([{"text": "there"}, {"functionCall": {"name": "w", "args": {"q": 1}}}], usage=g_usage(12, 7)),
    )
    message = relay(Recording(events=upstream), GeminiProvider(), schema_errors)
    assert [b["type"] for b in message["content"]] == ["text", "tool_use"]
    assert message["content"][0]["text"] == "Hi there"
    assert message["content"][1]["input"] == {"q": 1}
    assert (message["stop_reason"], message["usage"]["input_tokens"], message["usage"]["output_tokens"]) == (
        "tool_use",
        12,
        7,
    )


def test_empty_stream_still_has_a_well_formed_message(schema_errors: SchemaErrors) -> None:
    encoder = dialect.encoder(dialect.parse(minimal(stream=True)))
    usage = {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
    payloads = events_of(encoder.end({"id": "x", "model": "m", "choices": [], "usage": usage}), schema_errors)
    assert [p["type"] for p in payloads] == ["message_start", "ping", "message_delta", "message_stop"]
    assert payloads[2]["delta"]["stop_reason"] == "end_turn"


def test_error_in_stream(schema_errors: SchemaErrors) -> None:
    encoder = dialect.encoder(dialect.parse(minimal(stream=True)))
    chunk = {
        "id": "c",
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "He"}, "finish_reason": None}],
    }
    raw = encoder.chunk(chunk)
    raw += encoder.error(UpstreamError("Upstream error: Overloaded", upstream_status=529, kind="overloaded"), "req_1")
    payloads = events_of(raw, schema_errors)
    assert payloads[-1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Upstream error: Overloaded"},
        "request_id": "req_1",
    }


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "error_type"),
    [
        (BadRequest("bad"), "invalid_request_error"),
        (Unauthorized("who"), "authentication_error"),
        (PaymentRequired("top up"), "billing_error"),
        (Forbidden("no"), "permission_error"),
        (NotFound("none"), "not_found_error"),
        (PayloadTooLarge("big"), "request_too_large"),
        (RateLimited("slow", retry_after=3), "rate_limit_error"),
        (UpstreamError("busy", upstream_status=529, kind="overloaded"), "overloaded_error"),
        (UpstreamError("busy", upstream_status=503, kind="overloaded"), "overloaded_error"),
        (UpstreamError("gone", upstream_status=404, kind="not_found"), "not_found_error"),
        (NoDeployment("none up"), "overloaded_error"),
        (UpstreamTimeout("slow", phase="read"), "timeout_error"),
        (AllUpstreamsFailed("all failed"), "api_error"),
        (GatewayError("oops"), "api_error"),
    ],
)
def test_error_body(err: GatewayError, error_type: str, schema_errors: SchemaErrors) -> None:
    body = dialect.error_body(err, "req_9")
    if error_type != "request_too_large":  # documented (PROTOCOLS.md D.5) but missing from the SDK's union
        assert schema_errors(body, "anthropic.ErrorResponse") == []
    assert body == {
        "type": "error",
        "error": {"type": error_type, "message": err.message},
        "request_id": "req_9",
    }

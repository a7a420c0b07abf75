"""The Anthropic provider: conformance table plus the translation details only it has."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from tests.providers.conformance import Case, SchemaErrors, cases_for, check, deployment

from creditgate.canonical import JSON, ChatRequest
from creditgate.errors import BadRequest, UpstreamError
from creditgate.providers.anthropic import AnthropicProvider

provider = AnthropicProvider()
DEPLOYMENT = deployment("anthropic", "claude-up")


@pytest.mark.parametrize("case", cases_for("anthropic"))
def test_conformance(case: Case, schema_errors: SchemaErrors) -> None:
    check(provider, case, schema_errors)


def build(body: JSON, schema_errors: SchemaErrors | None = None, **fields: Any) -> JSON:
    request = ChatRequest(body={"model": "m", **body}, model="m", **fields)
    sent: JSON = orjson.loads(provider.build_request(request, DEPLOYMENT).body)
    if schema_errors is not None:
        assert schema_errors(sent, "anthropic.MessageCreateParams") == []
    return sent


def test_endpoint_headers_and_model() -> None:
    built = provider.build_request(
        ChatRequest(body={"messages": [{"role": "user", "content": "hi"}]}, model="m"), DEPLOYMENT
    )
    assert built.url == "https://upstream.example/v1/messages"
    assert built.headers["x-api-key"] == "secret-key"
    assert built.headers["anthropic-version"] == "2023-06-01"
    assert built.headers["content-type"] == "application/json"
    assert orjson.loads(built.body)["model"] == "claude-up"


def test_max_tokens_is_always_set(schema_errors: SchemaErrors) -> None:
    hi = [{"role": "user", "content": "hi"}]
    assert build({"messages": hi}, schema_errors)["max_tokens"] == 4096
    assert build({"messages": hi}, max_output_tokens=1000)["max_tokens"] == 1000
    assert build({"messages": hi, "max_tokens": 50}, max_output_tokens=1000)["max_tokens"] == 50
    assert build({"messages": hi, "max_completion_tokens": 70, "max_tokens": 50})["max_tokens"] == 70


def test_full_conversation_validates_and_maps_every_field(schema_errors: SchemaErrors) -> None:
    sent = build(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Weather?"}],
                },
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{bad"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "18C"}]},
            ],
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": "END",
            "user": "u-42",
            "tools": [{"type": "function", "function": {"name": "w"}}],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
        schema_errors,
        stream=True,
    )
    assert sent["system"] == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric."}]
    assert sent["messages"][0] == {"role": "user", "content": [{"type": "text", "text": "Weather?"}]}
    assert sent["messages"][1]["content"] == [{"type": "tool_use", "id": "call_1", "name": "w", "input": {}}]
    assert sent["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "call_1", "content": "18C"}]
    assert sent["temperature"] == 1.0
    assert sent["top_p"] == 0.9
    assert sent["stop_sequences"] == ["END"]
    assert sent["metadata"] == {"user_id": "u-42"}
    assert sent["tools"] == [{"name": "w", "input_schema": {"type": "object", "properties": {}}}]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert sent["stream"] is True


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "w"}}, {"type": "tool", "name": "w"}),
    ],
)
def test_tool_choice(choice: Any, expected: JSON) -> None:
    tools = [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]
    sent = build({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": choice})
    assert sent["tool_choice"] == expected


def test_cache_prompt_marks_system_and_last_user_message(schema_errors: SchemaErrors) -> None:
    messages = [
        {"role": "system", "content": "Long rules"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    sent = build({"messages": messages}, schema_errors, cache_prompt=True)
    assert sent["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert sent["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in sent["messages"][0]["content"][-1]
    plain = build({"messages": messages})
    assert "cache_control" not in orjson.dumps(plain).decode()


def test_cache_control_on_parts_passes_through(schema_errors: SchemaErrors) -> None:
    part = {"type": "text", "text": "big doc", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    sent = build({"messages": [{"role": "user", "content": [part]}]}, schema_errors)
    assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


def test_json_schema_forces_a_tool_and_the_answer_comes_back_as_text(schema_errors: SchemaErrors) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    sent = build(
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        },
        schema_errors,
    )
    assert sent["tools"][-1]["input_schema"] == schema
    reply = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "tool_use", "id": "t", "name": sent["tool_choice"]["name"], "input": {"a": 1}}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    completion = provider.parse_response(orjson.dumps(reply), DEPLOYMENT)
    choice = completion["choices"][0]
    assert orjson.loads(choice["message"]["content"]) == {"a": 1}
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"


def test_n_above_one_is_refused() -> None:
    with pytest.raises(BadRequest) as caught:
        build({"messages": [{"role": "user", "content": "x"}], "n": 2})
    assert caught.value.param == "n"


def test_sample_anthropic_message_parses(schema_errors: SchemaErrors) -> None:
    from tests.schemas import PROTOCOLS

    completion = provider.parse_response((PROTOCOLS / "samples" / "anthropic_message.json").read_bytes(), DEPLOYMENT)
    assert schema_errors(completion, "openai:CreateChatCompletionResponse") == []
    call = completion["choices"][0]["message"]["tool_calls"][0]
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert completion["usage"]["prompt_tokens"] == 472


def test_parse_error_keeps_status_and_hides_secrets() -> None:
    body = orjson.dumps(
        {"type": "error", "error": {"type": "authentication_error", "message": "bad key sk-ant-abcdefghijkl"}}
    )
    err = provider.parse_error(401, body, None)
    assert (err.upstream_status, err.kind, err.retryable) == (401, "authentication", False)
    assert "abcdefghijkl" not in err.message
    garbage = provider.parse_error(502, b"<html>bad gateway</html>", 1.5)
    assert (garbage.upstream_status, garbage.retryable, garbage.retry_after) == (502, True, 1.5)


def test_error_body_inside_a_2xx_is_an_error() -> None:
    with pytest.raises(UpstreamError):
        provider.parse_response(b'{"type":"error","error":{"type":"api_error","message":"x"}}', DEPLOYMENT)


def test_foreign_tool_ids_are_made_acceptable_on_both_sides(schema_errors: SchemaErrors) -> None:
    sent = build(
        {
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "functions.w:0",
                            "type": "function",
                            "function": {"name": "w", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "functions.w:0", "content": "ok"},
                {"role": "assistant", "content": "The answer is "},
            ]
        },
        schema_errors,
    )
    assert sent["messages"][1]["content"][0]["id"] == "functions_w_0"
    assert sent["messages"][2]["content"][0]["tool_use_id"] == "functions_w_0"
    assert sent["messages"][3]["content"][-1]["text"] == "The answer is", "a prefill may not end in whitespace"

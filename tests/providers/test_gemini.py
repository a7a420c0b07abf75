"""The Gemini provider: conformance table plus the translation details only it has."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from tests.providers.conformance import Case, SchemaErrors, cases_for, check, deployment

from creditgate.canonical import JSON, ChatRequest
from creditgate.errors import BadRequest
from creditgate.providers.gemini import GeminiProvider

provider = GeminiProvider()
DEPLOYMENT = deployment("gemini", "gemini-up")


@pytest.mark.parametrize("case", cases_for("gemini"))
def test_conformance(case: Case, schema_errors: SchemaErrors) -> None:
    check(provider, case, schema_errors)


def build(body: JSON, schema_errors: SchemaErrors | None = None, **fields: Any) -> JSON:
    request = ChatRequest(body={"model": "m", **body}, model="m", **fields)
    sent: JSON = orjson.loads(provider.build_request(request, DEPLOYMENT).body)
    if schema_errors is not None:
        assert schema_errors(sent, "gemini.GenerateContentRequest") == []
    return sent


def test_endpoints_and_key_header() -> None:
    hi = {"messages": [{"role": "user", "content": "hi"}]}
    plain = provider.build_request(ChatRequest(body=hi, model="m"), DEPLOYMENT)
    streamed = provider.build_request(ChatRequest(body=hi, model="m", stream=True), DEPLOYMENT)
    assert plain.url == "https://upstream.example/v1beta/models/gemini-up:generateContent"
    assert streamed.url == "https://upstream.example/v1beta/models/gemini-up:streamGenerateContent?alt=sse"
    assert plain.headers["x-goog-api-key"] == "secret-key"
    assert "secret-key" not in plain.url


def test_generation_config_and_system(schema_errors: SchemaErrors) -> None:
    sent = build(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "more"}]},
            ],
            "temperature": 1.5,
            "top_p": 0.8,
            "max_completion_tokens": 99,
            "stop": "END",
            "n": 2,
            "seed": 7,
        },
        schema_errors,
    )
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
    assert sent["contents"][2]["parts"] == [{"text": "more"}]
    assert sent["generationConfig"] == {
        "temperature": 1.5,
        "topP": 0.8,
        "maxOutputTokens": 99,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 7,
    }


def test_effective_output_cap_is_sent_when_client_gave_none() -> None:
    sent = build({"messages": [{"role": "user", "content": "hi"}]}, max_output_tokens=512)
    assert sent["generationConfig"]["maxOutputTokens"] == 512


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "w"}}, {"mode": "ANY", "allowedFunctionNames": ["w"]}),
    ],
)
def test_tool_choice(choice: Any, expected: JSON, schema_errors: SchemaErrors) -> None:
    schema = {
        "type": "object",
        "properties": {"q": {"type": "string"}},
        "additionalProperties": False,
        "$schema": "x",
    }
    tools = [{"type": "function", "function": {"name": "w", "parameters": schema}}]
    sent = build({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": choice}, schema_errors)
    assert sent["toolConfig"] == {"functionCallingConfig": expected}
    declaration = sent["tools"][0]["functionDeclarations"][0]
    assert declaration["parametersJsonSchema"] == {
        "type": "object",
        "properties": {"q": {"type": "string"}},
        "additionalProperties": False,
    }


def response(parts: list[JSON], **extra: Any) -> bytes:
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
    return orjson.dumps({"candidates": [candidate], "responseId": "r9", **extra})


def test_thought_signature_and_call_id_survive_the_round_trip(schema_errors: SchemaErrors) -> None:
    call = {
        "functionCall": {"id": "fc-1", "name": "w", "args": {"q": "x"}},
        "thoughtSignature": "c2lnbmF0dXJl+/==",
    }
    completion = provider.parse_response(response([call]), DEPLOYMENT)
    tool_call = completion["choices"][0]["message"]["tool_calls"][0]
    assert tool_call["id"].startswith("call_")
    assert all(ch.isalnum() or ch in "_-" for ch in tool_call["id"]), "ids must be safe for every client"
    sent = build(
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                {"role": "tool", "tool_call_id": tool_call["id"], "content": "done"},
            ]
        },
        schema_errors,
    )
    assert sent["contents"][1]["parts"] == [
        {
            "functionCall": {"name": "w", "args": {"q": "x"}, "id": "fc-1"},
            "thoughtSignature": "c2lnbmF0dXJl+/==",
        }
    ]
    assert sent["contents"][2]["parts"] == [
        {"functionResponse": {"name": "w", "response": {"output": "done"}, "id": "fc-1"}}
    ]


def test_calls_without_ids_get_distinct_ids() -> None:
    parts = [{"functionCall": {"name": "w", "args": {}}}, {"functionCall": {"name": "w", "args": {}}}]
    calls = provider.parse_response(response(parts), DEPLOYMENT)["choices"][0]["message"]["tool_calls"]
    assert len({c["id"] for c in calls}) == 2


def test_foreign_tool_call_ids_still_resolve_names() -> None:
    sent = build(
        {
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "toolu_9", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "toolu_9", "content": '["a"]'},
            ]
        }
    )
    assert sent["contents"][1]["parts"] == [{"functionCall": {"name": "w", "args": {}}}]
    assert sent["contents"][2]["parts"] == [{"functionResponse": {"name": "w", "response": {"output": '["a"]'}}}]


def test_tool_result_for_an_unknown_call_is_a_bad_request() -> None:
    with pytest.raises(BadRequest) as caught:
        build(
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "tool_call_id": "nope", "content": "1"},
                ]
            }
        )
    assert caught.value.param == "messages[1].tool_call_id"


def test_several_candidates_become_choices() -> None:
    body = {
        "candidates": [
            {"content": {"parts": [{"text": "A"}]}, "finishReason": "STOP", "index": 0},
            {"content": {"parts": [{"text": "B"}]}, "finishReason": "MAX_TOKENS", "index": 1},
        ]
    }
    choices = provider.parse_response(orjson.dumps(body), DEPLOYMENT)["choices"]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
        (0, "A", "stop"),
        (1, "B", "length"),
    ]


def test_retry_delay_and_bad_key() -> None:
    limited = {
        "error": {
            "code": 429,
            "message": "Quota exceeded",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "20s"}],
        }
    }
    err = provider.parse_error(429, orjson.dumps(limited), None)
    assert (err.upstream_status, err.retry_after, err.retryable) == (429, 20.0, True)
    bad_key = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        }
    }
    err = provider.parse_error(400, orjson.dumps(bad_key), None)
    assert (err.upstream_status, err.kind) == (401, "authentication")
    assert err.http_status != 400, "the gateway's own key being wrong is not the client's fault"


def test_sample_gemini_response_parses(schema_errors: SchemaErrors) -> None:
    from tests.schemas import PROTOCOLS

    completion = provider.parse_response((PROTOCOLS / "samples" / "gemini_response.json").read_bytes(), DEPLOYMENT)
    assert schema_errors(completion, "openai:CreateChatCompletionResponse") == []
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert completion["usage"]["completion_tokens"] == 28
    assert completion["usage"]["completion_tokens_details"]["reasoning_tokens"] == 23

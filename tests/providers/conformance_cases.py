"""The conformance table: each behaviour once, with each provider's recorded upstream traffic.

Recordings follow the shapes in PROTOCOLS.md §D (Anthropic) and §E (Gemini).
"""

from __future__ import annotations

from typing import Any

from tests.providers.conformance import Case, Expect, Recording, UpstreamFailure

from creditgate.canonical import JSON

# -- Anthropic recording helpers -------------------------------------------------------------


def a_message(content: list[JSON], stop: str = "end_turn", usage: JSON | None = None, **extra: Any) -> JSON:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 10, "output_tokens": 5},
        **extra,
    }


def a_stream(*blocks: list[JSON], stop: str = "end_turn", usage: JSON | None = None) -> tuple[Any, ...]:
    start = {
        "type": "message_start",
        "message": a_message([], stop=None, usage={"input_tokens": 10, "output_tokens": 1}),
    }  # type: ignore[arg-type]
    events: list[JSON] = [start, {"type": "ping"}]
    for block in blocks:
        events.extend(block)
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": usage or {"output_tokens": 5},
        }
    )
    events.append({"type": "message_stop"})
    return tuple((e["type"], e) for e in events)


def a_text(index: int, *pieces: str) -> list[JSON]:
    return [
        {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}} for p in pieces),
        {"type": "content_block_stop", "index": index},
    ]


def a_tool(index: int, id: str, name: str, *fragments: str) -> list[JSON]:
    block = {"type": "tool_use", "id": id, "name": name, "input": {}}
    return [
        {"type": "content_block_start", "index": index, "content_block": block},
        *(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": f},
            }
            for f in fragments
        ),
        {"type": "content_block_stop", "index": index},
    ]


# -- Gemini recording helpers ----------------------------------------------------------------


def g_usage(prompt: int = 10, candidates: int = 5, cached: int = 0, thoughts: int = 0) -> JSON:
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
    }
    if cached:
        usage["cachedContentTokenCount"] = cached
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def g_response(parts: list[JSON] | None, finish: str | None = "STOP", usage: JSON | None = None, **extra: Any) -> JSON:
    out: JSON = {"modelVersion": "gemini-x", "responseId": "r1", **extra}
    if parts is not None:
        candidate: JSON = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        out["candidates"] = [candidate]
    if usage is not None:
        out["usageMetadata"] = usage
    return out


def g_stream(*responses: JSON) -> tuple[Any, ...]:
    return tuple((None, r) for r in responses)


HELLO = [{"role": "user", "content": "Say hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
USAGE_10_5 = {"prompt_tokens": 10, "completion_tokens": 5, "cached_tokens": 0}

CASES: list[Case] = [
    Case(
        "text",
        {"model": "m", "messages": HELLO},
        {
            "anthropic": Recording(a_message([{"type": "text", "text": "Hello there."}])),
            "gemini": Recording(g_response([{"text": "Hello there."}], usage=g_usage())),
        },
        expect=Expect(text="Hello there.", usage=USAGE_10_5),
    ),
    Case(
        "text_stream",
        {"model": "m", "messages": HELLO, "stream": True},
        {
            "anthropic": Recording(events=a_stream(a_text(0, "Hel", "lo ", "there."))),
            "gemini": Recording(
                events=g_stream(
                    g_response([{"text": "Hel"}], finish=None),
                    g_response([{"text": "lo "}], finish=None),
                    g_response([{"text": "there."}], usage=g_usage()),
                )
            ),
        },
        stream=True,
        expect=Expect(text="Hello there.", usage=USAGE_10_5),
    ),
    Case(
        "tool_call",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [WEATHER_TOOL],
        },
        {
            "anthropic": Recording(
                a_message(
                    [
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        }
                    ],
                    "tool_use",
                ),
                sent={"tools": [{"name": "get_weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}]},  # type: ignore[index]
            ),
            "gemini": Recording(
                g_response([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]),
                sent={"tools": [{"functionDeclarations": [{"name": "get_weather"}]}]},
            ),
        },
        expect=Expect(text=None, tool_calls=(("get_weather", {"city": "Paris"}),), finish_reason="tool_calls"),
    ),
    Case(
        "tool_call_stream_parallel",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Paris and Rome?"}],
            "tools": [WEATHER_TOOL],
            "stream": True,
        },
        {
            "anthropic": Recording(
                events=a_stream(
                    a_text(0, "Checking."),
                    a_tool(1, "toolu_1", "get_weather", "", '{"city": "Pa', 'ris"}'),
                    a_tool(2, "toolu_2", "get_weather", '{"city":"Rome"}'),
                    stop="tool_use",
                )
            ),
            "gemini": Recording(
                events=g_stream(
                    g_response([{"text": "Checking."}], finish=None),
                    g_response(
                        [
                            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                        ],
                        usage=g_usage(),
                    ),
                )
            ),
        },
        stream=True,
        expect=Expect(
            text="Checking.",
            tool_calls=(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})),
            finish_reason="tool_calls",
        ),
    ),
    Case(
        "tool_results_in_conversation",
        {
            "model": "m",
            "tools": [WEATHER_TOOL],
            "messages": [
                {"role": "user", "content": "Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_b", "content": '{"temp": 21}'},
                {"role": "user", "content": "Which is warmer?"},
            ],
        },
        {
            "anthropic": Recording(
                a_message([{"type": "text", "text": "Rome."}]),
                sent={
                    "messages": [
                        {"role": "user"},
                        {
                            "role": "assistant",
                            "content": [
                                {"type": "tool_use", "id": "call_a", "input": {"city": "Paris"}},
                                {"type": "tool_use", "id": "call_b"},
                            ],
                        },
                        {
                            "role": "user",
                            "content": [
                                {"type": "tool_result", "tool_use_id": "call_a", "content": "18C"},
                                {"type": "tool_result", "tool_use_id": "call_b"},
                                {"type": "text", "text": "Which is warmer?"},
                            ],
                        },
                    ]
                },
            ),
            "gemini": Recording(
                g_response([{"text": "Rome."}]),
                sent={
                    "contents": [
                        {"role": "user"},
                        {
                            "role": "model",
                            "parts": [
                                {"functionCall": {"name": "get_weather"}},
                                {"functionCall": {"args": {"city": "Rome"}}},
                            ],
                        },
                        {
                            "role": "user",
                            "parts": [
                                {"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}},
                                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                                {"text": "Which is warmer?"},
                            ],
                        },
                    ]
                },
            ),
        },
        expect=Expect(text="Rome."),
    ),
    Case(
        "images",
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "image_url", "image_url": {"url": "https://img.example/cat.webp"}},
                    ],
                }
            ],
        },
        {
            "anthropic": Recording(
                a_message([{"type": "text", "text": "Two images."}]),
                sent={
                    "messages": [
                        {
                            "content": [
                                {"type": "text"},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/png",
                                        "data": "iVBORw0KGgo=",
                                    },
                                },
                                {
                                    "type": "image",
                                    "source": {"type": "url", "url": "https://img.example/cat.webp"},
                                },
                            ]
                        }
                    ]
                },
            ),
            "gemini": Recording(
                g_response([{"text": "Two images."}]),
                sent={
                    "contents": [
                        {
                            "parts": [
                                {"text": "Compare"},
                                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                                {
                                    "fileData": {
                                        "mimeType": "image/webp",
                                        "fileUri": "https://img.example/cat.webp",
                                    }
                                },
                            ]
                        }
                    ]
                },
            ),
        },
        expect=Expect(text="Two images."),
    ),
    Case(
        "json_object",
        {"model": "m", "messages": HELLO, "response_format": {"type": "json_object"}},
        {
            "anthropic": Recording(
                a_message([{"type": "text", "text": '{"greeting": "hi"}'}]),
                sent={"system": [{"type": "text"}]},
            ),
            "gemini": Recording(
                g_response([{"text": '{"greeting": "hi"}'}]),
                sent={"generationConfig": {"responseMimeType": "application/json"}},
            ),
        },
        expect=Expect(text='{"greeting": "hi"}'),
    ),
    Case(
        "json_schema_stream",
        {
            "model": "m",
            "messages": HELLO,
            "stream": True,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "greeting",
                    "schema": {"type": "object", "properties": {"greeting": {"type": "string"}}},
                },
            },
        },
        {
            "anthropic": Recording(
                events=a_stream(a_tool(0, "toolu_j", "respond_with_json", '{"greeting"', ': "hi"}'), stop="tool_use"),
                sent={"tool_choice": {"type": "tool", "name": "respond_with_json"}},
            ),
            "gemini": Recording(
                events=g_stream(g_response([{"text": '{"greeting"'}], finish=None), g_response([{"text": ': "hi"}'}])),
                sent={
                    "generationConfig": {
                        "responseMimeType": "application/json",
                        "responseJsonSchema": {"type": "object"},
                    }
                },
            ),
        },
        stream=True,
        expect=Expect(text='{"greeting": "hi"}'),
    ),
    Case(
        "stop_length",
        {"model": "m", "messages": HELLO, "max_tokens": 3},
        {
            "anthropic": Recording(
                a_message([{"type": "text", "text": "Hello th"}], "max_tokens"), sent={"max_tokens": 3}
            ),
            "gemini": Recording(
                g_response([{"text": "Hello th"}], "MAX_TOKENS"),
                sent={"generationConfig": {"maxOutputTokens": 3}},
            ),
        },
        expect=Expect(text="Hello th", finish_reason="length"),
    ),
    Case(
        "stop_sequence",
        {"model": "m", "messages": HELLO, "stop": ["END"]},
        {
            "anthropic": Recording(
                a_message([{"type": "text", "text": "Hello"}], "stop_sequence", stop_sequence="END"),
                sent={"stop_sequences": ["END"]},
            ),
            "gemini": Recording(g_response([{"text": "Hello"}]), sent={"generationConfig": {"stopSequences": ["END"]}}),
        },
        expect=Expect(text="Hello"),
    ),
    Case(
        "stop_content_filter",
        {"model": "m", "messages": HELLO},
        {
            "anthropic": Recording(a_message([], "refusal")),
            "gemini": Recording(g_response([], "SAFETY")),
        },
        expect=Expect(text="", finish_reason="content_filter"),
    ),
    Case(
        "prompt_blocked_stream",
        {"model": "m", "messages": HELLO, "stream": True},
        {
            "anthropic": Recording(events=a_stream(stop="refusal")),
            "gemini": Recording(
                events=g_stream(
                    g_response(None, promptFeedback={"blockReason": "SAFETY"}, usageMetadata=g_usage(candidates=0))
                )
            ),
        },
        stream=True,
        expect=Expect(text="", finish_reason="content_filter"),
    ),
    Case(
        "usage_cached_and_reasoning",
        {"model": "m", "messages": HELLO, "stream": True},
        {
            "anthropic": Recording(
                events=(
                    (
                        "message_start",
                        {
                            "type": "message_start",
                            "message": a_message(
                                [],
                                stop=None,
                                usage={
                                    "input_tokens": 5,
                                    "cache_creation_input_tokens": 20,
                                    "cache_read_input_tokens": 100,
                                    "output_tokens": 1,
                                },
                            ),
                        },
                    ),  # type: ignore[arg-type]
                    *(
                        (e["type"], e)
                        for e in [
                            {
                                "type": "content_block_start",
                                "index": 0,
                                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                            },
                            {
                                "type": "content_block_delta",
                                "index": 0,
                                "delta": {"type": "thinking_delta", "thinking": "Hmm."},
                            },
                            {
                                "type": "content_block_delta",
                                "index": 0,
                                "delta": {"type": "signature_delta", "signature": "c2ln"},
                            },
                            {"type": "content_block_stop", "index": 0},
                        ]
                    ),
                    *((e["type"], e) for e in a_text(1, "Hi")),
                    (
                        "message_delta",
                        {
                            "type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": 40},
                        },
                    ),
                    ("message_stop", {"type": "message_stop"}),
                ),
                usage={
                    "prompt_tokens": 125,
                    "cached_tokens": 100,
                    "cache_write_tokens": 20,
                    "completion_tokens": 40,
                },
            ),
            "gemini": Recording(
                events=g_stream(
                    g_response([{"text": "Hmm.", "thought": True}], finish=None),
                    g_response([{"text": "Hi"}], usage=g_usage(prompt=125, candidates=10, cached=100, thoughts=30)),
                ),
                usage={
                    "prompt_tokens": 125,
                    "cached_tokens": 100,
                    "completion_tokens": 40,
                    "reasoning_tokens": 30,
                },
            ),
        },
        stream=True,
        expect=Expect(text="Hi", reasoning="Hmm."),
    ),
    Case(
        "error_rate_limited",
        {"model": "m", "messages": HELLO},
        {
            "anthropic": Recording(
                {"type": "error", "error": {"type": "rate_limit_error", "message": "Too many"}}, status=429
            ),
            "gemini": Recording(
                {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}},
                status=429,
            ),
        },
        failure=UpstreamFailure(429, "rate_limited", retryable=True),
    ),
    Case(
        "error_overloaded",
        {"model": "m", "messages": HELLO},
        {
            "anthropic": Recording(
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                status=529,
                failure_status=529,
            ),
            "gemini": Recording(
                {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
                status=503,
                failure_status=503,
            ),
        },
        failure=UpstreamFailure(0, "overloaded", retryable=True),
    ),
    Case(
        "error_bad_request",
        {"model": "m", "messages": HELLO},
        {
            "anthropic": Recording(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "messages: text content blocks must be non-empty",
                    },
                },
                status=400,
            ),
            "gemini": Recording(
                {
                    "error": {
                        "code": 400,
                        "message": "* contents.parts must not be empty. see https://upstream.example/x",
                        "status": "INVALID_ARGUMENT",
                    }
                },
                status=400,
            ),
        },
        failure=UpstreamFailure(400, "invalid_request", retryable=False),
    ),
    Case(
        "error_mid_stream",
        {"model": "m", "messages": HELLO, "stream": True},
        {
            "anthropic": Recording(
                events=(
                    *a_stream(a_text(0, "Hel"))[:4],
                    (
                        "error",
                        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                    ),
                ),
                failure_status=529,
            ),
            "gemini": Recording(
                events=g_stream(
                    g_response([{"text": "Hel"}], finish=None),
                    {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
                ),
                failure_status=503,
            ),
        },
        stream=True,
        failure=UpstreamFailure(0, "overloaded", retryable=True, after_first_byte=True),
    ),
    Case(
        "stream_cut",
        {"model": "m", "messages": HELLO, "stream": True},
        {
            "anthropic": Recording(events=a_stream(a_text(0, "Hel"))[:4]),
            "gemini": Recording(events=g_stream(g_response([{"text": "Hel"}], finish=None))),
        },
        stream=True,
        failure=UpstreamFailure(0, "stream_cut", retryable=True, after_first_byte=True),
    ),
]

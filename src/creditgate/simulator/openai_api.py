"""OpenAI wire protocol: ``POST /v1/chat/completions``, ``GET /v1/models[/{id}]``.

Shapes follow the OpenAI spec (``CreateChatCompletionResponse`` and the stream chunk); the
official SDK's parsers and stream helpers are the reference client.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from creditgate.simulator.endpoint import Call, id_headers, optional_int, require, stop_list
from creditgate.simulator.envelopes import Protocol, SimError, error_object
from creditgate.simulator.replies import (
    Choice,
    TextMode,
    ToolMode,
    argument_fragments,
    make_tool_call,
    pick_tool,
    plan_choice,
)
from creditgate.simulator.tokens import openai_prompt_tokens
from creditgate.simulator.transport import Event, drop_connection, json_response, send_stream, wait_first_byte

FINGERPRINT = "fp_simulator"
OWNER = "creditgate-simulator"
MODELS_CREATED = 1735689600
MODEL_IDS = ("sim-small", "sim-large", "sim-reasoner", "sim-claude", "sim-gemini")
_FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool": "tool_calls"}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _tools(body: dict[str, Any]) -> list[tuple[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise SimError(400, "Invalid 'tools': expected an array of tool definitions.", param="tools")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise SimError(400, f"Missing required parameter: 'tools[{i}].function.name'.", param=f"tools[{i}]")
        out.append((fn["name"], fn.get("parameters")))
    return out


def _tool_choice(body: dict[str, Any], tools: list[tuple[str, Any]]) -> tuple[ToolMode, str | None]:
    choice = body.get("tool_choice")
    if choice is None:
        return ("auto" if tools else "none"), None
    if choice in ("none", "auto", "required"):
        return choice, None
    if isinstance(choice, dict):
        if choice.get("type") == "function" and isinstance(choice.get("function"), dict):
            return "required", str(choice["function"].get("name"))
        allowed = choice.get("allowed_tools")
        if choice.get("type") == "allowed_tools" and isinstance(allowed, dict):
            names = {str((t.get("function") or {}).get("name")) for t in allowed.get("tools") or []}
            tools[:] = [t for t in tools if t[0] in names]
            return ("required" if allowed.get("mode") == "required" else "auto"), None
    raise SimError(400, "Invalid 'tool_choice'.", param="tool_choice")


def _text_mode(body: dict[str, Any]) -> tuple[TextMode, Any]:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return "text", None
    if fmt.get("type") == "json_object":
        return "json_object", None
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or "name" not in spec:
            raise SimError(
                400,
                "Missing required parameter: 'response_format.json_schema.name'.",
                param="response_format.json_schema",
            )
        return "json_schema", spec.get("schema") or {"type": "object"}
    return "text", None


def plan(call: Call) -> tuple[list[Choice], int]:
    """Validate a chat request and plan its choices; returns (choices, prompt tokens)."""
    body, behaviour = call.body, call.behaviour
    require(body, "model", str, "a string")
    messages = require(body, "messages", list, "an array of messages")
    if not messages:
        raise SimError(400, "Invalid 'messages': empty array. Expected at least one message.", param="messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg:
            raise SimError(400, f"Missing required parameter: 'messages[{i}].role'.", param=f"messages[{i}].role")
    n = optional_int(body, "n", minimum=1) or 1
    if n > 128:
        raise SimError(400, "Invalid 'n': must be at most 128.", param="n")
    cap = optional_int(body, "max_completion_tokens")
    if cap is None:
        cap = optional_int(body, "max_tokens")
    stops = stop_list(body.get("stop"), "stop")
    tools = _tools(body)
    mode, forced = _tool_choice(body, tools)
    text_mode, schema = _text_mode(body)
    users = [m for m in messages if m.get("role") == "user"]
    seed = _text_of(users[-1].get("content")) if users else ""
    picked = pick_tool(tools, mode, forced=forced, user_text=seed, user_turn=messages[-1].get("role") == "user")
    choices = []
    for index in range(n):
        tool = make_tool_call(picked[0], picked[1], seed, index) if picked else None
        choices.append(
            plan_choice(
                seed=seed,
                tokens=behaviour.tokens,
                cap=cap,
                stops=stops,
                mode=text_mode,
                schema=schema,
                reasoning=behaviour.reasoning,
                tool=tool,
                index=index,
            )
        )
    return choices, openai_prompt_tokens(body)


def usage(choices: list[Choice], prompt: int, cached: int) -> dict[str, Any]:
    completion = sum(c.completion_tokens for c in choices)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(cached, prompt), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": sum(c.reasoning_tokens for c in choices),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _tool_call_json(choice: Choice) -> list[dict[str, Any]] | None:
    if choice.tool is None:
        return None
    tool = choice.tool
    return [
        {
            "id": "call_" + tool.call_id,
            "type": "function",
            "function": {"name": tool.name, "arguments": tool.arguments},
        }
    ]


async def chat_completions(call: Call) -> web.StreamResponse:
    choices, prompt = plan(call)
    body, behaviour = call.body, call.behaviour
    model = body["model"]
    stream = body.get("stream") is True
    if behaviour.cut_after is not None and not stream:
        return drop_connection(call.request)
    ident = "chatcmpl-sim" + secrets.token_hex(12)
    created = int(time.time())
    headers = id_headers(Protocol.OPENAI)
    if stream:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = list(
            _stream_events(
                ident,
                created,
                model,
                choices,
                prompt,
                behaviour.cached,
                include_usage,
                report_usage=behaviour.usage,
            )
        )
        error = error_object(Protocol.OPENAI, 500, "Simulated upstream error in the middle of the stream.")
        return await send_stream(call.request, behaviour, events, b"data: " + orjson.dumps(error) + b"\n\n", headers)
    result = {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": None if c.tool else c.text,
                    "refusal": None,
                    "annotations": [],
                    **({"tool_calls": _tool_call_json(c)} if c.tool else {}),
                },
                "logprobs": None,
                "finish_reason": _FINISH[c.finish],
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage(choices, prompt, behaviour.cached),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    await wait_first_byte(behaviour)
    return json_response(orjson.dumps(result), headers=headers)


def _stream_events(
    ident: str,
    created: int,
    model: str,
    choices: list[Choice],
    prompt: int,
    cached: int,
    include_usage: bool,
    *,
    report_usage: bool,
) -> Iterator[Event]:
    usage_null = include_usage and report_usage

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "service_tier": "default",
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage_null:
            payload["usage"] = None
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def per_choice(index: int, choice: Choice) -> list[Event]:
        tool = choice.tool
        events: list[Event] = [
            (chunk(index, {"role": "assistant", "content": None if tool else "", "refusal": None}), False)
        ]
        if tool is not None:
            first = {
                "index": 0,
                "id": "call_" + tool.call_id,
                "type": "function",
                "function": {"name": tool.name, "arguments": ""},
            }
            events.append((chunk(index, {"tool_calls": [first]}), False))
            events.extend(
                (chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}), True)
                for frag in argument_fragments(tool.arguments)
            )
        else:
            events.extend((chunk(index, {"content": piece}), True) for piece in choice.pieces)
        return events

    lanes = [per_choice(i, c) for i, c in enumerate(choices)]
    for step in itertools.zip_longest(*lanes):
        yield from (event for event in step if event is not None)
    for i, c in enumerate(choices):
        yield chunk(i, {}, _FINISH[c.finish]), False
    if usage_null:
        final = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "service_tier": "default",
            "choices": [],
            "usage": usage(choices, prompt, cached),
        }
        yield b"data: " + orjson.dumps(final) + b"\n\n", False
    yield b"data: [DONE]\n\n", False


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODELS_CREATED, "owned_by": OWNER}


def _anthropic_model(model_id: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": f"{model_id} (simulated)",
        "created_at": "2025-01-01T00:00:00Z",
    }


async def list_models(call: Call) -> web.StreamResponse:
    """The model list; Anthropic clients (they send ``anthropic-version``) get Anthropic's shape."""
    if call.protocol is Protocol.ANTHROPIC:
        data = [_anthropic_model(m) for m in MODEL_IDS]
        body = {"data": data, "has_more": False, "first_id": MODEL_IDS[0], "last_id": MODEL_IDS[-1]}
    else:
        body = {"object": "list", "data": [_model(m) for m in MODEL_IDS]}
    return json_response(orjson.dumps(body), headers=id_headers(call.protocol))


async def get_model(call: Call) -> web.StreamResponse:
    """Any id is answered: the simulator serves whatever model name it is asked for."""
    model_id = call.request.match_info["model_id"]
    body = _anthropic_model(model_id) if call.protocol is Protocol.ANTHROPIC else _model(model_id)
    return json_response(orjson.dumps(body), headers=id_headers(call.protocol))

"""Gemini wire protocol: ``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent`` (``?alt=sse`` for server-sent events, else one JSON array), plus
``:countTokens`` and ``GET /v1beta/models``.

Input field names are accepted in camelCase or snake_case (protobuf JSON rules); output is
camelCase. A candidate that calls a function still finishes with ``STOP``, as the real API does.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any

import orjson
from aiohttp import web

from creditgate.simulator.endpoint import Call
from creditgate.simulator.envelopes import Protocol, SimError, error_object
from creditgate.simulator.replies import Choice, TextMode, ToolMode, make_tool_call, pick_tool, plan_choice
from creditgate.simulator.tokens import gemini_prompt_tokens
from creditgate.simulator.transport import Event, drop_connection, json_response, send_stream, wait_first_byte

MODEL_IDS = ("sim-gemini", "sim-gemini-pro")


def _get(obj: Any, camel: str, snake: str) -> Any:
    if not isinstance(obj, dict):
        return None
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return " ".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


def _tools(body: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for tool in body.get("tools") or []:
        for decl in _get(tool, "functionDeclarations", "function_declarations") or []:
            if not isinstance(decl, dict) or not isinstance(decl.get("name"), str):
                raise SimError(
                    400,
                    "* GenerateContentRequest.tools[0].function_declarations[0].name: name must not be empty.",
                )
            params = _get(decl, "parameters", "parameters") or _get(
                decl, "parametersJsonSchema", "parameters_json_schema"
            )
            out.append((decl["name"], params))
    return out


def _tool_choice(body: dict[str, Any], tools: list[tuple[str, Any]]) -> tuple[ToolMode, str | None]:
    config = _get(_get(body, "toolConfig", "tool_config"), "functionCallingConfig", "function_calling_config")
    mode = str(_get(config, "mode", "mode") or "AUTO").upper()
    allowed = _get(config, "allowedFunctionNames", "allowed_function_names")
    if isinstance(allowed, list) and allowed:
        tools[:] = [t for t in tools if t[0] in allowed]
    if mode == "NONE":
        return "none", None
    if mode == "ANY":
        return "required", None
    return "auto", None


def _text_mode(config: Any) -> tuple[TextMode, Any]:
    if _get(config, "responseMimeType", "response_mime_type") != "application/json":
        return "text", None
    schema = _get(config, "responseSchema", "response_schema") or _get(
        config, "responseJsonSchema", "response_json_schema"
    )
    return ("json_schema", schema) if schema else ("json_object", None)


def _positive_int(config: Any, camel: str, snake: str) -> int | None:
    value = _get(config, camel, snake)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SimError(400, f"* GenerateContentRequest.generation_config.{snake}: must be a positive integer.")
    return value


def plan(call: Call) -> tuple[list[Choice], int]:
    body, behaviour = call.body, call.behaviour
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise SimError(400, "* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        parts = _get(content, "parts", "parts")
        if not isinstance(parts, list) or not parts:
            raise SimError(400, f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        if content.get("role", "user") not in ("user", "model"):
            raise SimError(400, f"* GenerateContentRequest.contents[{i}].role: Please use a valid role: user, model.")
    config = _get(body, "generationConfig", "generation_config") or {}
    cap = _positive_int(config, "maxOutputTokens", "max_output_tokens")
    count = _positive_int(config, "candidateCount", "candidate_count") or 1
    stops = _get(config, "stopSequences", "stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise SimError(400, "* GenerateContentRequest.generation_config.stop_sequences: expected a list of strings.")
    text_mode, schema = _text_mode(config)
    tools = _tools(body)
    mode, forced = _tool_choice(body, tools)
    users = [c for c in contents if c.get("role", "user") == "user"]
    seed = _text(users[-1]["parts"]) if users else ""
    last = contents[-1]
    user_turn = last.get("role", "user") == "user" and not any(
        isinstance(p, dict) and _get(p, "functionResponse", "function_response") is not None for p in last["parts"]
    )
    picked = pick_tool(tools, mode, forced=forced, user_text=seed, user_turn=user_turn)
    choices = []
    for index in range(count):
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
    return choices, gemini_prompt_tokens(body)


def usage_metadata(choices: list[Choice], prompt: int, cached: int) -> dict[str, Any]:
    candidates = sum(c.output_tokens for c in choices)
    thoughts = sum(c.reasoning_tokens for c in choices)
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "thoughtsTokenCount": thoughts,
        "cachedContentTokenCount": min(cached, prompt),
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }


def _finish(choice: Choice) -> str:
    return "MAX_TOKENS" if choice.finish == "length" else "STOP"


def _parts(choice: Choice) -> list[dict[str, Any]]:
    if choice.tool is not None:
        return [{"functionCall": {"name": choice.tool.name, "args": choice.tool.args}}]
    return [{"text": choice.text}]


async def model_action(call: Call) -> web.StreamResponse:
    """Dispatch ``{model}:{action}`` (Gemini puts the method after a colon in the path)."""
    model, _, action = call.request.match_info["target"].rpartition(":")
    if action == "countTokens":
        return json_response(orjson.dumps({"totalTokens": gemini_prompt_tokens(call.body)}))
    if not model or action not in ("generateContent", "streamGenerateContent"):
        raise SimError(404, f"Method '{action}' is not found for models/{model or action}.")
    choices, prompt = plan(call)
    behaviour = call.behaviour
    stream = action == "streamGenerateContent"
    if behaviour.cut_after is not None and not stream:
        return drop_connection(call.request)
    common = {"modelVersion": model, "responseId": "sim" + secrets.token_urlsafe(12)}
    usage = usage_metadata(choices, prompt, behaviour.cached)
    if not stream:
        candidates = [
            {"content": {"role": "model", "parts": _parts(c)}, "finishReason": _finish(c), "index": i}
            for i, c in enumerate(choices)
        ]
        await wait_first_byte(behaviour)
        return json_response(orjson.dumps({"candidates": candidates, "usageMetadata": usage, **common}))
    chunks = _stream_chunks(choices, usage if behaviour.usage else None, common)
    if call.request.query.get("alt") != "sse":
        await wait_first_byte(behaviour)
        return json_response(orjson.dumps([chunk for chunk, _ in chunks]))
    events: list[Event] = [(b"data: " + orjson.dumps(chunk) + b"\n\n", counted) for chunk, counted in chunks]
    error = error_object(Protocol.GEMINI, 500, "Simulated internal error in the middle of the stream.")
    return await send_stream(call.request, behaviour, events, b"data: " + orjson.dumps(error) + b"\n\n", {})


def _stream_chunks(
    choices: list[Choice], usage: dict[str, Any] | None, common: dict[str, Any]
) -> list[tuple[dict[str, Any], bool]]:
    """One chunk per token step (all candidates that still have text), then a closing chunk."""
    lanes: list[list[dict[str, Any]]] = []
    for index, choice in enumerate(choices):
        parts = _parts(choice) if choice.tool is not None else [{"text": p} for p in choice.pieces]
        lanes.append([{"content": {"role": "model", "parts": [part]}, "index": index} for part in parts])
    chunks: list[tuple[dict[str, Any], bool]] = []
    for step in itertools.zip_longest(*lanes):
        candidates = [c for c in step if c is not None]
        chunks.append(({"candidates": candidates, **common}, True))
    closing = [
        {"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": _finish(c), "index": i}
        for i, c in enumerate(choices)
    ]
    last: dict[str, Any] = {"candidates": closing, **common}
    if usage is not None:
        last["usageMetadata"] = usage
    chunks.append((last, False))
    return chunks


async def list_models(call: Call) -> web.StreamResponse:
    models = [
        {
            "name": f"models/{m}",
            "version": "001",
            "displayName": f"{m} (simulated)",
            "description": "A creditgate simulator model; replies are simulated.",
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
        }
        for m in MODEL_IDS
    ]
    return json_response(orjson.dumps({"models": models}))

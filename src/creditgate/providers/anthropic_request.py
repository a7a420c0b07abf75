"""Canonical (OpenAI Chat) request -> Anthropic Messages request body.

The differences this bridges (PROTOCOLS.md §F, §H): the system prompt is a top-level field,
`max_tokens` is required, tool results are `tool_result` blocks grouped at the start of one
user turn, tool-call arguments are objects rather than JSON strings, empty text blocks are
rejected, temperature tops out at 1, and there is no JSON mode, so `response_format` is
emulated: `json_schema` forces a tool whose input schema is the schema (the tool call is
turned back into text on the way out); `json_object` adds a system instruction, and forces
the same tool with any object as its schema when the request has no tools of its own.
"""

from __future__ import annotations

import re
from typing import Any

from creditgate.canonical import JSON, ChatRequest
from creditgate.errors import BadRequest
from creditgate.providers.openai_shapes import (
    content_parts,
    content_text,
    image_url_of,
    parse_arguments,
    parse_data_url,
)

DEFAULT_MAX_TOKENS = 4096
# The tool a `json_schema` response format is forced through. A reserved name, so that the
# response side can recognise it without seeing the request.
JSON_TOOL_NAME = "respond_with_json"
JSON_OBJECT_INSTRUCTION = "Respond only with a single valid JSON object and no other text."
EPHEMERAL = {"type": "ephemeral"}


def build_body(request: ChatRequest, model: str) -> JSON:
    body = request.body
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("messages must be an array", param="messages")
    system, turns = _convert_messages(messages)
    out: JSON = {"model": model, "max_tokens": _max_tokens(request), "messages": turns}

    response_format = body.get("response_format")
    rf_type = response_format.get("type") if isinstance(response_format, dict) else None
    if rf_type == "json_object":
        system.append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})
    if request.cache_prompt:
        _mark_cache_points(system, turns)
    if system:
        out["system"] = system

    _sampling(body, out)
    tools = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"))
    # json_object is forced through the same tool (any object) unless the client brought tools
    # of its own, which the model must stay free to call; then the instruction alone asks.
    if isinstance(response_format, dict) and (rf_type == "json_schema" or (rf_type == "json_object" and not tools)):
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        tools.append(
            {
                "name": JSON_TOOL_NAME,
                "description": "Give the final answer as JSON matching this schema.",
                "input_schema": schema if isinstance(schema, dict) else {"type": "object"},
            }
        )
        tool_choice = {"type": "tool", "name": JSON_TOOL_NAME}
    if tools:
        out["tools"] = tools
        if body.get("parallel_tool_calls") is False and (tool_choice or {}).get("type") != "none":
            tool_choice = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if tool_choice and tools:
        out["tool_choice"] = tool_choice

    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if request.stream:
        out["stream"] = True
    return out


def _max_tokens(request: ChatRequest) -> int:
    """The body's maximum, held to the request's output cap (the pipeline sets that to what
    the hold covers); the cap alone when the body has none."""
    cap = request.max_output_tokens
    for key in ("max_completion_tokens", "max_tokens"):
        value = request.body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return min(value, cap) if cap else value
    return cap or DEFAULT_MAX_TOKENS


def _sampling(body: JSON, out: JSON) -> None:
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        out["temperature"] = min(1.0, max(0.0, float(temperature)))
    for key in ("top_p", "top_k"):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value
    stop = body.get("stop")
    if isinstance(stop, str) and stop:
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list):
        sequences = [s for s in stop if isinstance(s, str) and s]
        if sequences:
            out["stop_sequences"] = sequences
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise BadRequest("n > 1 is not supported by this model's provider", param="n")


def _convert_messages(messages: list[Any]) -> tuple[list[JSON], list[JSON]]:
    """(system blocks, user/assistant turns). Consecutive same-role turns are merged and
    `tool_result` blocks are moved to the front of their user turn."""
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where} must be an object", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), where))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), where)
            turn_role = "user"
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
            turn_role = "assistant"
        elif role == "tool":
            blocks = [_tool_result(message, where)]
            turn_role = "user"
        else:
            raise BadRequest(f"{where}.role {role!r} is not supported by this provider", param=f"{where}.role")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b.get("type") != "tool_result")
    if turns and turns[-1]["role"] == "assistant":
        # A prefilled final assistant turn must not end with whitespace (the API rejects it).
        last = turns[-1]["content"][-1]
        if last.get("type") == "text":
            last["text"] = last["text"].rstrip()
    return system, turns


def _tool_id(value: Any) -> str:
    """Anthropic accepts only `[A-Za-z0-9_-]` in tool ids; ids made by other vendors (for
    example `functions.get_weather:0`) are rewritten the same way on the call and its result."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(value)) or "toolu_0"


def _text_blocks(content: Any, where: str) -> list[JSON]:
    blocks = []
    for part in content_parts(content, where):
        text = part.get("text")
        if part.get("type") == "text" and isinstance(text, str) and text.strip():
            blocks.append(_with_cache_control({"type": "text", "text": text}, part))
    return blocks


def _user_blocks(content: Any, where: str) -> list[JSON]:
    blocks: list[JSON] = []
    for j, part in enumerate(content_parts(content, where)):
        kind = part.get("type")
        at = f"{where}.content[{j}]"
        if kind == "text":
            text = part.get("text")
            if isinstance(text, str) and text.strip():
                blocks.append(_with_cache_control({"type": "text", "text": text}, part))
        elif kind == "image_url":
            blocks.append(_with_cache_control({"type": "image", "source": _image_source(part, at)}, part))
        elif kind == "file":
            blocks.append(_with_cache_control(_document(part, at), part))
        else:
            raise BadRequest(f"{at}: content type {kind!r} is not supported by this provider", param=at)
    return blocks


def _image_source(part: JSON, where: str) -> JSON:
    url = image_url_of(part, where)
    if url.startswith("data:"):
        mime, data = parse_data_url(url, f"{where}.image_url.url")
        return {"type": "base64", "media_type": mime, "data": data}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise BadRequest(f"{where}.image_url.url must be an https or data URL", param=f"{where}.image_url.url")


def _document(part: JSON, where: str) -> JSON:
    file = part.get("file") if isinstance(part.get("file"), dict) else {}
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data:
        raise BadRequest(f"{where}.file.file_data is required by this provider", param=f"{where}.file")
    if data.startswith("data:"):
        mime, payload = parse_data_url(data, f"{where}.file.file_data")
    else:
        mime, payload = "application/pdf", data
    return {"type": "document", "source": {"type": "base64", "media_type": mime, "data": payload}}


def _assistant_blocks(message: JSON, where: str) -> list[JSON]:
    blocks: list[JSON] = []
    content = message.get("content")
    if content is not None:
        for part in content_parts(content, where):
            text = part.get("text") if part.get("type") == "text" else part.get("refusal")
            if isinstance(text, str) and text.strip():
                blocks.append(_with_cache_control({"type": "text", "text": text}, part))
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for k, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise BadRequest(f"{where}.tool_calls[{k}].function.name is required", param=f"{where}.tool_calls")
            blocks.append(
                {
                    "type": "tool_use",
                    "id": _tool_id(call.get("id") or f"toolu_{k}"),
                    "name": fn["name"],
                    "input": parse_arguments(fn.get("arguments")),
                }
            )
    return blocks


def _tool_result(message: JSON, where: str) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest(f"{where}.tool_call_id is required", param=f"{where}.tool_call_id")
    block: JSON = {"type": "tool_result", "tool_use_id": _tool_id(call_id)}
    text = content_text(message.get("content"))
    if text:
        block["content"] = text
    content = message.get("content")
    if isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p for p in content):
        block["cache_control"] = next(p["cache_control"] for p in content if "cache_control" in p)
    return block


def _with_cache_control(block: JSON, part: JSON) -> JSON:
    cache_control = part.get("cache_control")
    if isinstance(cache_control, dict):
        block["cache_control"] = cache_control
    return block


def _mark_cache_points(system: list[JSON], turns: list[JSON]) -> None:
    """Prompt caching asked for by the client (`"cache": true`): cache the prompt up to the
    end of the system prompt and up to the end of the last user message."""
    if system:
        system[-1].setdefault("cache_control", dict(EPHEMERAL))
    for turn in reversed(turns):
        if turn["role"] == "user" and turn["content"]:
            turn["content"][-1].setdefault("cache_control", dict(EPHEMERAL))
            break


def _tools(tools: Any) -> list[JSON]:
    out: list[JSON] = []
    if not isinstance(tools, list):
        return out
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest(f"tools[{i}] must be a function tool with a name", param=f"tools[{i}]")
        schema = fn.get("parameters")
        converted: JSON = {
            "name": fn["name"],
            "input_schema": schema if isinstance(schema, dict) else {"type": "object", "properties": {}},
        }
        if isinstance(fn.get("description"), str):
            converted["description"] = fn["description"]
        _with_cache_control(converted, tool)
        out.append(converted)
    return out


def _tool_choice(choice: Any) -> JSON | None:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict):
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return {"type": "tool", "name": fn["name"]}
    return None

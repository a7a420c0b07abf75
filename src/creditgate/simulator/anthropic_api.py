"""Anthropic wire protocol: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Streams carry an ``event:`` line and a matching ``type`` in every payload, in the order the
SDK's ``messages.stream()`` helper insists on (see PROTOCOLS.md D.4).

Prompt caching: when a request marks blocks with ``cache_control``, the first request with a
given prefix reports it as ``cache_creation_input_tokens`` and later identical prefixes as
``cache_read_input_tokens``; ``input_tokens`` is the uncached rest. ``cached=N`` overrides this
with N read tokens. ``reasoning=N`` is added to ``output_tokens`` (thinking is billed as output).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from creditgate.simulator.endpoint import Call, id_headers, optional_int, require, stop_list
from creditgate.simulator.envelopes import Protocol, SimError, error_object
from creditgate.simulator.replies import (
    Choice,
    ToolMode,
    argument_fragments,
    make_tool_call,
    pick_tool,
    plan_choice,
)
from creditgate.simulator.tokens import anthropic_prompt
from creditgate.simulator.transport import Event, drop_connection, json_response, send_stream, wait_first_byte

_STOP_REASON = {
    "stop": "end_turn",
    "stop_sequence": "stop_sequence",
    "length": "max_tokens",
    "tool": "tool_use",
}


def _user_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text") or "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _is_tool_result_turn(content: Any) -> bool:
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def _tools(body: dict[str, Any]) -> list[tuple[str, Any]]:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise SimError(400, "tools: Input should be a valid list")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise SimError(400, f"tools.{i}.name: Field required")
        out.append((tool["name"], tool.get("input_schema")))
    return out


def _tool_choice(body: dict[str, Any]) -> tuple[ToolMode, str | None]:
    choice = body.get("tool_choice")
    if choice is None:
        return "auto", None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool" and isinstance(choice, dict):
        return "required", str(choice.get("name"))
    modes: dict[Any, ToolMode] = {"auto": "auto", "any": "required", "none": "none"}
    if kind not in modes:
        raise SimError(
            400,
            "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
        )
    return modes[kind], None


def plan(call: Call) -> Choice:
    body, behaviour = call.body, call.behaviour
    require(body, "model", str, "a string")
    max_tokens = optional_int(body, "max_tokens", minimum=1)
    if max_tokens is None:
        raise SimError(400, "max_tokens: Field required")
    messages = require(body, "messages", list, "a list of messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise SimError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in msg:
            raise SimError(400, f"messages.{i}.content: Field required")
    stops = stop_list(body.get("stop_sequences"), "stop_sequences")
    tools = _tools(body)
    mode, forced = _tool_choice(body)
    users = [m for m in messages if m["role"] == "user"]
    seed = _user_text(users[-1]["content"]) if users else ""
    user_turn = bool(messages) and messages[-1]["role"] == "user" and not _is_tool_result_turn(messages[-1]["content"])
    picked = pick_tool(tools, mode, forced=forced, user_text=seed, user_turn=user_turn)
    tool = make_tool_call(picked[0], picked[1], seed) if picked else None
    return plan_choice(
        seed=seed,
        tokens=behaviour.tokens,
        cap=max_tokens,
        stops=stops,
        reasoning=behaviour.reasoning,
        tool=tool,
    )


def usage(call: Call, choice: Choice) -> dict[str, Any]:
    """Input split into uncached, cache-write and cache-read parts, as the API reports it."""
    prompt = anthropic_prompt(call.body)
    read = creation = 0
    if call.behaviour.cached:
        read = min(call.behaviour.cached, prompt.total)
    elif prompt.cache_key:
        if call.state.cache_lookup(prompt.cache_key):
            read = prompt.cache_prefix_tokens
        else:
            creation = prompt.cache_prefix_tokens
    return {
        "input_tokens": prompt.total - read - creation,
        "output_tokens": choice.completion_tokens,
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": creation, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    }


def _content(choice: Choice) -> list[dict[str, Any]]:
    if choice.tool is not None:
        return [
            {
                "type": "tool_use",
                "id": "toolu_" + choice.tool.call_id,
                "name": choice.tool.name,
                "input": choice.tool.args,
            }
        ]
    return [{"type": "text", "text": choice.text}]


async def messages(call: Call) -> web.StreamResponse:
    choice = plan(call)
    behaviour = call.behaviour
    stream = call.body.get("stream") is True
    if behaviour.cut_after is not None and not stream:
        return drop_connection(call.request)
    message: dict[str, Any] = {
        "id": "msg_sim" + secrets.token_hex(12),
        "type": "message",
        "role": "assistant",
        "model": call.body["model"],
        "content": _content(choice),
        "stop_reason": _STOP_REASON[choice.finish],
        "stop_sequence": choice.stop_sequence,
        "usage": usage(call, choice),
    }
    headers = id_headers(Protocol.ANTHROPIC)
    if stream:
        events = list(_stream_events(message, choice, report_usage=behaviour.usage))
        error = error_object(Protocol.ANTHROPIC, 529, "Overloaded (simulated error in the middle of the stream).")
        return await send_stream(call.request, behaviour, events, _event("error", error), headers)
    await wait_first_byte(behaviour)
    return json_response(orjson.dumps(message), headers=headers)


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _stream_events(message: dict[str, Any], choice: Choice, *, report_usage: bool) -> Iterator[Event]:
    full_usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    if report_usage:
        start["usage"] = {**full_usage, "output_tokens": min(1, full_usage["output_tokens"])}
    else:
        del start["usage"]
    yield _event("message_start", {"type": "message_start", "message": start}), False
    block = message["content"][0]
    opening = {**block, "input": {}} if block["type"] == "tool_use" else {"type": "text", "text": ""}
    yield (
        _event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": opening}),
        False,
    )
    yield _event("ping", {"type": "ping"}), False
    if choice.tool is not None:
        for fragment in argument_fragments(choice.tool.arguments):
            delta = {"type": "input_json_delta", "partial_json": fragment}
            yield (
                _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
                True,
            )
    else:
        for piece in choice.pieces:
            delta = {"type": "text_delta", "text": piece}
            yield (
                _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
                True,
            )
    yield _event("content_block_stop", {"type": "content_block_stop", "index": 0}), False
    ending: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
    }
    if report_usage:
        ending["usage"] = {"output_tokens": full_usage["output_tokens"]}
    yield _event("message_delta", ending), False
    yield _event("message_stop", {"type": "message_stop"}), False


async def count_tokens(call: Call) -> web.StreamResponse:
    require(call.body, "model", str, "a string")
    require(call.body, "messages", list, "a list of messages")
    return json_response(
        orjson.dumps({"input_tokens": anthropic_prompt(call.body).total}),
        headers=id_headers(Protocol.ANTHROPIC),
    )

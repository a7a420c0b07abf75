"""Canonical completion, usage and errors -> Anthropic Messages shapes.

Shared by the non-streaming renderer and the SSE encoder so that both report the same stop
reason, usage split and error type. OpenAI's `prompt_tokens` includes cached and cache-write
tokens; Anthropic's `input_tokens` does not, so they are subtracted (PROTOCOLS.md §F).
"""

from __future__ import annotations

from typing import Any

import orjson

from creditgate.canonical import JSON, Usage
from creditgate.errors import GatewayError, NoDeployment, UpstreamError, http_status

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def message_id(completion_id: Any) -> str:
    if not isinstance(completion_id, str) or not completion_id:
        return "msg_gateway"
    if completion_id.startswith("msg_"):
        return completion_id
    return "msg_" + completion_id.removeprefix("chatcmpl-")


def stop_reason(finish_reason: Any, stop_sequence: Any = None) -> str:
    if finish_reason == "stop" and isinstance(stop_sequence, str):
        return "stop_sequence"
    return STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"


def anthropic_usage(usage: Any) -> JSON:
    parsed = Usage.from_openai(usage) or Usage()
    out: JSON = {
        "input_tokens": max(0, parsed.prompt_tokens - parsed.cached_tokens - parsed.cache_write_tokens),
        "output_tokens": parsed.completion_tokens,
        "cache_creation_input_tokens": parsed.cache_write_tokens,
        "cache_read_input_tokens": parsed.cached_tokens,
    }
    if isinstance(usage, dict) and "cost" in usage:
        out["cost"] = usage["cost"]
    return out


def render_message(completion: JSON) -> JSON:
    choices = completion.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = _dict(first.get("message"))
    content: list[JSON] = []
    text = _text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            content.append(
                {
                    "type": "tool_use",
                    "id": str(call.get("id") or "toolu_gateway"),
                    "name": str(fn.get("name", "")),
                    "input": _arguments(fn.get("arguments")),
                }
            )
    stop_sequence = first.get("stop_sequence") if isinstance(first.get("stop_sequence"), str) else None
    return {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": str(completion.get("model", "")),
        "content": content,
        "stop_reason": stop_reason(first.get("finish_reason"), stop_sequence),
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(completion.get("usage")),
    }


def _dict(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _arguments(arguments: Any) -> JSON:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        value = {}
    return value if isinstance(value, dict) else {}


def error_type(err: GatewayError) -> str:
    if isinstance(err, UpstreamError) and (err.kind == "overloaded" or err.upstream_status == 529):
        return "overloaded_error"
    if isinstance(err, NoDeployment):
        return "overloaded_error"
    status = http_status(err)
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_payload(err: GatewayError, request_id: str) -> JSON:
    return {
        "type": "error",
        "error": {"type": error_type(err), "message": err.message},
        "request_id": request_id,
    }

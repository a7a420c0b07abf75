"""Anthropic Messages response, usage and error -> canonical.

Anthropic's `input_tokens` counts only uncached input, so the canonical `prompt_tokens` adds
the cache reads and writes back (PROTOCOLS.md §H.5). A `tool_use` block of the reserved JSON
tool (see `anthropic_request`) is the emulated structured output and becomes text.
"""

from __future__ import annotations

from typing import Any

import orjson

from creditgate.canonical import JSON, Usage
from creditgate.errors import UpstreamError
from creditgate.providers.anthropic_request import JSON_TOOL_NAME
from creditgate.providers.base import safe_message
from creditgate.providers.openai_shapes import (
    assistant_message,
    choice,
    completion,
    dumps,
    tool_call,
)

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# error.type -> (HTTP status used for an in-stream error, kind)
ERROR_TYPES = {
    "invalid_request_error": (400, "invalid_request"),
    "authentication_error": (401, "authentication"),
    "billing_error": (402, "billing"),
    "permission_error": (403, "permission"),
    "not_found_error": (404, "not_found"),
    "request_too_large": (413, "request_too_large"),
    "rate_limit_error": (429, "rate_limited"),
    "api_error": (500, "upstream_error"),
    "timeout_error": (504, "timeout"),
    "overloaded_error": (529, "overloaded"),
}


def finish_reason(stop_reason: Any, json_mode: bool = False) -> str:
    if json_mode and stop_reason == "tool_use":
        return "stop"
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_to_openai(usage: Any) -> JSON:
    u = usage if isinstance(usage, dict) else {}
    fresh, write, read, output = (
        _int(u.get(k))
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    )
    return Usage(
        prompt_tokens=fresh + write + read,
        completion_tokens=output,
        cached_tokens=read,
        cache_write_tokens=write,
    ).to_openai()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def message_to_completion(message: JSON, fallback_model: str) -> JSON:
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[JSON] = []
    json_mode = False
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        elif kind == "tool_use":
            if block.get("name") == JSON_TOOL_NAME:
                json_mode = True
                texts.append(dumps(block.get("input") or {}))
            else:
                calls.append(
                    tool_call(str(block.get("id", "")), str(block.get("name", "")), dumps(block.get("input") or {}))
                )
    stop_reason = message.get("stop_reason")
    the_choice = choice(
        0,
        assistant_message("".join(texts) if texts or not calls else None, calls, "".join(thinking) or None),
        finish_reason(stop_reason, json_mode),
    )
    if stop_reason == "stop_sequence" and isinstance(message.get("stop_sequence"), str):
        the_choice["stop_sequence"] = message["stop_sequence"]
    return completion(
        id=str(message.get("id") or "msg_unknown"),
        model=str(message.get("model") or fallback_model),
        choices=[the_choice],
        usage=usage_to_openai(message.get("usage")),
    )


def error_from_body(status: int, data: bytes, retry_after: float | None) -> UpstreamError:
    """An error response (or an `error` stream event, status 0) -> UpstreamError. The
    envelope's `error.type` decides the kind; an overload is upstream status 529."""
    try:
        body = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return UpstreamError(
            f"The upstream provider returned HTTP {status}.",
            upstream_status=status,
            retry_after=retry_after,
        )
    raw_type = error.get("type")
    err_type = raw_type if isinstance(raw_type, str) else "api_error"
    mapped_status, kind = ERROR_TYPES.get(err_type, (500, "upstream_error"))
    if status in (0, 200) or err_type == "overloaded_error":
        status = mapped_status
    raw_message = error.get("message")
    message = raw_message if isinstance(raw_message, str) else err_type
    return UpstreamError(
        f"Upstream error: {safe_message(message)}",
        upstream_status=status,
        kind=kind,
        retry_after=retry_after,
    )

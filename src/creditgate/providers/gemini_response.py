"""Gemini `GenerateContentResponse`, usage and Google RPC errors -> canonical.

Gemini reports `STOP` even when the model called functions, so the finish reason becomes
`tool_calls` whenever a candidate holds a `functionCall`. `candidatesTokenCount` excludes
thinking tokens, so OpenAI's `completion_tokens` is candidates + thoughts. A prompt blocked
before generation has no candidates at all; it becomes one empty `content_filter` choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from creditgate.canonical import JSON, Usage
from creditgate.errors import UpstreamError
from creditgate.providers.base import safe_message
from creditgate.providers.gemini_tool_ids import encode_call_id
from creditgate.providers.openai_shapes import assistant_message, choice, completion, dumps, tool_call

_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
        "NO_IMAGE",
    }
)

# Google RPC status -> kind (and the HTTP status for errors that arrive inside a stream).
RPC_STATUS = {
    "INVALID_ARGUMENT": (400, "invalid_request"),
    "FAILED_PRECONDITION": (400, "invalid_request"),
    "OUT_OF_RANGE": (400, "invalid_request"),
    "UNAUTHENTICATED": (401, "authentication"),
    "PERMISSION_DENIED": (403, "permission"),
    "NOT_FOUND": (404, "not_found"),
    "RESOURCE_EXHAUSTED": (429, "rate_limited"),
    "CANCELLED": (499, "cancelled"),
    "INTERNAL": (500, "upstream_error"),
    "UNKNOWN": (500, "upstream_error"),
    "UNAVAILABLE": (503, "overloaded"),
    "DEADLINE_EXCEEDED": (504, "timeout"),
}


def finish_reason(reason: Any, has_calls: bool) -> str:
    if reason in _FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if has_calls else "stop"


@dataclass(slots=True)
class CandidateParts:
    """The parts of one candidate (or one stream chunk of it), sorted by what they become."""

    text: list[str] = field(default_factory=list)
    thoughts: list[str] = field(default_factory=list)
    calls: list[JSON] = field(default_factory=list)


def read_parts(candidate: JSON, salt: str) -> CandidateParts:
    out = CandidateParts()
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    for k, part in enumerate(parts or []):
        if not isinstance(part, dict):
            continue
        text = part.get("text")
        if isinstance(text, str):
            (out.thoughts if part.get("thought") is True else out.text).append(text)
        call = part.get("functionCall")
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            arguments = dumps(call.get("args") or {})
            upstream_id = call.get("id") if isinstance(call.get("id"), str) else None
            signature = part.get("thoughtSignature")
            call_id = encode_call_id(
                f"{salt}:{k}",
                call["name"],
                arguments,
                upstream_id,
                signature if isinstance(signature, str) else None,
            )
            out.calls.append(tool_call(call_id, call["name"], arguments))
    return out


def usage_to_openai(metadata: Any) -> JSON:
    m = metadata if isinstance(metadata, dict) else {}
    prompt, tool_prompt, cached, candidates, thoughts = (
        _int(m.get(k))
        for k in (
            "promptTokenCount",
            "toolUsePromptTokenCount",
            "cachedContentTokenCount",
            "candidatesTokenCount",
            "thoughtsTokenCount",
        )
    )
    return Usage(
        prompt_tokens=prompt + tool_prompt,
        completion_tokens=candidates + thoughts,
        cached_tokens=cached,
        reasoning_tokens=thoughts,
    ).to_openai()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def candidate_index(candidate: JSON, position: int) -> int:
    index = candidate.get("index")
    return index if isinstance(index, int) else position


def response_id(response: JSON) -> str:
    rid = response.get("responseId")
    return f"chatcmpl-{rid}" if isinstance(rid, str) and rid else "chatcmpl-gemini"


def response_to_completion(response: JSON, fallback_model: str) -> JSON:
    rid = response_id(response)
    choices: list[JSON] = []
    for position, candidate in enumerate(response.get("candidates") or []):
        if not isinstance(candidate, dict):
            continue
        index = candidate_index(candidate, position)
        parts = read_parts(candidate, f"{rid}:{index}")
        message = assistant_message(
            "".join(parts.text) if parts.text or not parts.calls else None,
            parts.calls,
            "".join(parts.thoughts) or None,
        )
        choices.append(choice(index, message, finish_reason(candidate.get("finishReason"), bool(parts.calls))))
    if not choices:
        # No candidates: the prompt was blocked (promptFeedback.blockReason) or nothing came.
        choices.append(choice(0, assistant_message("", []), "content_filter"))
    model = response.get("modelVersion")
    return completion(
        id=rid,
        model=model if isinstance(model, str) and model else fallback_model,
        choices=choices,
        usage=usage_to_openai(response.get("usageMetadata")),
    )


def error_from_body(status: int, data: bytes | Any, retry_after: float | None) -> UpstreamError:
    """A Google RPC error body (`{"error":{code,message,status,details}}`, possibly inside a
    JSON array) -> UpstreamError. `status` 0 means it came inside a stream."""
    body = data
    if isinstance(data, bytes):
        try:
            body = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            body = None
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return UpstreamError(
            f"The upstream provider returned HTTP {status}.", upstream_status=status, retry_after=retry_after
        )
    raw_rpc = error.get("status")
    rpc = raw_rpc if isinstance(raw_rpc, str) else ""
    mapped, kind = RPC_STATUS.get(rpc, (500, "upstream_error"))
    if not status:
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else mapped
    raw_details = error.get("details")
    details: list[Any] = raw_details if isinstance(raw_details, list) else []
    if any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details):
        # Google answers a bad key with 400; it is the gateway's key, not the client's request.
        status, kind = 401, "authentication"
    if retry_after is None:
        retry_after = _retry_delay(details)
    raw_message = error.get("message")
    message = raw_message if isinstance(raw_message, str) and raw_message else rpc or "error"
    return UpstreamError(
        f"Upstream error: {safe_message(message)}", upstream_status=status, kind=kind, retry_after=retry_after
    )


def _retry_delay(details: list[Any]) -> float | None:
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(detail.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    return None

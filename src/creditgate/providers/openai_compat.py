"""OpenAI-compatible upstreams (OpenAI, DeepSeek, Mistral, Qwen, Moonshot, vLLM, Ollama...).

The canonical request *is* an OpenAI body, so the request passes through: only the model
name is swapped, gateway-only fields are dropped, the output is capped at what the hold
covers (`max_completion_tokens`), streams always ask for usage, and a few
vendor quirks (PROTOCOLS.md §H) are applied when the provider's config names them:

- `developer_as_system`: `developer` messages become `system`;
- `max_tokens_only`: `max_completion_tokens` is sent as `max_tokens`;
- `no_logprobs`: `logprobs`/`top_logprobs` are dropped (DeepSeek reasoning models);
- `short_tool_ids`: tool-call ids are rewritten to 9 alphanumerics (Mistral).

Vendor extensions in responses (DeepSeek's `reasoning_content`) pass through untouched.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from creditgate.canonical import JSON, ChatRequest
from creditgate.catalog import Deployment
from creditgate.errors import UpstreamError
from creditgate.providers.base import UpstreamRequest, safe_message

GATEWAY_FIELDS = ("models", "cache", "no_cache")


def _short_id(call_id: str) -> str:
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


def _cap_output(body: JSON, cap: int | None) -> None:
    """Hold the upstream to the output cap the hold was quoted on: lower a maximum above it,
    and ask for it when the client asked for none."""
    if not cap:
        return
    sent = [key for key in ("max_completion_tokens", "max_tokens") if body.get(key) is not None]
    for key in sent:
        if isinstance(body[key], int) and body[key] > cap:
            body[key] = cap
    if not sent:
        body["max_completion_tokens"] = cap


def _apply_quirks(body: JSON, quirks: frozenset[str]) -> None:
    if "developer_as_system" in quirks:
        body["messages"] = [
            {**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m
            for m in body["messages"]
        ]
    if "max_tokens_only" in quirks and "max_completion_tokens" in body:
        value = body.pop("max_completion_tokens")
        body.setdefault("max_tokens", value)
    if "no_logprobs" in quirks:
        body.pop("logprobs", None)
        body.pop("top_logprobs", None)
    if "short_tool_ids" in quirks:
        messages = []
        for m in body["messages"]:
            if isinstance(m, dict) and m.get("tool_calls"):
                m = {**m, "tool_calls": [{**c, "id": _short_id(str(c.get("id")))} for c in m["tool_calls"]]}
            elif isinstance(m, dict) and m.get("role") == "tool" and "tool_call_id" in m:
                m = {**m, "tool_call_id": _short_id(str(m["tool_call_id"]))}
            messages.append(m)
        body["messages"] = messages


class OpenAIProvider:
    type = "openai"

    def __init__(self) -> None:
        self._headers: dict[str, dict[str, str]] = {}

    def _headers_for(self, deployment: Deployment) -> dict[str, str]:
        provider = deployment.provider
        headers = self._headers.get(provider.id)
        if headers is None:
            headers = {"content-type": "application/json", **provider.headers}
            if provider.api_key:
                headers["authorization"] = f"Bearer {provider.api_key}"
            self._headers[provider.id] = headers
        return headers

    def build_request(self, request: ChatRequest, deployment: Deployment) -> UpstreamRequest:
        body = dict(request.body)
        for name in GATEWAY_FIELDS:
            body.pop(name, None)
        body["model"] = deployment.upstream_model
        _cap_output(body, request.max_output_tokens)
        if request.stream:
            body["stream"] = True
            options = body.get("stream_options")
            body["stream_options"] = (
                {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
            )
        if deployment.provider.quirks:
            _apply_quirks(body, deployment.provider.quirks)
        return UpstreamRequest(
            url=deployment.provider.base_url + "/chat/completions",
            headers=self._headers_for(deployment),
            body=orjson.dumps(body),
        )

    def parse_response(self, data: bytes, deployment: Deployment) -> JSON:
        try:
            completion = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError("the upstream returned a body that is not JSON", upstream_status=502) from None
        if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
            raise UpstreamError("the upstream returned an unexpected response shape", upstream_status=502)
        for choice in completion["choices"]:
            if isinstance(choice, dict):
                choice.setdefault("logprobs", None)
                message = choice.get("message")
                if isinstance(message, dict):
                    message.setdefault("refusal", None)
                    message.setdefault("content", None)
        return completion

    def stream_decoder(self, request: ChatRequest, deployment: Deployment) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()

    def parse_error(self, status: int, data: bytes, retry_after: float | None) -> UpstreamError:
        message = _error_message(data) or f"HTTP {status}"
        return UpstreamError(
            f"upstream error {status}: {safe_message(message)}",
            upstream_status=status,
            kind=f"http_{status}",
            retry_after=retry_after,
        )


def _error_message(data: bytes) -> str | None:
    try:
        body: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data[:200].decode("utf-8", "replace") if data else None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return None


class OpenAIStreamDecoder:
    """`data: {...}` chunks pass through as dicts; `[DONE]` ends the stream; a chunk with a
    top-level `error` is an error inside the stream."""

    __slots__ = ("done", "finished")

    def __init__(self) -> None:
        self.done = False
        self.finished = False  # some choice reported a finish_reason

    def feed(self, event: str | None, data: bytes) -> list[JSON]:
        if data[:6] == b"[DONE]":
            self.done = True
            return []
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                "the upstream sent a stream event that is not JSON", upstream_status=0, kind="bad_stream"
            ) from None
        if not isinstance(chunk, dict):
            return []
        if chunk.get("error"):
            err = chunk["error"]
            msg = err.get("message") if isinstance(err, dict) else str(err)
            raise UpstreamError(
                f"the upstream failed mid-stream: {safe_message(str(msg))}", upstream_status=0, kind="stream_error"
            )
        if not self.finished:
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    self.finished = True
        return [chunk]

    def finish(self) -> list[JSON]:
        if not self.done and not self.finished:
            raise UpstreamError(
                "the upstream stream was cut off before it finished", upstream_status=0, kind="stream_cut"
            )
        return []

"""The OpenAI Chat Completions dialect. The canonical model is OpenAI-shaped, so parsing is
validation plus bookkeeping (sizes for the hold, images, fallbacks) and rendering is nearly
the identity."""

from __future__ import annotations

from typing import Any

import orjson

from creditgate.canonical import JSON, ChatRequest
from creditgate.errors import BadRequest, GatewayError, http_status
from creditgate.sse import DONE, data_event

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _int_field(body: JSON, name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"'{name}' must be an integer {bound}; got {value!r}", param=name)
    return value


def count_images(messages: list[Any]) -> int:
    images = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                    images += 1
    return images


def parse_chat(body: JSON) -> ChatRequest:
    """Validate an OpenAI chat request enough to route and bill it; everything else is the
    upstream's to judge, and unknown fields pass through."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: a model id from GET /v1/models", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array of {role, content} objects", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRequest(
                f"messages[{i}] must be an object whose 'role' is one of {', '.join(sorted(ROLES))}",
                param=f"messages[{i}].role",
            )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false", param="stream")
    n = _int_field(body, "n", 1, 128)
    max_out = _int_field(body, "max_completion_tokens", 1)
    if max_out is None:
        max_out = _int_field(body, "max_tokens", 1)
    options = body.get("stream_options")
    include_usage = bool(stream and isinstance(options, dict) and options.get("include_usage"))
    fallbacks = body.get("models")
    if fallbacks is not None and (
        not isinstance(fallbacks, list) or not all(isinstance(x, str) and x for x in fallbacks)
    ):
        raise BadRequest("'models' must be an array of model ids to fall back to, in order", param="models")
    cache = body.get("cache")
    no_cache = body.get("no_cache")
    request = ChatRequest(
        body=body,
        model=model,
        stream=bool(stream),
        include_usage=include_usage,
        fallbacks=[m for m in (fallbacks or []) if m != model],
        max_output_tokens=max_out,
        has_images=count_images(messages) > 0,
        cache_prompt=cache is True,
        no_cache=no_cache is True,
    )
    if n and n > 1:
        request.body["n"] = n
    return request


def error_type(err: GatewayError) -> str:
    """An upstream's client error is shown with the upstream's status, so its type says what
    that status means rather than `upstream_error`."""
    status = http_status(err)
    if status != err.status and 400 <= status < 500:
        return "not_found_error" if status == 404 else "invalid_request_error"
    return err.type


def error_body(err: GatewayError, request_id: str) -> JSON:
    return {"error": {"message": err.message, "type": error_type(err), "param": err.param, "code": err.code}}


class OpenAIStreamEncoder:
    __slots__ = ("include_usage",)

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage

    def chunk(self, chunk: JSON) -> bytes:
        return data_event(orjson.dumps(chunk))

    def end(self, usage_chunk: JSON) -> bytes:
        if self.include_usage:
            return data_event(orjson.dumps(usage_chunk)) + DONE
        return DONE

    def error(self, err: GatewayError, request_id: str) -> bytes:
        return data_event(orjson.dumps(error_body(err, request_id)))


class OpenAIDialect:
    name = "openai"

    def parse(self, body: JSON) -> ChatRequest:
        return parse_chat(body)

    def render(self, completion: JSON) -> JSON:
        return completion

    def encoder(self, request: ChatRequest) -> OpenAIStreamEncoder:
        return OpenAIStreamEncoder(request.include_usage)

    def error_body(self, err: GatewayError, request_id: str) -> JSON:
        return error_body(err, request_id)

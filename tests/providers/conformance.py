"""One conformance table for every provider.

Each `Case` states a behaviour once (text, streaming, tools, tool results, images, JSON
mode, each stop reason, usage with cached and reasoning tokens, errors before and after the
first byte) together with what each provider's upstream sends back, recorded in that
provider's wire format. `check(provider, case, schema_errors)` runs the provider's pure
transforms over the recording and asserts the canonical result; each provider's test
module parametrizes over `cases_for(its type)`. A provider joins by adding its recordings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from creditgate.canonical import JSON, ChatRequest, Usage
from creditgate.catalog import Deployment
from creditgate.config import ProviderConfig
from creditgate.errors import UpstreamError
from creditgate.providers.base import Provider
from creditgate.sse import SSEParser

SchemaErrors = Callable[[Any, str], list[str]]


@dataclass(frozen=True)
class Recording:
    """What one provider's upstream does for a case."""

    body: Any = None  # JSON body (2xx response or error body)
    events: tuple[tuple[str | None, Any], ...] = ()  # SSE events, in order
    status: int = 200
    sent: JSON | None = None  # a subset the built upstream request body must contain
    usage: dict[str, int] | None = None  # overrides Expect.usage for this provider
    failure_status: int | None = None  # overrides UpstreamFailure.upstream_status


@dataclass(frozen=True)
class UpstreamFailure:
    upstream_status: int
    kind: str
    retryable: bool
    after_first_byte: bool = False


@dataclass(frozen=True)
class Expect:
    text: str | None = ""
    reasoning: str = ""
    tool_calls: tuple[tuple[str, JSON], ...] = ()
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None


@dataclass(frozen=True)
class Case:
    name: str
    request: JSON
    recordings: dict[str, Recording]
    stream: bool = False
    expect: Expect | None = None
    failure: UpstreamFailure | None = None
    cache_prompt: bool = False


def deployment(provider_type: str, model: str = "up-model") -> Deployment:
    config = ProviderConfig(id="p", type=provider_type, base_url="https://upstream.example", api_key="secret-key")  # type: ignore[arg-type]
    return Deployment(key=f"p/{model}", provider=config, upstream_model=model, priority=0, weight=1)


def chat_request(case: Case) -> ChatRequest:
    return ChatRequest(body=case.request, model="catalog/model", stream=case.stream, cache_prompt=case.cache_prompt)


def sse_bytes(events: tuple[tuple[str | None, Any], ...]) -> bytes:
    out = b""
    for name, data in events:
        if name:
            out += b"event: " + name.encode() + b"\r\n"
        out += b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\r\n\r\n"
    return out


def is_subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and is_subset(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(map(is_subset, expected, actual))
    return bool(expected == actual)


@dataclass
class Outcome:
    text: str | None = None
    reasoning: str = ""
    tool_calls: list[tuple[str, JSON]] = field(default_factory=list)
    tool_ids: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None


def from_completion(completion: JSON) -> Outcome:
    message = completion["choices"][0]["message"]
    calls = message.get("tool_calls") or []
    return Outcome(
        text=message["content"],
        reasoning=message.get("reasoning_content") or "",
        tool_calls=[(c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in calls],
        tool_ids=[c["id"] for c in calls],
        finish_reason=completion["choices"][0]["finish_reason"],
        usage=Usage.from_openai(completion.get("usage")),
    )


def from_chunks(chunks: list[JSON]) -> Outcome:
    out = Outcome(text="")
    calls: dict[int, dict[str, str]] = {}
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant", "the first chunk carries the role"
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        if not chunk["choices"]:
            out.usage = Usage.from_openai(chunk["usage"])
            continue
        choice = chunk["choices"][0]
        delta = choice["delta"]
        out.text = (out.text or "") + (delta.get("content") or "")
        out.reasoning += delta.get("reasoning_content") or ""
        for call in delta.get("tool_calls") or []:
            slot = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            slot["id"] = call.get("id") or slot["id"]
            fn = call.get("function") or {}
            slot["name"] = fn.get("name") or slot["name"]
            slot["arguments"] += fn.get("arguments") or ""
        if choice["finish_reason"]:
            out.finish_reason = choice["finish_reason"]
    out.tool_calls = [(c["name"], orjson.loads(c["arguments"] or "{}")) for _, c in sorted(calls.items())]
    out.tool_ids = [c["id"] for _, c in sorted(calls.items())]
    return out


def decode_stream(provider: Provider, case: Case, recording: Recording, chunks: list[JSON]) -> list[JSON]:
    """Feeds the recorded SSE bytes through the real parser (in awkward 7-byte pieces, as a
    network would) and the provider's decoder, appending to `chunks`; `finish()` runs at EOF."""
    decoder = provider.stream_decoder(chat_request(case), deployment(provider.type))
    parser = SSEParser()
    raw = sse_bytes(recording.events)
    for i in range(0, len(raw), 7):
        for event in parser.feed(raw[i : i + 7]):
            chunks.extend(decoder.feed(event.event, event.data))
    for event in parser.close():
        chunks.extend(decoder.feed(event.event, event.data))
    chunks.extend(decoder.finish())
    return chunks


def check(provider: Provider, case: Case, schema_errors: SchemaErrors) -> None:
    recording = case.recordings[provider.type]
    built = provider.build_request(chat_request(case), deployment(provider.type))
    sent = orjson.loads(built.body)
    if recording.sent is not None:
        assert is_subset(recording.sent, sent), f"upstream request lacks {recording.sent!r}: {sent!r}"
    if case.failure is not None:
        _check_failure(provider, case, recording)
        return
    assert case.expect is not None
    if case.stream:
        chunks = decode_stream(provider, case, recording, [])
        for chunk in chunks:
            assert schema_errors(chunk, "openai:CreateChatCompletionStreamResponse") == []
        outcome = from_chunks(chunks)
    else:
        completion = provider.parse_response(orjson.dumps(recording.body), deployment(provider.type))
        assert schema_errors(completion, "openai:CreateChatCompletionResponse") == []
        outcome = from_completion(completion)
    expect = case.expect
    assert outcome.text == expect.text
    assert outcome.reasoning == expect.reasoning
    assert outcome.tool_calls == list(expect.tool_calls)
    assert len(set(outcome.tool_ids)) == len(outcome.tool_ids) and all(outcome.tool_ids)
    assert outcome.finish_reason == expect.finish_reason
    usage = recording.usage or expect.usage
    if usage is not None:
        assert outcome.usage is not None, "usage was reported upstream and must reach the gateway"
        for name, value in usage.items():
            assert getattr(outcome.usage, name) == value, name


def _check_failure(provider: Provider, case: Case, recording: Recording) -> None:
    failure = case.failure
    assert failure is not None
    if failure.after_first_byte:
        chunks: list[JSON] = []
        with pytest.raises(UpstreamError) as caught:
            decode_stream(provider, case, recording, chunks)
        assert chunks, "the failure comes after the first bytes reached the client"
        err = caught.value
    else:
        err = provider.parse_error(recording.status, orjson.dumps(recording.body), 2.0)
        assert err.retry_after == 2.0, "a Retry-After the upstream sent is kept"
    assert (err.upstream_status, err.kind, err.retryable) == (
        recording.failure_status or failure.upstream_status,
        failure.kind,
        failure.retryable,
    )
    assert "secret-key" not in err.message and "upstream.example" not in err.message


def cases_for(provider_type: str) -> list[Any]:
    from tests.providers.conformance_cases import CASES

    return [pytest.param(c, id=c.name) for c in CASES if provider_type in c.recordings]

"""Helpers for the end-to-end SDK tests: what the simulator received, and raw SSE parsing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
from openai.types.chat import ChatCompletionChunk


class Upstream:
    """The simulator's request log: clear it before a call, read what the gateway sent after."""

    def __init__(self, simulator: str) -> None:
        self.url = simulator

    def clear(self) -> None:
        assert httpx.delete(self.url + "/x/requests", timeout=10).status_code == 204

    def received(self) -> list[dict[str, Any]]:
        r = httpx.get(self.url + "/x/requests", params={"n": 50}, timeout=10)
        assert r.status_code == 200, r.text
        return list(r.json())

    def last(self, path_part: str = "") -> dict[str, Any]:
        """The most recent request whose path contains `path_part`."""
        for item in reversed(self.received()):
            if path_part in item["path"]:
                return dict(item)
        raise AssertionError(f"the upstream received no request on a path with {path_part!r}")


SchemaErrors = Callable[[Any, str], list[str]]

# Where each test model's upstream request arrives on the simulator, and the schema of that
# protocol's request (None for OpenAI-compatible upstreams: the body is passed through).
UPSTREAM: dict[str, tuple[str, str | None]] = {
    "test/echo": ("/chat/completions", None),
    "test/vision": ("/chat/completions", None),
    "test/claude": ("/v1/messages", "anthropic.MessageCreateParams"),
    "test/gemini": ("enerateContent", "gemini.GenerateContentRequest"),
}


def upstream_body(upstream: Upstream, model: str, schema_errors: SchemaErrors) -> dict[str, Any]:
    """What the gateway sent upstream for `model`, checked against that protocol's schema."""
    path, schema = UPSTREAM[model]
    body = dict(upstream.last(path)["body"])
    if schema is not None:
        assert schema_errors(body, schema) == [], body
    return body


def sse_events(raw: bytes) -> list[tuple[str | None, bytes]]:
    """Split an SSE body into (event name, data) pairs, in order."""
    events: list[tuple[str | None, bytes]] = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        name: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip())
        if data:
            events.append((name, b"\n".join(data)))
    return events


def openai_chunks(raw: bytes) -> tuple[list[dict[str, Any]], bool]:
    """The JSON chunks of an OpenAI stream, and whether it ended with `[DONE]`."""
    chunks: list[dict[str, Any]] = []
    done = False
    for _, data in sse_events(raw):
        if data == b"[DONE]":
            done = True
            continue
        assert not done, "data after [DONE]"
        chunks.append(orjson.loads(data))
    return chunks, done


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is `status` with an OpenAI error envelope (all four keys) and a request id."""
    assert response.status_code == status, response.text
    assert response.headers.get("x-request-id"), "no x-request-id header"
    body = response.json()
    assert set(body) >= {"error"}, body
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    return dict(error)


def assembled_tool_calls(chunks: list[ChatCompletionChunk]) -> dict[int, dict[str, str]]:
    """Tool-call deltas put together by index, the way a client does."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                if delta.id:
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
    return calls

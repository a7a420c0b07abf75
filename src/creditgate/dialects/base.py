"""The dialect interface: one ingress wire format <-> the canonical model.

A dialect parses a request body into a `ChatRequest`, renders a canonical `chat.completion`
dict into its own response body, encodes a canonical chunk stream into its own SSE, and
renders errors in its own envelope. The pipeline does everything else.
"""

from __future__ import annotations

from typing import Protocol

from creditgate.canonical import JSON, ChatRequest
from creditgate.errors import GatewayError


class StreamEncoder(Protocol):
    def chunk(self, chunk: JSON) -> bytes:
        """One canonical chunk (without usage) to this dialect's SSE bytes (maybe b"")."""
        ...

    def end(self, usage_chunk: JSON) -> bytes:
        """The stream ended well. `usage_chunk` is a canonical chunk with `choices: []` and
        the final `usage` (including `cost`); the encoder decides whether the client sees
        it, and writes the dialect's terminator."""
        ...

    def error(self, err: GatewayError, request_id: str) -> bytes:
        """An error after the stream started, in this dialect's in-stream form. Nothing is
        written after it."""
        ...


class Dialect(Protocol):
    name: str

    def parse(self, body: JSON) -> ChatRequest:
        """Validate and convert a decoded request body; raise BadRequest naming the field."""
        ...

    def render(self, completion: JSON) -> JSON:
        """A canonical `chat.completion` (with `usage.cost`) to this dialect's response."""
        ...

    def encoder(self, request: ChatRequest) -> StreamEncoder: ...

    def error_body(self, err: GatewayError, request_id: str) -> JSON: ...

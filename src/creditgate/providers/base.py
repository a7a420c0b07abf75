"""The provider interface: pure transforms between the canonical model and one upstream
wire protocol. No I/O happens here; `upstream.py` sends what `build_request` builds.

Canonical = OpenAI Chat Completions shapes (see `canonical.py`):
- `build_request` gets the canonical request and the deployment and returns the URL, headers
  and body bytes to POST;
- `parse_response` turns a 2xx body into a `chat.completion` dict with `usage` in OpenAI's
  shape (prompt_tokens including cached and cache-write tokens);
- `stream_decoder` returns a fresh stateful object that turns upstream SSE events into
  `chat.completion.chunk` dicts; the last chunk it yields carries `usage` (with
  `choices: []`) whenever the upstream reported usage;
- `parse_error` turns an error status and body into an `UpstreamError` whose message is
  safe to show a client (no upstream hostnames or keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from creditgate.canonical import JSON, ChatRequest
from creditgate.catalog import Deployment
from creditgate.errors import UpstreamError


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes


class StreamDecoder(Protocol):
    def feed(self, event: str | None, data: bytes) -> list[JSON]:
        """One SSE event in, zero or more canonical chunks out. Raises UpstreamError for an
        error event inside the stream."""
        ...

    def finish(self) -> list[JSON]:
        """The upstream closed the connection. Returns any last chunks, or raises
        UpstreamError(upstream_status=0, kind="stream_cut") when the stream was cut before
        its protocol's proper end."""
        ...


class Provider(Protocol):
    type: str

    def build_request(self, request: ChatRequest, deployment: Deployment) -> UpstreamRequest: ...

    def parse_response(self, data: bytes, deployment: Deployment) -> JSON: ...

    def stream_decoder(self, request: ChatRequest, deployment: Deployment) -> StreamDecoder: ...

    def parse_error(self, status: int, data: bytes, retry_after: float | None) -> UpstreamError: ...


def safe_message(text: str, limit: int = 300) -> str:
    """An upstream's error message made fit for a client: URLs and key-like strings removed,
    length capped."""
    import re

    text = re.sub(r"https?://\S+", "<upstream>", text)
    text = re.sub(r"\b(sk|key|AIza)[-_A-Za-z0-9]{8,}", "<redacted>", text)
    return text[:limit]

"""The Anthropic Messages ingress dialect (`POST /v1/messages`).

Parsing lives in `anthropic_parse`, response and error shapes in `anthropic_render`, and the
SSE encoder in `anthropic_stream`; this class wires them to the `Dialect` interface.
"""

from __future__ import annotations

from creditgate.canonical import JSON, ChatRequest
from creditgate.dialects.anthropic_parse import parse_request
from creditgate.dialects.anthropic_render import error_payload, render_message
from creditgate.dialects.anthropic_stream import AnthropicStreamEncoder
from creditgate.errors import GatewayError


class AnthropicDialect:
    name = "anthropic"

    def parse(self, body: JSON) -> ChatRequest:
        return parse_request(body)

    def render(self, completion: JSON) -> JSON:
        return render_message(completion)

    def encoder(self, request: ChatRequest) -> AnthropicStreamEncoder:
        return AnthropicStreamEncoder(request.model)

    def error_body(self, err: GatewayError, request_id: str) -> JSON:
        return error_payload(err, request_id)

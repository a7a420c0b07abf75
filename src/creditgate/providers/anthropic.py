"""The Anthropic Messages provider: `POST {base_url}/v1/messages`.

The translation lives in three modules named after their direction: `anthropic_request`
(canonical -> Anthropic body), `anthropic_response` (body, usage, errors -> canonical) and
`anthropic_stream` (SSE -> chunks). This class only wires them to the `Provider` interface.
"""

from __future__ import annotations

import orjson

from creditgate.canonical import JSON, ChatRequest
from creditgate.catalog import Deployment
from creditgate.config import ProviderConfig
from creditgate.errors import UpstreamError
from creditgate.providers.anthropic_request import build_body
from creditgate.providers.anthropic_response import error_from_body, message_to_completion
from creditgate.providers.anthropic_stream import AnthropicStreamDecoder
from creditgate.providers.base import UpstreamRequest

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider:
    type = "anthropic"

    def __init__(self, config: ProviderConfig | None = None) -> None:
        # Stateless: everything per-deployment comes with the Deployment.
        self.config = config

    def build_request(self, request: ChatRequest, deployment: Deployment) -> UpstreamRequest:
        provider = deployment.provider
        headers = {
            "content-type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            "x-api-key": provider.api_key,
            **provider.headers,
        }
        if request.stream:
            headers["accept"] = "text/event-stream"
        body = build_body(request, deployment.upstream_model)
        return UpstreamRequest(f"{provider.base_url}/v1/messages", headers, orjson.dumps(body))

    def parse_response(self, data: bytes, deployment: Deployment) -> JSON:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                "The upstream provider returned a malformed response.",
                upstream_status=502,
                kind="bad_response",
            ) from exc
        if not isinstance(message, dict) or message.get("type") == "error":
            raise error_from_body(502, data, None)
        return message_to_completion(message, deployment.upstream_model)

    def stream_decoder(self, request: ChatRequest, deployment: Deployment) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(deployment.upstream_model)

    def parse_error(self, status: int, data: bytes, retry_after: float | None) -> UpstreamError:
        return error_from_body(status, data, retry_after)

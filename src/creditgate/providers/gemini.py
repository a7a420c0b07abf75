"""The Gemini API provider: `POST {base_url}/v1beta/models/{model}:generateContent`, or
`:streamGenerateContent?alt=sse` when streaming, authenticated with `x-goog-api-key`.

The translation lives in `gemini_request` (canonical -> Gemini body), `gemini_response`
(body, usage, errors -> canonical), `gemini_stream` (SSE -> chunks) and `gemini_tool_ids`
(how call ids and thought signatures ride inside OpenAI tool-call ids).
"""

from __future__ import annotations

from urllib.parse import quote

import orjson

from creditgate.canonical import JSON, ChatRequest
from creditgate.catalog import Deployment
from creditgate.config import ProviderConfig
from creditgate.errors import UpstreamError
from creditgate.providers.base import UpstreamRequest
from creditgate.providers.gemini_request import build_body
from creditgate.providers.gemini_response import error_from_body, response_to_completion
from creditgate.providers.gemini_stream import GeminiStreamDecoder


class GeminiProvider:
    type = "gemini"

    def __init__(self, config: ProviderConfig | None = None) -> None:
        # Stateless: everything per-deployment comes with the Deployment.
        self.config = config

    def build_request(self, request: ChatRequest, deployment: Deployment) -> UpstreamRequest:
        provider = deployment.provider
        model = quote(deployment.upstream_model, safe="-._~")
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        headers = {"content-type": "application/json", "x-goog-api-key": provider.api_key, **provider.headers}
        if request.stream:
            headers["accept"] = "text/event-stream"
        url = f"{provider.base_url}/v1beta/models/{model}:{method}"
        return UpstreamRequest(url, headers, orjson.dumps(build_body(request)))

    def parse_response(self, data: bytes, deployment: Deployment) -> JSON:
        try:
            response = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                "The upstream provider returned a malformed response.",
                upstream_status=502,
                kind="bad_response",
            ) from exc
        if not isinstance(response, dict) or "error" in response:
            raise error_from_body(502, response, None)
        return response_to_completion(response, deployment.upstream_model)

    def stream_decoder(self, request: ChatRequest, deployment: Deployment) -> GeminiStreamDecoder:
        return GeminiStreamDecoder(deployment.upstream_model)

    def parse_error(self, status: int, data: bytes, retry_after: float | None) -> UpstreamError:
        return error_from_body(status, data, retry_after)

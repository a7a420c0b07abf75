"""Gemini `streamGenerateContent?alt=sse` -> canonical `chat.completion.chunk` dicts.

Each event is a whole `GenerateContentResponse` holding only new parts. Function calls arrive
whole, so each becomes one complete tool-call delta. There is no end-of-stream event: the
stream is complete when every candidate seen has reported a `finishReason`, and the usage
(the last `usageMetadata` seen) is emitted when the connection closes.
"""

from __future__ import annotations

from typing import Any

import orjson

from creditgate.canonical import JSON
from creditgate.errors import UpstreamError
from creditgate.providers.gemini_response import (
    candidate_index,
    error_from_body,
    finish_reason,
    read_parts,
    usage_to_openai,
)
from creditgate.providers.openai_shapes import ChunkMaker


class GeminiStreamDecoder:
    def __init__(self, model: str) -> None:
        self._chunks = ChunkMaker("chatcmpl-gemini", model)
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._tool_counts: dict[int, int] = {}
        self._usage: Any = None
        self._events = 0
        self._identified = False

    def feed(self, event: str | None, data: bytes) -> list[JSON]:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return []
        responses = payload if isinstance(payload, list) else [payload]
        out: list[JSON] = []
        for response in responses:
            if isinstance(response, dict):
                out.extend(self._response(response))
        return out

    def finish(self) -> list[JSON]:
        if not self._finished or not self._started <= self._finished:
            raise UpstreamError(
                "The upstream stream ended before the response was complete.",
                upstream_status=0,
                kind="stream_cut",
            )
        if self._usage is None:
            return []
        return [self._chunks.usage(usage_to_openai(self._usage))]

    def _response(self, response: JSON) -> list[JSON]:
        if "error" in response:
            raise error_from_body(0, response, None)
        self._events += 1
        if not self._identified:
            self._identified = True
            rid, model = response.get("responseId"), response.get("modelVersion")
            if isinstance(rid, str) and rid:
                self._chunks.id = f"chatcmpl-{rid}"
            if isinstance(model, str) and model:
                self._chunks.model = model
        if isinstance(response.get("usageMetadata"), dict):
            self._usage = response["usageMetadata"]
        out: list[JSON] = []
        candidates = [c for c in response.get("candidates") or [] if isinstance(c, dict)]
        for position, candidate in enumerate(candidates):
            out.extend(self._candidate(candidate_index(candidate, position), candidate))
        feedback = response.get("promptFeedback")
        if not candidates and isinstance(feedback, dict) and feedback.get("blockReason"):
            out.extend(self._start(0))
            if 0 not in self._finished:
                self._finished.add(0)
                out.append(self._chunks.delta({}, 0, "content_filter"))
        return out

    def _start(self, index: int) -> list[JSON]:
        if index in self._started:
            return []
        self._started.add(index)
        return [self._chunks.delta({"role": "assistant", "content": ""}, index)]

    def _candidate(self, index: int, candidate: JSON) -> list[JSON]:
        out = self._start(index)
        parts = read_parts(candidate, f"{self._chunks.id}:{index}:{self._events}")
        if parts.thoughts:
            out.append(self._chunks.delta({"reasoning_content": "".join(parts.thoughts)}, index))
        if parts.text and "".join(parts.text):
            out.append(self._chunks.delta({"content": "".join(parts.text)}, index))
        for call in parts.calls:
            tool_index = self._tool_counts.get(index, 0)
            self._tool_counts[index] = tool_index + 1
            out.append(self._chunks.delta({"tool_calls": [{"index": tool_index, **call}]}, index))
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason and index not in self._finished:
            self._finished.add(index)
            has_calls = self._tool_counts.get(index, 0) > 0
            out.append(self._chunks.delta({}, index, finish_reason(reason, has_calls)))
        return out

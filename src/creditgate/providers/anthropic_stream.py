"""Anthropic Messages SSE -> canonical `chat.completion.chunk` dicts.

Anthropic numbers content blocks across text, thinking and tool use; OpenAI numbers only the
tool calls. So the decoder keeps, per block index, what the block is and which tool-call
index it became. `message_delta.usage` is cumulative, so the last value wins. The stream is
complete only at `message_stop`; EOF before it is a cut.
"""

from __future__ import annotations

from typing import Any

import orjson

from creditgate.canonical import JSON
from creditgate.errors import UpstreamError
from creditgate.providers.anthropic_request import JSON_TOOL_NAME
from creditgate.providers.anthropic_response import error_from_body, finish_reason, usage_to_openai
from creditgate.providers.openai_shapes import ChunkMaker

_TEXT, _TOOL, _JSON_TOOL, _THINKING, _OTHER = range(5)


class AnthropicStreamDecoder:
    def __init__(self, model: str) -> None:
        self._chunks = ChunkMaker("msg_unknown", model)
        self._blocks: dict[int, tuple[int, int]] = {}  # block index -> (kind, tool-call index)
        self._tool_count = 0
        self._usage: dict[str, Any] = {}
        self._json_mode = False
        self._finished = False
        self._stopped = False

    def feed(self, event: str | None, data: bytes) -> list[JSON]:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(payload, dict):
            return []
        kind = event or payload.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        return handler(self, payload) if handler else []

    def finish(self) -> list[JSON]:
        if not self._stopped:
            raise UpstreamError(
                "The upstream stream ended before the message was complete.",
                upstream_status=0,
                kind="stream_cut",
            )
        return []

    # -- events ---------------------------------------------------------------------------

    def _message_start(self, payload: JSON) -> list[JSON]:
        message = payload.get("message")
        if not isinstance(message, dict):
            message = {}
        if isinstance(message.get("id"), str):
            self._chunks.id = message["id"]
        if isinstance(message.get("model"), str):
            self._chunks.model = message["model"]
        self._merge_usage(message.get("usage"))
        return [self._chunks.delta({"role": "assistant", "content": ""})]

    def _block_start(self, payload: JSON) -> list[JSON]:
        index = payload.get("index")
        block = payload.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return []
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = (_TEXT, -1)
            text = block.get("text")
            return [self._chunks.delta({"content": text})] if isinstance(text, str) and text else []
        if kind == "thinking":
            self._blocks[index] = (_THINKING, -1)
            return []
        if kind == "tool_use" and block.get("name") == JSON_TOOL_NAME:
            self._blocks[index] = (_JSON_TOOL, -1)
            self._json_mode = True
            return []
        if kind == "tool_use":
            tool_index = self._tool_count
            self._tool_count += 1
            self._blocks[index] = (_TOOL, tool_index)
            call = {
                "index": tool_index,
                "id": str(block.get("id", "")),
                "type": "function",
                "function": {"name": str(block.get("name", "")), "arguments": ""},
            }
            return [self._chunks.delta({"tool_calls": [call]})]
        self._blocks[index] = (_OTHER, -1)
        return []

    def _block_delta(self, payload: JSON) -> list[JSON]:
        delta = payload.get("delta")
        index = payload.get("index")
        if not isinstance(delta, dict) or not isinstance(index, int):
            return []
        kind, tool_index = self._blocks.get(index, (_OTHER, -1))
        delta_type = delta.get("type")
        if delta_type == "text_delta" and isinstance(delta.get("text"), str):
            return [self._chunks.delta({"content": delta["text"]})]
        if delta_type == "thinking_delta" and isinstance(delta.get("thinking"), str):
            return [self._chunks.delta({"reasoning_content": delta["thinking"]})]
        if delta_type == "input_json_delta":
            fragment = delta.get("partial_json")
            if not isinstance(fragment, str) or not fragment:
                return []
            if kind == _JSON_TOOL:
                return [self._chunks.delta({"content": fragment})]
            if kind == _TOOL:
                call = {"index": tool_index, "function": {"arguments": fragment}}
                return [self._chunks.delta({"tool_calls": [call]})]
        return []

    def _message_delta(self, payload: JSON) -> list[JSON]:
        self._merge_usage(payload.get("usage"))
        delta = payload.get("delta")
        stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if stop_reason is None or self._finished:
            return []
        self._finished = True
        return [self._chunks.delta({}, finish_reason=finish_reason(stop_reason, self._json_mode))]

    def _message_stop(self, payload: JSON) -> list[JSON]:
        self._stopped = True
        out = []
        if not self._finished:
            self._finished = True
            out.append(self._chunks.delta({}, finish_reason="stop"))
        if self._usage:
            out.append(self._chunks.usage(usage_to_openai(self._usage)))
        return out

    def _error(self, payload: JSON) -> list[JSON]:
        raise error_from_body(0, orjson.dumps(payload), None)

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if isinstance(v, int)})


_HANDLERS = {
    "message_start": AnthropicStreamDecoder._message_start,
    "content_block_start": AnthropicStreamDecoder._block_start,
    "content_block_delta": AnthropicStreamDecoder._block_delta,
    "message_delta": AnthropicStreamDecoder._message_delta,
    "message_stop": AnthropicStreamDecoder._message_stop,
    "error": AnthropicStreamDecoder._error,
}

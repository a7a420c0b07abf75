"""Canonical chunk stream -> Anthropic Messages SSE.

The Anthropic SDKs need an `event:` line and a matching `type` in every payload,
`message_start` first, and a `content_block_start` before each block's deltas
(PROTOCOLS.md §D.4, §G). OpenAI streams text and tool calls without block boundaries, so
the encoder opens a block when the kind of content changes and closes the previous one.
Usage arrives only at the end, so `message_start` reports zeros and `message_delta` carries
the cumulative totals (which the SDK's accumulator takes as final). Never `[DONE]`.
"""

from __future__ import annotations

from typing import Any

import orjson

from creditgate.canonical import JSON
from creditgate.dialects.anthropic_render import anthropic_usage, error_payload, message_id, stop_reason
from creditgate.errors import GatewayError
from creditgate.sse import named_event


def _event(payload: JSON) -> bytes:
    return named_event(payload["type"], orjson.dumps(payload))


class AnthropicStreamEncoder:
    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._open: int | None = None  # index of the open content block
        self._open_is_text = False
        self._next_block = 0
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool-call index -> block index
        self._finish_reason: str | None = None
        self._stop_sequence: str | None = None

    def chunk(self, chunk: JSON) -> bytes:
        out = [self._start(chunk)]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Anthropic has one answer per message
            delta = choice.get("delta")
            if isinstance(delta, dict):
                out.append(self._text(delta.get("content")))
                for call in delta.get("tool_calls") or []:
                    if isinstance(call, dict):
                        out.append(self._tool_call(call))
            if isinstance(choice.get("finish_reason"), str):
                self._finish_reason = choice["finish_reason"]
                if isinstance(choice.get("stop_sequence"), str):
                    self._stop_sequence = choice["stop_sequence"]
        return b"".join(out)

    def end(self, usage_chunk: JSON) -> bytes:
        out = [self._start(usage_chunk), self._close()]
        out.append(
            _event(
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": stop_reason(self._finish_reason, self._stop_sequence),
                        "stop_sequence": self._stop_sequence,
                    },
                    "usage": anthropic_usage(usage_chunk.get("usage")),
                }
            )
        )
        out.append(_event({"type": "message_stop"}))
        return b"".join(out)

    def error(self, err: GatewayError, request_id: str) -> bytes:
        return _event(error_payload(err, request_id))

    # -- blocks ---------------------------------------------------------------------------

    def _start(self, chunk: JSON) -> bytes:
        if self._started:
            return b""
        self._started = True
        model = chunk.get("model") if isinstance(chunk.get("model"), str) else self._model
        message: JSON = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": model or self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event({"type": "message_start", "message": message}) + _event({"type": "ping"})

    def _open_block(self, block: JSON) -> tuple[bytes, int]:
        closed = self._close()
        index = self._next_block
        self._next_block += 1
        self._open = index
        return closed + _event({"type": "content_block_start", "index": index, "content_block": block}), index

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open, self._open_is_text = self._open, None, False
        return _event({"type": "content_block_stop", "index": index})

    def _text(self, text: Any) -> bytes:
        if not isinstance(text, str) or not text:
            return b""
        opened = b""
        if not self._open_is_text:
            opened, _ = self._open_block({"type": "text", "text": ""})
            self._open_is_text = True
        delta = {
            "type": "content_block_delta",
            "index": self._open,
            "delta": {"type": "text_delta", "text": text},
        }
        return opened + _event(delta)

    def _tool_call(self, call: JSON) -> bytes:
        raw_index, raw_fn = call.get("index"), call.get("function")
        tool_index = raw_index if isinstance(raw_index, int) else 0
        fn: JSON = raw_fn if isinstance(raw_fn, dict) else {}
        opened = b""
        if tool_index not in self._tool_blocks:
            block = {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{self._next_block}"),
                "name": str(fn.get("name") or ""),
                "input": {},
            }
            opened, self._tool_blocks[tool_index] = self._open_block(block)
        arguments = fn.get("arguments")
        if not isinstance(arguments, str) or not arguments:
            return opened
        delta = {
            "type": "content_block_delta",
            "index": self._tool_blocks[tool_index],
            "delta": {"type": "input_json_delta", "partial_json": arguments},
        }
        return opened + _event(delta)

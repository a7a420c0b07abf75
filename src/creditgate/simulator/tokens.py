"""The simulator's token arithmetic, simple enough that a test can reproduce every number.

Counting rules (the same for all three protocols):

* ``count_tokens(text)`` is the number of matches of the regex ``\\w+|[^\\w\\s]``: each run of
  word characters is one token, each other non-space character is one token, whitespace is free.
* ``value_tokens(v)`` counts a JSON value: strings by ``count_tokens``, objects as the sum over
  their keys and values, arrays as the sum of their items, and 1 for each number, bool or null.
* An attachment (image, audio, file, document) costs ``min(85, len(reference))`` tokens, where
  the reference is its URL, base64 data or file id (UTF-8 bytes).
* Prompt tokens = 3 + the sum over messages of (4 + the tokens of the message's parts) +
  ``value_tokens(tool definitions)``. A system prompt that is separate from the messages
  (Anthropic ``system``, Gemini ``systemInstruction``) counts as one more message.

Why these rules: every token consumes at least one byte of the JSON that carried it, and the
per-message overheads (4 and 3) are smaller than the JSON punctuation around each message. So
the prompt count never exceeds the UTF-8 length of the request body, which is the bound the
gateway's credit hold relies on.

Completion tokens are ``count_tokens`` of the reply text (every text chunk of a stream is one
token), plus ``count_tokens(name) + count_tokens(arguments JSON)`` for a tool call, plus any
reasoning tokens asked for with the ``reasoning=N`` behaviour key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
# One token per piece; leading whitespace rides along with the token that follows it.
_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")

MESSAGE_OVERHEAD = 4
REQUEST_OVERHEAD = 3
ATTACHMENT_TOKENS = 85


def count_tokens(text: str) -> int:
    """The number of tokens in ``text`` under the simulator's rule (see the module docstring)."""
    return len(TOKEN_RE.findall(text))


def split_pieces(text: str) -> list[str]:
    """Split ``text`` into stream pieces of exactly one token each.

    Joining any prefix of the pieces gives a text with that many tokens; trailing whitespace is
    attached to the last piece so nothing is lost.
    """
    pieces = _PIECE_RE.findall(text)
    rest = len(text) - sum(map(len, pieces))
    if rest:
        if pieces:
            pieces[-1] += text[len(text) - rest :]
        else:
            pieces = [text]
    return pieces


def value_tokens(value: Any) -> int:
    """Tokens of a JSON value: string tokens, keys included, and 1 per number, bool or null."""
    if isinstance(value, str):
        return count_tokens(value)
    if isinstance(value, Mapping):
        return sum(count_tokens(str(k)) + value_tokens(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(value_tokens(v) for v in value)
    return 1


def attachment_tokens(reference: Any) -> int:
    """An image, audio clip, file or document: a flat 85 tokens, or fewer for a tiny reference."""
    if not isinstance(reference, str):
        return 0
    return min(ATTACHMENT_TOKENS, len(reference.encode()))


def _first_str(obj: Any, *keys: str) -> Any:
    if not isinstance(obj, Mapping):
        return None
    for key in keys:
        found = obj.get(key)
        if isinstance(found, str):
            return found
    return None


# --- OpenAI Chat Completions -------------------------------------------------------------


def _openai_part_tokens(part: Any) -> int:
    if not isinstance(part, Mapping):
        return 0
    kind = part.get("type")
    if kind == "text":
        return count_tokens(str(part.get("text") or ""))
    if kind == "refusal":
        return count_tokens(str(part.get("refusal") or ""))
    if kind == "image_url":
        return attachment_tokens(_first_str(part.get("image_url"), "url"))
    if kind == "input_audio":
        return attachment_tokens(_first_str(part.get("input_audio"), "data"))
    if kind == "file":
        return attachment_tokens(_first_str(part.get("file"), "file_data", "file_id"))
    return 0


def openai_content_tokens(content: Any) -> int:
    """Tokens of an OpenAI message ``content``: a string or a list of parts."""
    if isinstance(content, str):
        return count_tokens(content)
    if isinstance(content, list):
        return sum(_openai_part_tokens(p) for p in content)
    return 0


def openai_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Prompt tokens of a Chat Completions request body (already parsed).

    3 + sum over ``messages`` of (4 + content tokens + for each assistant tool call
    ``count_tokens(name) + count_tokens(arguments)``) + ``value_tokens(tools)``.
    """
    total = REQUEST_OVERHEAD
    for msg in body.get("messages") or ():
        if not isinstance(msg, Mapping):
            continue
        total += MESSAGE_OVERHEAD + openai_content_tokens(msg.get("content"))
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(fn, Mapping):
                total += count_tokens(str(fn.get("name") or "")) + count_tokens(str(fn.get("arguments") or ""))
    return total + value_tokens(body.get("tools") or [])


# --- Anthropic Messages ------------------------------------------------------------------


def _anthropic_block_tokens(block: Any) -> int:
    if isinstance(block, str):
        return count_tokens(block)
    if not isinstance(block, Mapping):
        return 0
    kind = block.get("type")
    if kind == "text":
        return count_tokens(str(block.get("text") or ""))
    if kind in ("image", "document"):
        return attachment_tokens(_first_str(block.get("source"), "data", "url", "file_id"))
    if kind == "tool_use":
        return count_tokens(str(block.get("name") or "")) + value_tokens(block.get("input") or {})
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return sum(_anthropic_block_tokens(b) for b in content)
        return count_tokens(content) if isinstance(content, str) else 0
    if kind == "thinking":
        return count_tokens(str(block.get("thinking") or ""))
    return 0


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [content]
    return list(content) if isinstance(content, list) else []


def _has_cache_control(item: Any) -> bool:
    return isinstance(item, Mapping) and item.get("cache_control") is not None


@dataclass(frozen=True, slots=True)
class AnthropicPrompt:
    """The prompt count of a Messages request and its cacheable prefix.

    ``cache_prefix_tokens`` counts everything up to and including the last block that carries
    ``cache_control`` (in the API's order: tools, system, messages); ``cache_key`` identifies
    that prefix (model included). Both are zero/empty when nothing is marked for caching.
    """

    total: int
    cache_prefix_tokens: int
    cache_key: bytes


def anthropic_prompt(body: Mapping[str, Any]) -> AnthropicPrompt:
    """Count a Messages request: 3 + tools + (4 + system) + sum of (4 + block tokens)."""
    hasher = hashlib.blake2b(str(body.get("model")).encode(), digest_size=16)
    total = REQUEST_OVERHEAD
    prefix, key = 0, b""

    def mark(item: Any) -> None:
        nonlocal prefix, key
        hasher.update(orjson.dumps(item, option=orjson.OPT_SORT_KEYS))
        if _has_cache_control(item):
            prefix, key = total, hasher.copy().digest()

    for tool in body.get("tools") or ():
        total += value_tokens(tool)
        mark(tool)
    system = body.get("system")
    if system:
        total += MESSAGE_OVERHEAD
        for block in _blocks(system):
            total += _anthropic_block_tokens(block)
            mark(block)
    for msg in body.get("messages") or ():
        if not isinstance(msg, Mapping):
            continue
        total += MESSAGE_OVERHEAD
        hasher.update(str(msg.get("role")).encode())
        for block in _blocks(msg.get("content")):
            total += _anthropic_block_tokens(block)
            mark(block)
    if body.get("cache_control") is not None:  # automatic caching: the whole prompt
        prefix, key = total, hasher.digest()
    return AnthropicPrompt(total, prefix, key)


def anthropic_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Total input tokens of a Messages request: ``input_tokens`` + cache creation + cache read."""
    return anthropic_prompt(body).total


# --- Gemini generateContent --------------------------------------------------------------


def _gemini_part_tokens(part: Any) -> int:
    if not isinstance(part, Mapping):
        return 0
    if isinstance(part.get("text"), str):
        return count_tokens(part["text"])
    inline = part.get("inlineData") or part.get("inline_data")
    if inline is not None:
        return attachment_tokens(_first_str(inline, "data"))
    file_data = part.get("fileData") or part.get("file_data")
    if file_data is not None:
        return attachment_tokens(_first_str(file_data, "fileUri", "file_uri"))
    call = part.get("functionCall") or part.get("function_call")
    if isinstance(call, Mapping):
        return count_tokens(str(call.get("name") or "")) + value_tokens(call.get("args") or {})
    answer = part.get("functionResponse") or part.get("function_response")
    if isinstance(answer, Mapping):
        return count_tokens(str(answer.get("name") or "")) + value_tokens(answer.get("response") or {})
    return 0


def _gemini_parts_tokens(parts: Iterable[Any]) -> int:
    return sum(_gemini_part_tokens(p) for p in parts)


def gemini_prompt_tokens(body: Mapping[str, Any]) -> int:
    """``promptTokenCount`` of a generateContent request (cached tokens included).

    3 + (4 + system parts) + sum over ``contents`` of (4 + part tokens) + ``value_tokens(tools)``.
    """
    total = REQUEST_OVERHEAD
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, Mapping):
        total += MESSAGE_OVERHEAD + _gemini_parts_tokens(system.get("parts") or ())
    for content in body.get("contents") or ():
        if isinstance(content, Mapping):
            total += MESSAGE_OVERHEAD + _gemini_parts_tokens(content.get("parts") or ())
    return total + value_tokens(body.get("tools") or [])

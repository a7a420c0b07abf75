"""Readers and builders for the canonical (OpenAI-shaped) dicts that the non-OpenAI providers
share: what a message's content says, what a data URL holds, and the `chat.completion` /
`chat.completion.chunk` skeletons. Kept in one place so the Anthropic and Gemini
translations cannot drift apart in how they shape the same canonical value.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from typing import Any

import orjson

from creditgate.canonical import JSON
from creditgate.errors import BadRequest

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[^;,]*)*)(;base64)?,(.*)$", re.DOTALL)


def content_text(content: Any) -> str:
    """The text of a message `content` (a string or a list of parts); non-text parts are
    skipped. Used where the target protocol only takes text (system prompts, tool results)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def content_parts(content: Any, where: str) -> list[JSON]:
    """A message `content` as a list of part dicts (a string becomes one text part)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return content
    raise BadRequest(f"{where}.content must be a string or an array of content parts", param=f"{where}.content")


def parse_data_url(url: str, where: str) -> tuple[str, str]:
    """(mime type, bare base64 payload) of a `data:` URL; upstreams take them separately."""
    m = _DATA_URL.match(url)
    if not m:
        raise BadRequest(f"{where}: not a valid data URL", param=where)
    mime = m.group(1) or "application/octet-stream"
    payload = m.group(4)
    if m.group(3):
        return mime, payload.strip()
    # Percent-encoded (non-base64) data URL: re-encode so upstreams get base64.
    from urllib.parse import unquote_to_bytes

    return mime, base64.b64encode(unquote_to_bytes(payload)).decode()


def image_url_of(part: JSON, where: str) -> str:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.image_url.url is required", param=f"{where}.image_url")
    return url


def parse_arguments(arguments: Any) -> JSON:
    """A tool call's `arguments` JSON string as an object; `{}` when it is not a JSON object
    (models sometimes stream truncated or empty arguments, and upstreams need an object)."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def completion(
    *,
    id: str,
    model: str,
    choices: list[JSON],
    usage: JSON | None,
    created: int | None = None,
) -> JSON:
    out: JSON = {
        "id": id,
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        out["usage"] = usage
    return out


def choice(index: int, message: JSON, finish_reason: str | None) -> JSON:
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}


def assistant_message(text: str | None, tool_calls: list[JSON], reasoning: str | None = None) -> JSON:
    message: JSON = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


def tool_call(id: str, name: str, arguments: str) -> JSON:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


class ChunkMaker:
    """Stamps `id`, `created` and `model` on every chunk of one stream, as OpenAI does."""

    __slots__ = ("created", "id", "model")

    def __init__(self, id: str, model: str) -> None:
        self.id = id
        self.model = model
        self.created = int(time.time())

    def delta(self, delta: JSON, index: int = 0, finish_reason: str | None = None) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def usage(self, usage: JSON) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }

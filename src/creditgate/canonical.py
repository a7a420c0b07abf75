"""The internal request, stream and usage model that every dialect and provider meets at.

The canonical *request* is an OpenAI Chat Completions body (a dict): it is the richest of the
three protocols, every OpenAI-compatible upstream takes it as it is (so unknown fields pass
through with no work), and Anthropic and Gemini convert from it. The canonical *response* is
an OpenAI `chat.completion` dict and the canonical *stream event* an OpenAI
`chat.completion.chunk` dict; `usage` in both is in OpenAI's shape, which can carry cached,
cache-write and reasoning tokens. So N dialects and M providers need N + M converters.

`Usage` is the typed view the billing side reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass(slots=True)
class Usage:
    """Token counts in OpenAI's convention: `prompt_tokens` includes cached and cache-write
    tokens, `completion_tokens` includes reasoning tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    raw: JSON | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: JSON | None) -> Usage | None:
        """Read an OpenAI `usage` object; None when there is none. Missing or malformed
        counts read as 0 rather than failing a request that already succeeded."""
        if not isinstance(usage, dict):
            return None
        prompt = usage.get("prompt_tokens_details") or {}
        completion = usage.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
            cached_tokens=_count(prompt.get("cached_tokens")) if isinstance(prompt, dict) else 0,
            cache_write_tokens=_count(prompt.get("cache_write_tokens")) if isinstance(prompt, dict) else 0,
            reasoning_tokens=_count(completion.get("reasoning_tokens")) if isinstance(completion, dict) else 0,
            raw=usage,
        )

    def to_openai(self) -> JSON:
        out: JSON = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if self.cache_write_tokens:
            out["prompt_tokens_details"]["cache_write_tokens"] = self.cache_write_tokens
        return out


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass(slots=True)
class ChatRequest:
    """One parsed chat request, whatever dialect it came in.

    `body` is the OpenAI-shaped body sent upstream (model and stream fields are set per
    deployment by the provider). `model` is the catalog id the client asked for;
    `fallbacks` the further catalog ids it allows (OpenRouter's `models: [...]`).
    """

    body: JSON
    model: str
    stream: bool = False
    include_usage: bool = False
    fallbacks: list[str] = field(default_factory=list)
    # Sizes the hold is computed from (filled by the dialect while it parses).
    body_bytes: int = 0
    max_output_tokens: int | None = None
    has_images: bool = False
    cache_prompt: bool = False
    no_cache: bool = False

    @property
    def choices(self) -> int:
        n = self.body.get("n")
        return n if isinstance(n, int) and n > 1 else 1

"""Provider implementations by wire protocol (`type` in the config)."""

from __future__ import annotations

from creditgate.providers.anthropic import AnthropicProvider
from creditgate.providers.base import Provider
from creditgate.providers.gemini import GeminiProvider
from creditgate.providers.openai_compat import OpenAIProvider


def build_providers() -> dict[str, Provider]:
    return {"openai": OpenAIProvider(), "anthropic": AnthropicProvider(), "gemini": GeminiProvider()}

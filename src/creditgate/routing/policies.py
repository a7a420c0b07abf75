"""The virtual `auto-*` models: what each one means, and how `auto` picks one for a request.

Every policy orders the catalog models that *fit* the request (vision when it carries
images; a context window that holds the estimated prompt) and that the caller *permits*.
Ties always fall back to the model id, so the order is stable from one request to the next.

    auto-cheap  lowest blended price (3:1 input:output per 1M tokens), then higher rank
    auto-best   highest configured `rank`, then lower price
    auto-code   models tagged `code` first; within each group higher rank, then lower price
    auto-fast   lowest expected reply time from measured latency / time-to-first-token /
                tokens-per-second averages; a model not measured yet counts as
                `fast_prior_ms`, so it is tried ahead of anything measured slower than that
    auto-free   only models whose blended price is 0 or at most `free_max_blended`
                (currency units per 1M tokens); cheapest first, then higher rank
    auto        picks one of the above from the request: code in it (``` fences, `def f(`,
                `function f(`, `#include`, tool definitions...) -> `code_policy`; images ->
                `image_policy` (among vision models); a prompt estimated above
                `long_prompt_tokens` -> `long_policy` (among models whose window holds it);
                otherwise `default`

The settings live under `auto:` in the configuration file; see `AutoSettings`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from creditgate.canonical import ChatRequest
from creditgate.catalog import CatalogModel
from creditgate.config import ConfigError
from creditgate.money import to_micros

Policy = Literal["auto-cheap", "auto-best", "auto-code", "auto-fast", "auto-free"]

DESCRIPTIONS: dict[str, str] = {
    "auto-cheap": "The cheapest model (blended 3:1 input:output price) that fits the request.",
    "auto-best": "The highest-ranked model that fits the request.",
    "auto-code": "Models tagged for code first, then by rank and price.",
    "auto-fast": "The model with the lowest measured reply time; unmeasured models get tried too.",
    "auto-free": "Only free or near-free models, cheapest first.",
}


def describe_auto(settings: AutoSettings) -> str:
    return (
        f"Chooses a policy from the request: {settings.code_policy} for code or tools, "
        f"{settings.image_policy} among vision models for images, {settings.long_policy} for prompts over "
        f"~{settings.long_prompt_tokens} tokens, otherwise {settings.default}."
    )


class AutoSettings(BaseModel):
    """`auto:` in the configuration file. Every key is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Policy = Field("auto-cheap", description="what `auto` uses when no rule below applies")
    code_policy: Policy = "auto-code"
    image_policy: Policy = "auto-best"
    long_policy: Policy = Field("auto-cheap", description="long prompts are mostly input: price matters")
    long_prompt_tokens: int = Field(32_000, ge=1)
    alternatives: int = Field(3, ge=0, description="models an auto policy lists after its choice")
    free_max_blended: Decimal = Field(Decimal(0), ge=0, description="per 1M tokens, currency units")
    fast_prior_ms: float = Field(1000.0, ge=0, description="expected reply time of an unmeasured model")
    fast_typical_output_tokens: int = Field(256, ge=1)
    bytes_per_token: float = Field(4.0, gt=0, description="for estimating prompt tokens from bytes")
    image_tokens: int = Field(1000, ge=0, description="prompt tokens counted per image")
    breaker_window: int = Field(20, ge=1, description="recent outcomes kept per deployment")
    breaker_error_rate: float = Field(0.5, gt=0, le=1)
    breaker_min_samples: int = Field(10, ge=1)
    ewma_alpha: float = Field(0.2, gt=0, le=1)
    max_retry_after_seconds: float = Field(3600.0, gt=0)

    @field_validator("free_max_blended")
    @classmethod
    def _exact(cls, v: Decimal) -> Decimal:
        to_micros(v)
        return v

    @property
    def free_max_micros(self) -> int:
        return to_micros(self.free_max_blended)

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> AutoSettings:
        try:
            return cls.model_validate(dict(raw or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"auto.{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"invalid auto-routing settings: {problems}") from None


# --- reading the request -----------------------------------------------------------------

_CODE = re.compile(
    r"```|\bdef \w+\s*\(|\bfunction\s*\w*\s*\(|#include\s*[<\"]|\bconsole\.log\(|\bpublic static\b"
    r"|\bimport \w+(\.\w+)*\s*$|\bfrom \w+(\.\w+)* import\b|=>\s*\{|\bfn \w+\s*\(|\bfunc \w+\s*\("
    r"|Traceback \(most recent call last\)",
    re.MULTILINE,
)
_SCAN_LIMIT = 64 * 1024  # characters of prompt text inspected for code


def _texts(body: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return out


def looks_like_code(request: ChatRequest) -> bool:
    """Tool definitions, or prompt text with code in it. Only the last 64K characters are
    read: enough to see what the conversation is about, bounded in cost."""
    if request.body.get("tools") or request.body.get("functions"):
        return True
    text = "\n".join(_texts(request.body))[-_SCAN_LIMIT:]
    return _CODE.search(text) is not None


def _image_url_bytes(body: Mapping[str, Any]) -> tuple[int, int]:
    """(number of images, bytes of their URLs) in the messages: inline images inflate the
    body without adding text tokens."""
    count = size = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                count += 1
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                size += len(url) if isinstance(url, str) else 0
    return count, size


def estimate_prompt_tokens(request: ChatRequest, settings: AutoSettings) -> int:
    """About how many tokens the prompt is: body bytes (less inline image data) divided by
    `bytes_per_token`, plus `image_tokens` per image. An estimate to choose models by, not a
    bill: it only has to tell a 2K prompt from a 200K one."""
    size = request.body_bytes or sum(len(t.encode()) for t in _texts(request.body))
    images = 0
    if request.has_images:
        images, url_bytes = _image_url_bytes(request.body)
        size = max(0, size - url_bytes)
    return int(size / settings.bytes_per_token) + images * settings.image_tokens


def choose_policy(request: ChatRequest, prompt_tokens: int, settings: AutoSettings) -> tuple[Policy, str]:
    """The policy `auto` applies to this request, and why (for logs and metrics)."""
    if looks_like_code(request):
        return settings.code_policy, "code"
    if request.has_images:
        return settings.image_policy, "images"
    if prompt_tokens > settings.long_prompt_tokens:
        return settings.long_policy, "long_prompt"
    return settings.default, "default"


# --- ordering ------------------------------------------------------------------------------

SortKey = Callable[[CatalogModel], tuple[Any, ...]]


def order(
    policy: Policy,
    models: list[CatalogModel],
    settings: AutoSettings,
    expected_ms: Callable[[CatalogModel], float | None],
) -> list[CatalogModel]:
    """`models` in the policy's order of preference (auto-free also drops non-free ones)."""
    if policy == "auto-free":
        limit = settings.free_max_micros
        models = [m for m in models if m.price.blended <= limit]
    key: SortKey
    if policy in ("auto-cheap", "auto-free"):
        key = lambda m: (m.price.blended, -m.rank, m.id)  # noqa: E731
    elif policy == "auto-best":
        key = lambda m: (-m.rank, m.price.blended, m.id)  # noqa: E731
    elif policy == "auto-code":
        key = lambda m: ("code" not in m.tags, -m.rank, m.price.blended, m.id)  # noqa: E731
    else:  # auto-fast

        def key(m: CatalogModel) -> tuple[Any, ...]:
            measured = expected_ms(m)
            return (settings.fast_prior_ms if measured is None else measured, -m.rank, m.price.blended, m.id)

    return sorted(models, key=key)

"""Behaviour prefixes: ``/x/ttft_ms=200,tps=50,tokens=40/v1/...`` picks how the simulator acts.

One simulator can stand in for many upstreams (a fast one, a slow one, a broken one) just by
giving each a different base URL. Keys, all optional, comma-separated ``key=value``:

=============== ======================================================================
``ttft_ms=N``   wait N ms before the first byte (streams) or before the whole body
``tps=N``       stream N tokens per second (each content chunk is one token)
``tokens=N``    reply length in completion tokens (default 12)
``status=NNN``  fail every request with this HTTP status, in the protocol's error envelope
``retry_after`` add ``Retry-After: S`` to error responses
``fail_first=N`` the first N requests on this exact prefix fail (503, or ``status``)
``fail_every=N`` every Nth request on this exact prefix fails (503, or ``status``): with N=2
                the 2nd, 4th, 6th... fail, so exactly half of an even number of requests do
``cut_after=N`` close a stream after N content chunks; drop a non-stream request unanswered
``hang=1``      accept the request and never answer
``error_after=N`` send an in-stream error event after N content chunks
``usage=0``     never report usage in streams
``cached=N``    report N cached prompt tokens
``reasoning=N`` report N reasoning tokens
``id=LABEL``    no effect; makes a prefix distinct (``fail_first`` and ``fail_every`` count per
                prefix string)
=============== ======================================================================

Notes: injected failures (``status``, ``fail_first``, ``fail_every``) answer at once,
``ttft_ms`` delays only real replies. An output cap (``max_tokens`` and friends) covers
reasoning plus visible tokens, so a reply never bills more than the cap. ``usage=0`` on
Anthropic streams leaves the ``usage`` objects out entirely (the real API never does; it
exists to exercise usage estimation).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

DEFAULT_TOKENS = 12


class BehaviourError(ValueError):
    """A prefix the simulator does not understand; answered with 400 naming the key."""


@dataclass(frozen=True, slots=True)
class Behaviour:
    ttft_ms: float = 0.0
    tps: float = 0.0
    tokens: int = DEFAULT_TOKENS
    status: int | None = None
    retry_after: str | None = None
    fail_first: int = 0
    fail_every: int = 0
    cut_after: int | None = None
    hang: bool = False
    error_after: int | None = None
    usage: bool = True
    cached: int = 0
    reasoning: int = 0

    @property
    def paced(self) -> bool:
        return self.tps > 0


_INT_KEYS = ("tokens", "status", "fail_first", "fail_every", "cut_after", "error_after", "cached", "reasoning")
_FLOAT_KEYS = ("ttft_ms", "tps")
_FLAG_KEYS = ("hang", "usage")
KNOWN_KEYS = frozenset((*_INT_KEYS, *_FLOAT_KEYS, *_FLAG_KEYS, "retry_after", "id"))


def _number(key: str, raw: str, kind: type[int] | type[float]) -> int | float:
    try:
        value = kind(raw)
    except ValueError:
        raise BehaviourError(f"behaviour key '{key}' needs a number, got '{raw}'") from None
    if value < 0:
        raise BehaviourError(f"behaviour key '{key}' must not be negative")
    return value


@lru_cache(maxsize=1024)
def parse_behaviour(spec: str) -> Behaviour:
    """Parse the prefix segment (``""`` means default behaviour). Raises ``BehaviourError``."""
    if not spec:
        return Behaviour()
    values: dict[str, object] = {}
    for item in spec.split(","):
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if key not in KNOWN_KEYS:
            known = ", ".join(sorted(KNOWN_KEYS))
            raise BehaviourError(f"unknown simulator behaviour key '{key}' (known keys: {known})")
        if not sep:
            raise BehaviourError(f"behaviour key '{key}' needs a value, like {key}=1")
        if key in _INT_KEYS:
            values[key] = _number(key, raw, int)
        elif key in _FLOAT_KEYS:
            values[key] = _number(key, raw, float)
        elif key in _FLAG_KEYS:
            values[key] = raw not in ("0", "false", "no", "")
        elif key == "retry_after":
            values[key] = raw
    status = values.get("status")
    if status is not None and not (isinstance(status, int) and 400 <= status <= 599):
        raise BehaviourError("behaviour key 'status' must be an HTTP error status (400-599)")
    return Behaviour(**values)  # type: ignore[arg-type]

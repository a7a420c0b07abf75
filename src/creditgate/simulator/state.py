"""Per-simulator memory: the request log, ``fail_first`` counters and the prompt-cache registry.

Kept on the application (one per process when run from the CLI), so tests that start their
own simulator start from a clean slate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

REQUEST_LOG_SIZE = 1000


@dataclass(slots=True)
class _Recorded:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes

    def as_json(self) -> dict[str, Any]:
        """Decoded lazily, only when someone asks: recording stays cheap on the hot path."""
        body: Any
        try:
            body = orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            body = self.body.decode("utf-8", "replace")
        return {
            "method": self.method,
            "path": self.path,
            "query": _plain(self.query),
            "headers": _plain(self.headers),
            "body": body,
        }


def _plain(items: Mapping[str, str]) -> dict[str, str]:
    """Header/query multidicts to a plain dict (first value wins; keys as lower-case ``str``)."""
    out: dict[str, str] = {}
    for key, value in items.items():
        out.setdefault(str(key).lower(), value)
    return out


@dataclass(slots=True)
class SimState:
    requests: deque[_Recorded] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))
    attempts: dict[str, int] = field(default_factory=dict)
    cached_prefixes: set[bytes] = field(default_factory=set)

    def record(self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes) -> None:
        self.requests.append(_Recorded(method, path, query, headers, body))

    def recent(self, n: int) -> list[dict[str, Any]]:
        items = list(self.requests)[-n:] if n > 0 else []
        return [r.as_json() for r in items]

    def take_attempt(self, spec: str) -> int:
        """Count a request on prefix ``spec``; returns how many came before it."""
        seen = self.attempts.get(spec, 0)
        self.attempts[spec] = seen + 1
        return seen

    def cache_lookup(self, key: bytes) -> bool:
        """True when this cached prefix was written before; remembers it either way."""
        if key in self.cached_prefixes:
            return True
        self.cached_prefixes.add(key)
        return False

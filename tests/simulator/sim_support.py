"""Helpers shared by the simulator tests."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from creditgate.sse import SSEParser

KEY = {"x-goog-api-key": "test-key"}
BEARER = {"Authorization": "Bearer test-key"}


async def sse_events(response: aiohttp.ClientResponse) -> list[tuple[str | None, Any]]:
    """Read a whole SSE body: (event name, parsed JSON or the raw text for ``[DONE]``)."""
    parser = SSEParser()
    events = parser.feed(await response.read()) + parser.close()
    out: list[tuple[str | None, Any]] = []
    for event in events:
        data: Any = event.data.decode() if event.data == b"[DONE]" else orjson.loads(event.data)
        out.append((event.event, data))
    return out

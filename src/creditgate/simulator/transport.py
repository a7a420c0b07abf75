"""Putting bytes on the wire: paced streams, cut connections, hung requests.

A stream is planned up front as a list of events, each flagged as a content chunk or not.
``send_stream`` then applies the behaviour: time to first token, tokens per second (content
chunks only), an in-stream error or a cut connection after N content chunks. Unpaced streams
go out in a single write, which keeps the simulator cheap as a benchmark baseline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from aiohttp import web

from creditgate.simulator.behaviour import Behaviour

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
JSON_CONTENT_TYPE = "application/json"

Event = tuple[bytes, bool]  # (encoded SSE event, counts as a content chunk)


def json_response(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, headers=headers, content_type=JSON_CONTENT_TYPE)


def drop_connection(request: web.Request) -> web.Response:
    """Close the socket without answering: the client sees a server disconnect."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def hang(request: web.Request) -> web.Response:
    """Accept and never answer; return once the client goes away (nothing is sent)."""
    while not client_gone(request):  # noqa: ASYNC110 - aiohttp offers no disconnect event
        await asyncio.sleep(0.05)
    return drop_connection(request)


async def wait_first_byte(behaviour: Behaviour) -> None:
    if behaviour.ttft_ms > 0:
        await asyncio.sleep(behaviour.ttft_ms / 1000)


async def send_stream(
    request: web.Request,
    behaviour: Behaviour,
    events: Sequence[Event],
    error_event: bytes,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    """Send a planned stream, honouring ttft, tps, ``cut_after`` and ``error_after``."""
    await wait_first_byte(behaviour)
    response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **headers})
    await response.prepare(request)
    stop_at, action = _stop_point(behaviour)
    interval = 1.0 / behaviour.tps if behaviour.paced else 0.0
    loop = asyncio.get_running_loop()
    started = 0.0
    sent = 0
    pending: list[bytes] = []
    try:
        for data, is_content in events:
            if is_content:
                if sent == stop_at:
                    break
                if interval and sent:
                    await response.write(b"".join(pending))
                    pending.clear()
                    delay = started + sent * interval - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif not sent:
                    started = loop.time()
                sent += 1
            pending.append(data)
        else:
            action = "finish"
        if action == "error":
            pending.append(error_event)
        await response.write(b"".join(pending))
        if action == "cut":
            drop_connection(request)
        else:
            await response.write_eof()
    except ConnectionError:
        pass  # the client went away mid-stream; nothing more to do
    return response


def _stop_point(behaviour: Behaviour) -> tuple[int | None, str]:
    cut, err = behaviour.cut_after, behaviour.error_after
    if err is not None and (cut is None or err <= cut):
        return err, "error"
    if cut is not None:
        return cut, "cut"
    return None, "finish"

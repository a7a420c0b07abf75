"""The chat endpoints as plain ASGI apps: read the body (bounded), find the key, hand the
bytes to the pipeline, and write its reply, streaming chunk by chunk with no buffering.

Plain ASGI rather than a framework request object keeps per-request work minimal on the
path every call takes; everything else in the app uses Starlette.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from creditgate.dialects.base import Dialect
from creditgate.errors import GatewayError, PayloadTooLarge, http_status
from creditgate.pipeline import JSON_TYPE, Pipeline, Reply

log = logging.getLogger("creditgate.api")


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def bearer_key(scope: Scope) -> str | None:
    auth = header(scope, b"authorization")
    if auth is None:
        return None
    scheme, _, token = auth.decode("latin-1").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def anthropic_key(scope: Scope) -> str | None:
    key = header(scope, b"x-api-key")
    return key.decode("latin-1").strip() or None if key else bearer_key(scope)


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {int(declared)} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("client disconnected while sending the body")
        body = message.get("body", b"")
        if body:
            size += len(body)
            if size > limit:
                raise PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
            chunks.append(body)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "0.0.0.0"


def request_id_of(scope: Scope) -> str:
    state = scope.get("state") or {}
    return str(state.get("request_id") or "")


async def send_error(send: Send, dialect: Dialect, err: GatewayError, request_id: str) -> None:
    headers = [JSON_TYPE] + [(k.encode(), v.encode()) for k, v in err.headers.items()]
    if http_status(err) >= 500 or http_status(err) in (408, 409, 429):
        pass  # transient: let SDKs retry (their default)
    else:
        headers.append((b"x-should-retry", b"false"))
    await send({"type": "http.response.start", "status": http_status(err), "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps(dialect.error_body(err, request_id))})


async def send_stream(send: Send, receive: Receive, reply: Reply) -> None:
    """Write an SSE reply as it is produced. A watcher notices the client leaving and
    cancels the writer, so the pipeline stops the upstream and bills what was produced."""
    assert reply.stream is not None
    stream: AsyncIterator[bytes] = reply.stream
    writer = asyncio.current_task()
    assert writer is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        message: Message = await receive()
        while message["type"] != "http.disconnect":
            message = await receive()
        gone = True
        writer.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
        async for piece in stream:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        watcher.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not gone:
            raise
        with contextlib.suppress(BaseException):
            await stream.aclose()  # type: ignore[attr-defined]
        # The request task was cancelled on purpose (the client left); finish quietly.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    finally:
        watcher.cancel()


class ChatEndpoint:
    """`POST` a chat request in one dialect."""

    def __init__(self, pipeline: Pipeline, dialect: Dialect, *, max_body_bytes: int, anthropic_auth: bool = False):
        self.pipeline = pipeline
        self.dialect = dialect
        self.max_body_bytes = max_body_bytes
        self.key_of = anthropic_key if anthropic_auth else bearer_key
        self._by_status: dict[int, Any] = {}
        self._latency = pipeline.metrics.request_latency.labels(dialect.name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope)
        metrics = self.pipeline.metrics
        started = time.perf_counter()
        status = 200
        metrics.in_flight.inc()
        try:
            try:
                raw = await read_body(scope, receive, self.max_body_bytes)
                reply = await self.pipeline.chat(
                    self.dialect,
                    raw,
                    api_key=self.key_of(scope),
                    client_ip=client_ip(scope),
                    request_id=request_id,
                )
            except GatewayError as err:
                status = http_status(err)
                await send_error(send, self.dialect, err, request_id)
                return
            except ConnectionAbortedError:
                status = 499
                return
            if reply.stream is None:
                headers = reply.headers
                headers.append((b"content-length", b"%d" % len(reply.body)))
                await send({"type": "http.response.start", "status": reply.status, "headers": headers})
                await send({"type": "http.response.body", "body": reply.body})
            else:
                await send_stream(send, receive, reply)
        finally:
            metrics.in_flight.dec()
            self._requests(status).inc()
            self._latency.observe(time.perf_counter() - started)

    def _requests(self, status: int) -> Any:
        """The request counter of one status (label children are looked up once)."""
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self.pipeline.metrics.requests.labels(str(status), self.dialect.name)
        return counter

"""A lean HTTP/1.1 client for upstream calls: keep-alive connections as asyncio protocols,
responses parsed by httptools (llhttp, the parser under uvicorn).

Every upstream call is the same shape: one POST with a JSON body, then a JSON reply or a
stream of server-sent events. A general-purpose client (aiohttp) spent about a fifth of
the gateway's CPU per request building that request (header multidicts, payload objects,
tracing hooks, timeout context managers). Here a request is one formatted head and one
socket write, and a reply that arrives in one segment costs one parser call.

What it does: connection pools with a size limit and waiting, keep-alive with idle
expiry, one retry on a fresh connection when a reused one turns out to have been closed
by the server before it answered, TLS (`https`, certificates verified against the
system's store), gzip and deflate replies, chunked and close-delimited bodies, read flow
control for slow consumers, and the three timeouts (connect, first byte or gap between
body pieces, total). Failures are `UpstreamError`s the router understands. It does not do
redirects, proxies, HTTP/2 or upgrades: upstream APIs do not need them.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools

from creditgate.errors import UpstreamError, UpstreamTimeout

KEEPALIVE_S = 30.0  # an idle connection older than this is closed rather than reused
HIGH_WATER = 1 << 20  # bytes buffered from a stream before reading pauses
_WANTED = frozenset({b"retry-after", b"retry-after-ms", b"content-encoding", b"content-length", b"transfer-encoding"})


def _disconnected() -> UpstreamError:
    return UpstreamError("the upstream closed the connection", upstream_status=0, kind="disconnected")


def _cut() -> UpstreamError:
    return UpstreamError("the upstream's response was cut off", upstream_status=0, kind="stream_cut")


class Connection(asyncio.Protocol):
    """One keep-alive connection, carrying one exchange (request and response) at a time.
    The response's state lives here; `Response` is the caller's handle on it."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.counted = True  # holds one of the pool's slots
        self.idle_since = 0.0
        self.busy = False
        self.exchange = 0  # counts requests sent; a `Response` acts only on its own
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.headers_done = False
        self.interim = False
        self.done = False
        self.received = False
        self.keep_alive = True
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.read_deadline = 0.0
        self.read_timeout = 0.0
        self.timers: list[asyncio.TimerHandle] = []

    # --- one exchange ---------------------------------------------------------------------

    def send(self, data: bytes, first_byte: float, total: float) -> None:
        assert self.transport is not None
        self._reset()
        self.busy = True
        self.exchange += 1
        self.read_timeout = first_byte
        self.read_deadline = self.loop.time() + first_byte
        self.timers = [
            self.loop.call_at(self.read_deadline, self._check_read),
            self.loop.call_later(total, self._timed_out, "total"),
        ]
        self.transport.write(data)

    async def wait(self) -> None:
        """Until something happens: headers, a body piece, the end, or a failure."""
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def wait_for(self, state: str) -> None:
        """Until `headers_done` or `done` (named by `state`) is true; raises the failure of
        the exchange instead if there is one."""
        while not getattr(self, state):
            if self.error is not None:
                raise self.error
            await self.wait()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None and not self.done:
            self.error = error
        self._stop_timers()
        self._wake()

    def _stop_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers = []

    def _check_read(self) -> None:
        if self.done or self.error is not None:
            return
        now = self.loop.time()
        if now < self.read_deadline:  # data came meanwhile: look again at the new deadline
            self.timers.append(self.loop.call_at(self.read_deadline, self._check_read))
            return
        if self.paused:  # the consumer is slow, not the upstream
            self.read_deadline = now + self.read_timeout
            self.timers.append(self.loop.call_at(self.read_deadline, self._check_read))
            return
        self._timed_out("first_byte")

    def _timed_out(self, phase: str) -> None:
        if self.done or self.error is not None:
            return
        message = (
            "the upstream call took longer than its total timeout"
            if phase == "total"
            else "the upstream did not answer in time"
        )
        self._fail(UpstreamTimeout(message, phase=phase))
        self.abort()

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return data

    def pop(self) -> bytes:
        data = self.chunks.popleft()
        self.buffered -= len(data)
        if self.paused and self.buffered < HIGH_WATER // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def finish(self, exchange: int) -> None:
        """The caller is done with the response to request number `exchange`: reuse the
        connection if it can be. A late call for an earlier exchange (an abandoned body
        iterator being closed) does nothing: the connection may be serving another by now."""
        if not self.busy or exchange != self.exchange:
            return
        self.busy = False
        self._stop_timers()
        if self.done and self.keep_alive and self.error is None and not self.closed and not self.chunks:
            self.pool.release(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.pool.discard(self)

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # nothing was asked: a confused server; drop the connection
            self.abort()
            return
        self.received = True
        self.read_deadline = self.loop.time() + self.read_timeout
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the upstream sent malformed HTTP ({exc})", upstream_status=0, kind="connection"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        if not self.busy or self.done or self.error is not None:
            return
        if not self.headers_done:
            self._fail(_disconnected())
        elif self._until_close():
            self.on_message_complete()
        else:
            self._fail(_cut())

    # --- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _WANTED:
            self.headers[name] = value

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim response (103 Early Hints, a stray 100): the real one follows
            self.interim = True
            self.headers.clear()
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.done = True
        self._stop_timers()
        self._wake()

    def _until_close(self) -> bool:
        """A body without a length or chunked framing ends when the connection does."""
        return b"content-length" not in self.headers and b"chunked" not in self.headers.get(b"transfer-encoding", b"")


class Response:
    """An upstream's response, once its status line and headers arrived."""

    __slots__ = ("conn", "exchange", "headers", "status")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.exchange = conn.exchange
        self.status = conn.status
        self.headers = conn.headers

    @property
    def retry_after(self) -> float | None:
        """Seconds the upstream asks us to wait (`retry-after-ms`, or `retry-after` in seconds)."""
        raw_ms = self.headers.get(b"retry-after-ms")
        raw = self.headers.get(b"retry-after")
        try:
            if raw_ms is not None:
                return float(raw_ms) / 1000
            if raw is not None:
                return float(raw)
        except ValueError:
            return None
        return None

    async def read(self) -> bytes:
        conn = self.conn
        try:
            await conn.wait_for("done")
            data = conn.take()
        finally:
            conn.finish(self.exchange)
        encoding = self.headers.get(b"content-encoding")
        return _decode(data, encoding) if encoding else data

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, piece by piece."""
        conn = self.conn
        encoding = self.headers.get(b"content-encoding")
        inflate = _inflater(encoding) if encoding else None
        try:
            while conn.exchange == self.exchange:
                while conn.chunks:
                    data = conn.pop()
                    if inflate is not None:
                        data = _inflate(inflate, data)
                    if data:
                        yield data
                if conn.error is not None:
                    raise conn.error
                if conn.done:
                    return
                await conn.wait()
        finally:
            conn.finish(self.exchange)

    def close(self) -> None:
        """Done with the response, read or not; an unfinished one closes the connection."""
        self.conn.finish(self.exchange)


def _inflater(encoding: bytes) -> Any:
    if encoding == b"gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == b"deflate":  # zlib-wrapped as the RFC says, or raw as some servers send it
        return _Deflate()
    if encoding == b"identity":
        return None
    raise UpstreamError(
        f"the upstream answered with content-encoding {encoding.decode(errors='replace')!r}, which is not supported",
        upstream_status=0,
        kind="connection",
    )


class _Deflate:
    """`deflate` bodies: zlib-wrapped, or raw deflate, told apart by the first byte."""

    def __init__(self) -> None:
        self.inner: Any = None

    def decompress(self, data: bytes) -> bytes:
        if self.inner is None:
            if not data:
                return b""
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | (data[1] if len(data) > 1 else 0)) % 31 == 0
            self.inner = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return bytes(self.inner.decompress(data))

    def flush(self) -> bytes:
        return bytes(self.inner.flush()) if self.inner is not None else b""


def _inflate(inflater: Any, data: bytes) -> bytes:
    try:
        return bytes(inflater.decompress(data))
    except zlib.error as exc:
        raise UpstreamError(
            f"the upstream's compressed body is corrupt ({exc})", upstream_status=0, kind="connection"
        ) from None


def _decode(data: bytes, encoding: bytes) -> bytes:
    inflater = _inflater(encoding)
    if inflater is None:
        return data
    return _inflate(inflater, data) + bytes(inflater.flush())


class Pool:
    """Keep-alive connections to one origin (scheme, host, port), at most `limit` open."""

    def __init__(self, scheme: str, host: str, port: int, *, limit: int, connect_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.ssl = ssl.create_default_context() if scheme == "https" else None
        self.idle: list[Connection] = []
        self.open = 0  # connections open or opening
        self.waiters: deque[asyncio.Future[Connection | None]] = deque()

    async def acquire(self) -> tuple[Connection, bool]:
        """A connection to send on, and whether it was used before."""
        now = self.loop.time()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                return conn, True
            conn.abort()
        if self.open >= self.limit:
            # All connections are busy: wait for one, within the connect timeout.
            try:
                async with asyncio.timeout(self.connect_timeout):
                    freed = await self._wait_for_slot()
            except TimeoutError:
                raise UpstreamTimeout(
                    f"no connection to the upstream came free in time (all {self.limit} in use; "
                    "raise the provider's max_connections)",
                    phase="connect",
                ) from None
            if freed is not None:
                return freed, True
        return await self._connect(), False

    async def _wait_for_slot(self) -> Connection | None:
        """A released connection, or None once a slot is free to open one."""
        while self.open >= self.limit:
            waiter: asyncio.Future[Connection | None] = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                conn_or_slot = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self.release(waiter.result())  # type: ignore[arg-type]
                raise
            if conn_or_slot is not None:
                return conn_or_slot
        return None

    async def _connect(self) -> Connection:
        self.open += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except BaseException as exc:
            self.open -= 1
            self._hand_slot()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout("the upstream did not accept a connection in time", phase="connect") from None
            if isinstance(exc, OSError):
                raise UpstreamError(
                    f"could not connect to the upstream ({exc.strerror or exc})", upstream_status=0, kind="connect"
                ) from None
            raise
        return conn

    def release(self, conn: Connection) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def discard(self, conn: Connection) -> None:
        if conn.counted:
            conn.counted = False
            self.open -= 1
            self._hand_slot()

    def _hand_slot(self) -> None:
        """A slot came free: the first waiter opens a connection of its own."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.abort()


class Target:
    """A parsed URL: which origin to connect to and the request head's first lines."""

    __slots__ = ("origin", "start")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.origin = (parts.scheme, parts.hostname, port)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default = (parts.scheme == "https" and port == 443) or (parts.scheme == "http" and port == 80)
        host = parts.hostname if default else f"{parts.hostname}:{port}"
        if ":" in parts.hostname:  # IPv6 literal
            host = f"[{parts.hostname}]" if default else f"[{parts.hostname}]:{port}"
        self.start = f"POST {path} HTTP/1.1\r\nhost: {host}\r\n"


def request_head(target: Target, headers: dict[str, str], body_length: int) -> bytes:
    lines = [target.start]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"accept-encoding: gzip, deflate\r\ncontent-length: {body_length}\r\n\r\n")
    return "".join(lines).encode("latin-1")


async def post(
    pool: Pool, target: Target, headers: dict[str, str], body: bytes, *, first_byte: float, total: float
) -> Response:
    """Send a POST and return once the status line and headers arrived. A reused connection
    that the server had already closed is retried once on a fresh one (nothing of the
    request can have been processed: not a byte came back)."""
    data = request_head(target, headers, len(body)) + body
    for attempt in (1, 2):
        conn, reused = await pool.acquire()
        conn.send(data, first_byte, total)
        exchange = conn.exchange
        try:
            await conn.wait_for("headers_done")
        except UpstreamError as err:
            conn.finish(exchange)
            if attempt == 1 and reused and not conn.received and err.kind == "disconnected":
                continue
            raise
        except BaseException:
            conn.finish(exchange)
            raise
        return Response(conn)
    raise AssertionError("unreachable")

"""The upstream HTTP/1.1 client against real sockets on 127.0.0.1, with servers written to
misbehave exactly as upstreams do: closing kept-alive connections, cutting bodies,
stalling, compressing, trickling."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import shutil
import ssl
import subprocess
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from creditgate import http1
from creditgate.errors import UpstreamError, UpstreamTimeout

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw TCP server; counts connections and keeps the request heads it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        return int(self.server.sockets[0].getsockname()[1])

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head, body = await read_request(reader)
        self.heads.append(head)
        return body


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (the client always sends a content-length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[Server, http1.Pool, http1.Target]]]]:
    servers: list[Server] = []
    pools: list[http1.Pool] = []

    async def start(handler: Handler, *, limit: int = 8) -> tuple[Server, http1.Pool, http1.Target]:
        server = Server(handler)
        port = await server.start()
        servers.append(server)
        pool = http1.Pool("http", "127.0.0.1", port, limit=limit, connect_timeout=2)
        pools.append(pool)
        return server, pool, http1.Target(f"http://127.0.0.1:{port}/v1/chat/completions")

    yield start
    for pool in pools:
        pool.close()
    for server in servers:
        assert server.server is not None
        server.server.close()


def reply(body: bytes, *extra: bytes) -> bytes:
    headers = b"".join(h + b"\r\n" for h in extra)
    return b"HTTP/1.1 200 OK\r\ncontent-length: " + str(len(body)).encode() + b"\r\n" + headers + b"\r\n" + body


async def post(pool: http1.Pool, target: http1.Target, body: bytes = b"{}", **kw: float) -> http1.Response:
    return await http1.post(
        pool, target, {"authorization": "Bearer k"}, body, first_byte=kw.get("first_byte", 5), total=kw.get("total", 10)
    )


async def test_keeps_the_connection_alive_across_requests(serve) -> None:  # type: ignore[no-untyped-def]
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await server.read_request(reader)
            writer.write(reply(b"got " + body))

    server, pool, target = await serve(echo)
    for i in range(3):
        resp = await post(pool, target, f'{{"n": {i}}}'.encode())
        assert resp.status == 200
        assert await resp.read() == f'got {{"n": {i}}}'.encode()
    assert server.connections == 1
    head = server.heads[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{target.origin[2]}\r\n" in head
    assert "authorization: Bearer k\r\n" in head and "content-length: 8\r\n" in head


async def test_a_kept_alive_connection_the_server_dropped_is_retried_on_a_fresh_one(serve) -> None:  # type: ignore[no-untyped-def]
    async def once_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(reply(b"first"))
        await writer.drain()
        await server.read_request(reader)  # the second request on this connection: hang up unanswered

    server, pool, target = await serve(once_per_connection)
    assert await (await post(pool, target)).read() == b"first"
    assert await (await post(pool, target)).read() == b"first"  # answered on a second connection
    assert server.connections == 2


async def test_a_fresh_connection_closed_unanswered_is_an_upstream_error(serve) -> None:  # type: ignore[no-untyped-def]
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)

    server, pool, target = await serve(hang_up)
    with pytest.raises(UpstreamError) as err:
        await post(pool, target)
    assert err.value.kind == "disconnected" and err.value.retryable
    assert server.connections == 1  # not retried: the request may have been processed


async def test_the_pool_never_opens_more_than_its_limit(serve) -> None:  # type: ignore[no-untyped-def]
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await server.read_request(reader)
            await asyncio.sleep(0.03)
            writer.write(reply(body))

    server, pool, target = await serve(slow, limit=2)

    async def one(i: int) -> bytes:
        return await (await post(pool, target, str(i).encode())).read()

    assert await asyncio.gather(*(one(i) for i in range(8))) == [str(i).encode() for i in range(8)]
    assert server.most_open == 2 and server.connections == 2


async def test_waiting_for_a_free_connection_is_bounded_by_the_connect_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await asyncio.sleep(5)

    server, pool, target = await serve(stuck, limit=1)
    pool.connect_timeout = 0.2
    busy = asyncio.ensure_future(post(pool, target))  # takes the only connection and waits
    await asyncio.sleep(0.05)
    with pytest.raises(UpstreamTimeout) as err:
        await post(pool, target)
    assert err.value.phase == "connect" and "max_connections" in err.value.message
    busy.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await busy
    assert pool.open == 0 and not pool.waiters


async def test_a_chunked_stream_arrives_piece_by_piece(serve) -> None:  # type: ignore[no-untyped-def]
    go_on = asyncio.Event()

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"data: one\n\n", b"data: two\n\n"):
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            await go_on.wait()
        writer.write(b"0\r\n\r\n")

    server, pool, target = await serve(stream)
    resp = await post(pool, target)
    pieces = []
    async for data in resp.chunks():
        pieces.append(data)
        go_on.set()  # the server sends the rest only once the first piece got here
    assert pieces == [b"data: one\n\n", b"data: two\n\n"]
    assert pool.idle and server.connections == 1  # the finished stream's connection is kept


async def test_an_abandoned_body_iterator_closed_late_leaves_the_next_exchange_alone(serve) -> None:  # type: ignore[no-untyped-def]
    """A stream given up half-way (the caller stopped at an error event) whose iterator is
    only closed later, after its connection went back to the pool and was reused."""

    async def two_streams(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(reply(b"data: one\n\ndata: error\n\n"))
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"5\r\nlater\r\n0\r\n\r\n")

    server, pool, target = await serve(two_streams)
    first = await post(pool, target)
    abandoned = first.chunks()
    assert await anext(abandoned) == b"data: one\n\ndata: error\n\n"
    first.close()  # the whole body was in: the connection goes back to the pool
    second = await post(pool, target)
    assert second.conn is first.conn  # reused
    await abandoned.aclose()  # the old iterator's cleanup runs now
    assert await asyncio.wait_for(second.read(), 5) == b"later"
    assert server.connections == 1


async def test_gzip_bodies_are_inflated_whole_and_streamed(serve) -> None:  # type: ignore[no-untyped-def]
    text = b'{"choices": []}' * 200

    async def gz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_request(reader)
            writer.write(reply(gzip.compress(text), b"content-encoding: gzip"))

    server, pool, target = await serve(gz)
    assert await (await post(pool, target)).read() == text
    streamed = b"".join([d async for d in (await post(pool, target)).chunks()])
    assert streamed == text
    assert b"accept-encoding: gzip, deflate" in server.heads[0]


def answer_once(raw: bytes) -> Handler:
    """A server that reads one request, sends `raw` and hangs up."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()

    return handler


async def test_interim_responses_are_skipped(serve) -> None:  # type: ignore[no-untyped-def]
    async def hints_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nretry-after: 99\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # the interim response arrives on its own
        writer.write(reply(b"the answer", b"retry-after: 3"))
        await writer.drain()

    _, pool, target = await serve(hints_first)
    resp = await post(pool, target)
    assert resp.status == 200 and resp.headers == {b"content-length": b"10", b"retry-after": b"3"}
    assert await resp.read() == b"the answer"


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
async def test_deflate_bodies_are_inflated_wrapped_or_raw(serve, wbits: int) -> None:  # type: ignore[no-untyped-def]
    text = b"deflated " * 300
    packer = zlib.compressobj(wbits=wbits)
    packed = packer.compress(text) + packer.flush()
    _, pool, target = await serve(answer_once(reply(packed, b"content-encoding: deflate")))
    assert await (await post(pool, target)).read() == text


@pytest.mark.parametrize(
    ("header", "wait"),
    [(b"retry-after: 7", 7.0), (b"retry-after-ms: 1500", 1.5), (b"retry-after: Wed, 21 Oct 2026 07:28:00 GMT", None)],
)
async def test_retry_after_is_read_in_seconds(serve, header: bytes, wait: float | None) -> None:  # type: ignore[no-untyped-def]
    _, pool, target = await serve(answer_once(reply(b"{}", header)))
    resp = await post(pool, target)
    assert resp.retry_after == wait
    resp.close()


async def test_a_body_delimited_by_close_is_read_whole_and_not_reused(serve) -> None:  # type: ignore[no-untyped-def]
    server, pool, target = await serve(answer_once(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"))
    assert await (await post(pool, target)).read() == b"all of it"
    assert await (await post(pool, target)).read() == b"all of it"
    assert server.connections == 2


async def test_a_body_cut_short_is_a_stream_cut(serve) -> None:  # type: ignore[no-untyped-def]
    _, pool, target = await serve(answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b"))
    resp = await post(pool, target)
    with pytest.raises(UpstreamError) as err:
        await resp.read()
    assert err.value.kind == "stream_cut"


async def test_no_answer_in_time_is_a_first_byte_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await asyncio.sleep(5)

    server, pool, target = await serve(silent)
    with pytest.raises(UpstreamTimeout) as err:
        await post(pool, target, first_byte=0.1)
    assert err.value.phase == "first_byte" and err.value.status == 504


async def test_a_trickling_stream_hits_the_total_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(100):
            writer.write(b"2\r\n.\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)

    server, pool, target = await serve(trickle)
    resp = await post(pool, target, first_byte=0.1, total=0.3)
    got = 0
    with pytest.raises(UpstreamTimeout) as err:
        async for data in resp.chunks():
            got += len(data)
    assert err.value.phase == "total"
    assert got > 0  # it did flow: each gap was under the first-byte timeout


async def test_a_refused_connection_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = http1.Pool("http", "127.0.0.1", port, limit=1, connect_timeout=2)
    with pytest.raises(UpstreamError) as err:
        await post(pool, http1.Target(f"http://127.0.0.1:{port}/v1"))
    assert err.value.kind == "connect" and err.value.retryable
    assert pool.open == 0  # the slot was given back


async def test_malformed_http_is_an_upstream_error(serve) -> None:  # type: ignore[no-untyped-def]
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    server, pool, target = await serve(garbage)
    with pytest.raises(UpstreamError) as err:
        await post(pool, target)
    assert "malformed HTTP" in err.value.message


def test_header_values_cannot_smuggle_lines() -> None:
    target = http1.Target("http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="line break"):
        http1.request_head(target, {"x-api-key": "k\r\nx-evil: 1"}, 2)


def test_targets_put_host_and_path_in_the_request_head() -> None:
    assert http1.Target("https://api.example.com/v1/chat?x=1").start == (
        "POST /v1/chat?x=1 HTTP/1.1\r\nhost: api.example.com\r\n"
    )
    assert http1.Target("https://api.example.com/v1").origin == ("https", "api.example.com", 443)
    assert http1.Target("http://[::1]:8080/v1").start.endswith("host: [::1]:8080\r\n")
    with pytest.raises(ValueError):
        http1.Target("ftp://example.com/")


async def test_a_slow_reader_pauses_the_socket_and_still_gets_every_byte(serve) -> None:  # type: ignore[no-untyped-def]
    piece = b"x" * 65536
    pieces = 64  # 4 MiB, four times the high-water mark

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: " + str(len(piece) * pieces).encode() + b"\r\n\r\n")
        for _ in range(pieces):
            writer.write(piece)
            await writer.drain()

    server, pool, target = await serve(flood)
    resp = await post(pool, target)
    total = 0
    saw_pause = False
    async for data in resp.chunks():
        total += len(data)
        saw_pause = saw_pause or resp.conn.paused
        await asyncio.sleep(0.002)
    assert total == len(piece) * pieces
    assert saw_pause


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_verifies_the_server_against_the_trusted_store(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        writer.write(reply(b"over tls"))
        await writer.drain()

    srv = Server(hello)
    port = await srv.start(server_ctx)
    try:
        untrusted = http1.Pool("https", "localhost", port, limit=1, connect_timeout=2)
        with pytest.raises(UpstreamError) as err:
            await post(untrusted, http1.Target(f"https://localhost:{port}/v1"))
        assert err.value.kind == "connect"
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        trusted = http1.Pool("https", "localhost", port, limit=1, connect_timeout=2)
        assert await (await post(trusted, http1.Target(f"https://localhost:{port}/v1"))).read() == b"over tls"
        trusted.close()
    finally:
        assert srv.server is not None
        srv.server.close()

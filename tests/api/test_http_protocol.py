"""The server protocol's header cork: a response's headers share a write with its first
body piece, nothing is held past the loop's current turn, and order never changes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import uvicorn
from starlette.types import Receive, Scope, Send

from creditgate.http_protocol import HeaderCork, HttpProtocol


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def cork() -> tuple[HeaderCork, Recorder]:
    recorder = Recorder()
    return HeaderCork(recorder, asyncio.get_running_loop()), recorder  # type: ignore[arg-type]


async def test_headers_go_out_with_the_first_body_piece() -> None:
    c, r = cork()
    c.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert r.writes == []
    c.write(b"{}")
    assert r.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    await asyncio.sleep(0)
    assert len(r.writes) == 1  # the end-of-turn flush finds nothing left


async def test_stream_chunks_are_written_one_by_one() -> None:
    c, r = cork()
    c.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    c.write(b"5\r\nfirst\r\n")
    c.write(b"6\r\nsecond\r\n")
    assert r.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n", b"6\r\nsecond\r\n"]


async def test_lonely_headers_leave_at_the_end_of_the_turn() -> None:
    c, r = cork()
    c.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await asyncio.sleep(0)
    assert r.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]


async def test_close_flushes_first_and_other_attributes_pass_through() -> None:
    c, r = cork()
    c.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    c.close()
    assert r.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"] and r.closed
    assert c.get_extra_info("peername") == ("127.0.0.1", 1)


async def test_a_server_with_the_protocol_answers_plain_and_streamed_responses(unused_tcp_port: int) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for piece in (b"a", b"b", b"c"):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})

    config = uvicorn.Config(app, host="127.0.0.1", port=unused_tcp_port, http=HttpProtocol, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(1000):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{unused_tcp_port}") as client:
            for _ in range(3):  # keep-alive: several responses on one connection
                plain = await client.get("/")
                assert plain.status_code == 200 and plain.text == "hello"
                streamed = await client.get("/stream")
                assert streamed.text == "abc"
    finally:
        server.should_exit = True
        await task

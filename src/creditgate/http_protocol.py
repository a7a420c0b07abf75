"""The server's HTTP/1.1 protocol: uvicorn's httptools protocol, with each response's status
line and headers sent in the same write as the first piece of its body.

uvicorn writes the header block to the socket as soon as the app sends
`http.response.start`, and each body piece with a write of its own, so a plain JSON reply
costs two system calls and reaches the client as two segments. On a small machine a write
to a local socket is one of the most expensive steps of a request. `HeaderCork` holds a
header block back until the next write (the first body piece, which usually follows at
once) and then writes both together; if no write follows within the current turn of the
event loop, the headers go out alone at the end of it, so nothing waits for anything.
Everything after the header block, including every chunk of a stream, is written as it comes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderCork:
    """A transport that delays a header block (a write that starts with `HTTP/1.`) until the
    next write or the end of the loop's current turn; all else is passed on unchanged."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
        elif data[:7] == b"HTTP/1.":
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        self.flush()
        self._transport.writelines(lines)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a `HeaderCork`. Pass the class as
    uvicorn's `http` setting."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeaderCork(transport, self.loop))  # type: ignore[arg-type]

"""Server-sent events: an incremental parser for upstream streams and the encoders for ours.

The parser follows the rules the official SDKs use: events end at a blank line (LF, CRLF or
CR), `:` lines are comments, several `data:` lines join with a newline.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    event: str | None
    data: bytes


class SSEParser:
    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # keep a trailing CR: it may be the first half of a CRLF
            tail = b"\r" if buf.endswith(b"\r") else b""
            buf = buf[: len(buf) - len(tail)].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        out: list[Event] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if not line:
                if self._data or self._event is not None:
                    out.append(Event(self._event, b"\n".join(self._data)))
                self._event, self._data = None, []
                continue
            if line[0] == 58:  # b":" comment / keep-alive
                continue
            field, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                self._data.append(value)
            elif field == b"event":
                self._event = value.decode("utf-8", "replace")
        self._buf = buf[start:]
        return out

    def close(self) -> list[Event]:
        """Flush an event that was not followed by a blank line before EOF."""
        out = self.feed(b"\n\n") if self._buf or self._data else []
        return out


def data_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def named_event(name: str, payload: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


DONE = b"data: [DONE]\n\n"

"""Error envelopes: every failure is shaped the way the imitated vendor shapes it.

A client SDK decides what exception to raise (and whether to retry) from the status and the
body, so a simulated failure must look exactly like a real one from that vendor.
"""

from __future__ import annotations

import enum
import secrets
from typing import Any

import orjson


class Protocol(enum.Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"


class SimError(Exception):
    """Raised by handlers; rendered in the protocol's envelope by the request wrapper."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


_OPENAI_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def request_id() -> str:
    return "req_sim" + secrets.token_hex(10)


def error_object(protocol: Protocol, status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """The error body as a dict (also used for in-stream error events)."""
    if protocol is Protocol.OPENAI:
        kind, code = _OPENAI_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}
    if protocol is Protocol.ANTHROPIC:
        kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    google = _GOOGLE_STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    return {"error": {"code": status, "message": message, "status": google}}


def error_body(protocol: Protocol, status: int, message: str, param: str | None = None) -> bytes:
    return orjson.dumps(error_object(protocol, status, message, param))


def simulated_failure_message(status: int) -> str:
    return f"Simulated upstream failure (HTTP {status}) requested by the simulator's behaviour prefix."

"""JSON and OpenAI-envelope error responses, shared by every Starlette route."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from creditgate.errors import BadRequest, GatewayError, http_status

Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers=dict(headers or {}), media_type="application/json")


def request_id_of(request: Request) -> str:
    """The id the app's middleware gave this request, or a new one outside the app."""
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else "req_" + secrets.token_hex(12)


def error_response(err: GatewayError, request_id: str) -> Response:
    """The OpenAI error envelope (all four keys), with the status and headers of `err`."""
    body = {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}
    headers = {**err.headers, "x-request-id": request_id}
    return json_response(body, http_status(err), headers)


def handles_errors(endpoint: Endpoint) -> Endpoint:
    """Render a `GatewayError` raised by `endpoint` as an error response."""

    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except GatewayError as err:
            return error_response(err, request_id_of(request))

    wrapper.__name__ = endpoint.__name__
    wrapper.__doc__ = endpoint.__doc__
    return wrapper


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc.msg}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def bearer_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"

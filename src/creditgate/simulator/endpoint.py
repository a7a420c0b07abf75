"""What every protocol endpoint does before it answers, in one place.

Order: read the behaviour prefix (400 if unknown), record the request, check the API key
(401), inject configured failures (``status``, ``fail_first``, ``fail_every``, ``hang``;
``cut_after`` on a non-stream request is handled by the protocol module), parse the JSON body (400), then hand
over to the protocol handler. Failures are rendered in the protocol's own envelope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from creditgate.simulator.behaviour import Behaviour, BehaviourError, parse_behaviour
from creditgate.simulator.envelopes import (
    Protocol,
    SimError,
    error_body,
    request_id,
    simulated_failure_message,
)
from creditgate.simulator.state import SimState
from creditgate.simulator.transport import hang, json_response

STATE_KEY = web.AppKey("creditgate_simulator_state", SimState)
FAIL_FIRST_STATUS = 503


@dataclass(slots=True)
class Call:
    """One accepted request, ready for a protocol handler."""

    request: web.Request
    behaviour: Behaviour
    body: dict[str, Any]
    state: SimState
    protocol: Protocol


Handler = Callable[[Call], Awaitable[web.StreamResponse]]
AuthCheck = Callable[[web.Request], bool]


def id_headers(protocol: Protocol) -> dict[str, str]:
    if protocol is Protocol.OPENAI:
        return {"x-request-id": request_id()}
    if protocol is Protocol.ANTHROPIC:
        return {"request-id": request_id()}
    return {}


def _bearer(request: web.Request) -> bool:
    auth = request.headers.get("Authorization", "")
    return auth[:7].lower() == "bearer " and bool(auth[7:].strip())


def openai_auth(request: web.Request) -> bool:
    return _bearer(request)


def anthropic_auth(request: web.Request) -> bool:
    return bool(request.headers.get("x-api-key", "").strip()) or _bearer(request)


def gemini_auth(request: web.Request) -> bool:
    return bool(request.headers.get("x-goog-api-key", "").strip() or request.query.get("key", "").strip())


_MISSING_KEY = {
    Protocol.OPENAI: "You didn't provide an API key. Send 'Authorization: Bearer <key>' "
    "(the simulator accepts any key).",
    Protocol.ANTHROPIC: "x-api-key header is required (the simulator accepts any key).",
    Protocol.GEMINI: "Method doesn't allow unregistered callers. Send 'x-goog-api-key' or '?key=' "
    "(the simulator accepts any key).",
}


def error_response(
    protocol: Protocol,
    status: int,
    message: str,
    param: str | None = None,
    behaviour: Behaviour | None = None,
) -> web.Response:
    headers = id_headers(protocol)
    if behaviour is not None and behaviour.retry_after is not None:
        headers["Retry-After"] = behaviour.retry_after
    return json_response(error_body(protocol, status, message, param), status, headers)


def endpoint(
    protocol_of: Callable[[web.Request], Protocol],
    auth: AuthCheck,
    handler: Handler,
    *,
    has_body: bool = True,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a protocol handler with the shared prefix/record/auth/fault/parse steps."""

    async def handle(request: web.Request) -> web.StreamResponse:
        protocol = protocol_of(request)
        spec = request.match_info.get("spec", "")
        try:
            behaviour = parse_behaviour(spec)
        except BehaviourError as exc:
            return error_response(protocol, 400, str(exc))
        raw = await request.read()
        state = request.app[STATE_KEY]
        state.record(request.method, request.path, request.query, request.headers, raw)
        if not auth(request):
            return error_response(protocol, 401, _MISSING_KEY[protocol], behaviour=behaviour)
        failure = behaviour.status
        if behaviour.fail_first or behaviour.fail_every:
            # Only some requests fail; `status` just says with which status.
            seen = state.take_attempt(spec)
            due = seen < behaviour.fail_first or (behaviour.fail_every and (seen + 1) % behaviour.fail_every == 0)
            failure = (failure or FAIL_FIRST_STATUS) if due else None
        if failure is not None:
            return error_response(protocol, failure, simulated_failure_message(failure), behaviour=behaviour)
        if behaviour.hang:
            return await hang(request)
        try:
            body = _parse_body(raw) if has_body else {}
            return await handler(Call(request, behaviour, body, state, protocol))
        except SimError as exc:
            return error_response(protocol, exc.status, exc.message, exc.param, behaviour)

    return handle


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SimError(400, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise SimError(400, "The request body must be a JSON object.")
    return body


def require(body: dict[str, Any], field: str, kind: type | tuple[type, ...], what: str) -> Any:
    """Fetch a required field or fail with 400 naming it."""
    value = body.get(field)
    if value is None:
        raise SimError(400, f"Missing required parameter: '{field}'.", param=field)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise SimError(400, f"Invalid type for '{field}': expected {what}.", param=field)
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def optional_int(body: dict[str, Any], field: str, *, minimum: int = 0) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SimError(400, f"Invalid '{field}': expected an integer >= {minimum}.", param=field)
    return value


def stop_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise SimError(400, f"Invalid '{field}': expected a string or a list of strings.", param=field)

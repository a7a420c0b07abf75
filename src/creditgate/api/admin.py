"""The operator's API under /admin, enabled only when an admin token is configured.

Every route wants `Authorization: Bearer <admin token>` (compared in constant time) and
answers 401 without it; with no token configured every /admin route answers 404, as if
it did not exist. Amounts may be decimal strings ("12.50") or JSON numbers, with at most
six decimals.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from creditgate.accounts import KeyOptions
from creditgate.api.responses import Endpoint, bearer_token, handles_errors, json_body, json_response
from creditgate.config import Settings
from creditgate.errors import BadRequest, NotFound, Unauthorized
from creditgate.ledger.operations import page_limit
from creditgate.ledger.service import BillingService
from creditgate.money import AmountError, to_micros
from creditgate.routing import Router


def amount_of(value: Any, param: str) -> int:
    if value is None:
        raise BadRequest(f"{param} is required", param=param)
    try:
        return to_micros(value)
    except AmountError as exc:
        raise BadRequest(f"{param}: {exc}", param=param) from None


def int_of(value: Any, param: str, *, optional: bool = True) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(f"{param} must be a whole number", param=param)
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{param} must be a whole number", param=param) from None


def path_id(request: Request, name: str = "id") -> int:
    try:
        return int(request.path_params[name])
    except ValueError:
        raise NotFound(f"no such {name}: {request.path_params[name]!r}") from None


def string_list(value: Any, param: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{param} must be a list of strings", param=param)
    return tuple(value)


def timestamp(value: Any, param: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{param} must be an ISO 8601 time like 2030-01-31T00:00:00Z", param=param) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def key_options(body: dict[str, Any]) -> KeyOptions:
    cap = body.get("daily_cap")
    name = body.get("name") or ""
    if not isinstance(name, str):
        raise BadRequest("name must be a string", param="name")
    return KeyOptions(
        name=name,
        models=string_list(body.get("models"), "models"),
        ip_allowlist=string_list(body.get("ip_allowlist"), "ip_allowlist"),
        expires_at=timestamp(body.get("expires_at"), "expires_at"),
        daily_cap=amount_of(cap, "daily_cap") if cap is not None else None,
        rpm=int_of(body.get("rpm"), "rpm"),
    )


def admin_routes(service: BillingService, settings: Settings, router: Router | None = None) -> list[Route]:
    """The /admin routes; `router` adds `GET /admin/deployments` (routing health)."""
    token = settings.admin_token

    def guarded(endpoint: Endpoint) -> Endpoint:
        @handles_errors
        async def check(request: Request) -> Response:
            if not token:
                raise NotFound(f"no route for {request.method} {request.url.path}", code="not_found")
            given = bearer_token(request) or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise Unauthorized(
                    "send the admin token as `Authorization: Bearer <token>`", code="invalid_admin_token"
                )
            return await endpoint(request)

        return check

    async def create_account(request: Request) -> Response:
        body = await json_body(request)
        name = body.get("name") or ""
        if not isinstance(name, str):
            raise BadRequest("name must be a string", param="name")
        view = await service.create_account(body.get("email"), name=name, trial=bool(body.get("trial", False)))
        return json_response(view, 201)

    async def get_account(request: Request) -> Response:
        account_id = path_id(request)
        view = await service.account_view(account_id)
        view["keys"] = await service.list_keys(account_id)
        return json_response(view)

    async def patch_account(request: Request) -> Response:
        body = await json_body(request)
        cap = body.get("daily_cap")
        view = await service.set_account(
            path_id(request),
            status=body.get("status"),
            daily_cap=amount_of(cap, "daily_cap") if cap is not None else None,
            clear_cap="daily_cap" in body and cap is None,
        )
        return json_response(view)

    async def create_key(request: Request) -> Response:
        body = await json_body(request)
        made = await service.create_key(path_id(request), key_options(body))
        return json_response(made, 201)

    async def reset_key(request: Request) -> Response:
        return json_response(await service.reset_key(path_id(request)))

    async def delete_key(request: Request) -> Response:
        key_id = path_id(request)
        await service.delete_key(key_id)
        return json_response({"id": key_id, "deleted": True})

    async def add_credits(request: Request) -> Response:
        body = await json_body(request)
        kind = body.get("kind", "grant")
        if kind not in ("grant", "topup", "bonus"):
            raise BadRequest("kind must be grant, topup or bonus", param="kind")
        idem = body.get("idempotency_key") or request.headers.get("idempotency-key")
        made = await service.add_credits(
            path_id(request),
            amount_of(body.get("amount"), "amount"),
            kind,
            expires_in_days=int_of(body.get("expires_in_days"), "expires_in_days"),
            idempotency_key=str(idem) if idem else None,
            description=str(body["description"]) if body.get("description") else None,
        )
        return json_response(made, 201)  # a replay answers exactly as the original did

    async def account_usage(request: Request) -> Response:
        limit = page_limit(request.query_params.get("limit"))
        data, cursor = await service.usage_page(path_id(request), limit, request.query_params.get("cursor"))
        return json_response({"data": data, "next_cursor": cursor})

    async def deployments(request: Request) -> Response:
        assert router is not None
        return json_response({"data": router.snapshot()})

    extra = [Route("/admin/deployments", guarded(deployments), methods=["GET"])] if router else []
    return [
        *extra,
        Route("/admin/accounts", guarded(create_account), methods=["POST"]),
        Route("/admin/accounts/{id}", guarded(get_account), methods=["GET"]),
        Route("/admin/accounts/{id}", guarded(patch_account), methods=["PATCH"]),
        Route("/admin/accounts/{id}/keys", guarded(create_key), methods=["POST"]),
        Route("/admin/accounts/{id}/credits", guarded(add_credits), methods=["POST"]),
        Route("/admin/accounts/{id}/usage", guarded(account_usage), methods=["GET"]),
        Route("/admin/keys/{id}/reset", guarded(reset_key), methods=["POST"]),
        Route("/admin/keys/{id}", guarded(delete_key), methods=["DELETE"]),
    ]

"""Public, read-only routes: the model lists and health checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from creditgate.catalog import Catalog, CatalogModel
from creditgate.config import CurrencyConfig
from creditgate.money import json_amount
from creditgate.routing import Router

ReadyCheck = Callable[[], Awaitable[None]]


def json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers=dict(headers or {}), media_type="application/json")


def _pricing(model: CatalogModel, currency: CurrencyConfig) -> dict[str, Any]:
    p = model.price
    return {
        "currency": currency.code,
        "unit": "per 1M tokens",
        "input": json_amount(p.input),
        "output": json_amount(p.output),
        "cached_input": json_amount(p.cached_input),
        "cache_write_input": json_amount(p.cache_write_input),
    }


def _rfc3339(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def openai_model(model: CatalogModel, currency: CurrencyConfig) -> dict[str, Any]:
    """One model, in the fields of both SDKs: OpenAI's (`object`, `created`, `owned_by`) and
    Anthropic's (`type`, `display_name`, `created_at`), plus prices and limits."""
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "type": "model",
        "display_name": model.name,
        "created_at": _rfc3339(model.created),
        "name": model.name,
        "context_window": model.context_window,
        "max_output_tokens": model.max_output_tokens,
        "vision": model.vision,
        "tags": sorted(model.tags),
        "pricing": _pricing(model, currency),
    }


def public_routes(
    catalog: Catalog, router: Router, currency: CurrencyConfig, ready_checks: Mapping[str, ReadyCheck | None]
) -> list[Route]:
    created = next(iter(catalog), None)
    virtual = [
        {
            "id": v["id"],
            "object": "model",
            "created": created.created if created else 0,
            "owned_by": "creditgate",
            "type": "model",
            "display_name": v["id"],
            "created_at": _rfc3339(created.created if created else 0),
            "description": v.get("description", ""),
            "virtual": True,
        }
        for v in router.virtual_models()
    ]
    listed = [openai_model(m, currency) for m in catalog] + virtual
    # One page in the shapes of both SDKs (Anthropic's pages by `has_more` and `last_id`).
    models_body = orjson.dumps(
        {
            "object": "list",
            "data": listed,
            "has_more": False,
            "first_id": listed[0]["id"] if listed else None,
            "last_id": listed[-1]["id"] if listed else None,
        }
    )
    simple_body = orjson.dumps(
        {
            "currency": currency.code,
            "data": [
                {
                    "id": m.id,
                    "name": m.name,
                    "provider": m.provider_label,
                    "context_window": m.context_window,
                    "input_cost_per_1m": json_amount(m.price.input),
                    "output_cost_per_1m": json_amount(m.price.output),
                    "vision": m.vision,
                    "tags": sorted(m.tags),
                }
                for m in catalog
            ],
        }
    )

    async def list_models(request: Request) -> Response:
        return Response(models_body, media_type="application/json")

    async def get_model(request: Request) -> Response:
        model_id = request.path_params["model_id"]
        model = catalog.get(model_id)
        if model is None:
            for v in virtual:
                if v["id"] == model_id:
                    return json(v)
            return json(
                {
                    "error": {
                        "message": f"model {model_id!r} does not exist; GET /v1/models lists the models",
                        "type": "not_found_error",
                        "param": "model",
                        "code": "model_not_found",
                    }
                },
                404,
            )
        return json(openai_model(model, currency))

    async def api_models(request: Request) -> Response:
        return Response(simple_body, media_type="application/json")

    async def health(request: Request) -> Response:
        return json({"status": "ok"})

    async def ready(request: Request) -> Response:
        report: dict[str, str] = {}
        failing = []
        for name, check in ready_checks.items():
            if check is None:
                report[name] = "disabled"
                continue
            try:
                await asyncio.wait_for(check(), timeout=2.0)
                report[name] = "ok"
            except Exception as exc:
                report[name] = f"error: {type(exc).__name__}"
                failing.append(name)
        if failing:
            return json({"status": "not ready", "failing": failing, **report}, 503)
        return json({"status": "ready", **report})

    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/api/models", api_models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
    ]

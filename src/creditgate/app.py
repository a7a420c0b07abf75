"""`create_app(settings)`: builds every service in the lifespan (no import-time globals) and
wires the routes. The app is a Starlette router behind one small ASGI middleware that gives
every response an `x-request-id` and turns any escaped exception into an error envelope."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from creditgate.api.chat import ChatEndpoint
from creditgate.api.docs import docs_routes
from creditgate.api.public import public_routes
from creditgate.catalog import Catalog
from creditgate.config import Settings
from creditgate.dialects.anthropic import AnthropicDialect
from creditgate.dialects.openai import OpenAIDialect
from creditgate.metrics import Metrics
from creditgate.open_access import OpenAccess
from creditgate.pipeline import Pipeline
from creditgate.providers.registry import build_providers
from creditgate.ratelimit.redis import RedisDailyQuota, RedisRateLimiter
from creditgate.routing import Router
from creditgate.upstream import UpstreamPool

log = logging.getLogger("creditgate")

BillingFactory = Callable[[Settings, Catalog, "Redis | None"], Awaitable[Any]]


class RequestIds:
    """Request ids that sort by time: `req_`, then 12 hex digits of Unix milliseconds, 6 of a
    number drawn at random once per process and 6 of a counter. A request id is its
    settlement's idempotency key, so ids that grow with time keep the inserts into the unique
    indexes of usage and transactions at the right-hand edge of the B-tree (few pages touched
    per commit), and making one needs no system call."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._node = secrets.randbits(24)
        self._count = itertools.count(secrets.randbits(24))

    def __call__(self) -> str:
        return f"req_{time.time_ns() // 1_000_000:012x}{self._node:06x}{next(self._count) & 0xFFFFFF:06x}"


class RequestIdMiddleware:
    """Gives each request an id (`scope["state"]`, and on every response both `x-request-id`
    and `request-id`, the header the Anthropic SDKs read), and answers 500 in the OpenAI
    envelope if anything escapes a route before it responded."""

    def __init__(self, app: ASGIApp, ids: RequestIds | None = None) -> None:
        self.app = app
        self.new_id = ids or RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        rid = request_id.encode()
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", ()))
                present = {name for name, _ in headers}  # a route may have set its own (same id)
                headers += [(name, rid) for name in (b"x-request-id", b"request-id") if name not in present]
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s (%s)", scope.get("method"), scope.get("path"), request_id)
            if started:
                raise
            body = orjson.dumps(
                {
                    "error": {
                        "message": f"internal error; quote request id {request_id} when reporting it",
                        "type": "server_error",
                        "param": None,
                        "code": "internal_error",
                    }
                }
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"), (b"x-request-id", rid), (b"request-id", rid)],
                }
            )
            await send({"type": "http.response.body", "body": body})


class Gateway(Starlette):
    """The app. `POST` to a chat path goes straight to its endpoint (behind the request-id
    middleware) instead of through Starlette's middleware stack and route table: that is
    the hot path, and everything else about the request is the same. Other methods on
    those paths, and every other path, take the normal way (405, 404, ...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chat_routes: dict[str, ASGIApp] = {}
        self.request_ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.chat_routes.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}; see /docs for the API"
        kind, code = "not_found_error", "not_found"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        kind, code = "invalid_request_error", "method_not_allowed"
    else:
        message, kind, code = str(exc.detail), "invalid_request_error", None
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return Response(orjson.dumps(body), exc.status_code, media_type="application/json", headers=dict(exc.headers or {}))


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    router: Router
    pool: UpstreamPool
    pipeline: Pipeline
    billing_service: Any  # BillingService, or OpenAccess with billing off
    redis: Redis | None = None


async def default_billing(settings: Settings, catalog: Catalog, redis: Redis | None = None) -> Any:
    """The ledger-backed billing service; with Redis, rate limits and the demo key's daily
    calls are counted there, so that several gateway processes share them."""
    from creditgate.ledger.service import open_billing

    if not settings.file.billing.enabled:
        return OpenAccess(settings.file.billing.open_keys)
    if redis is None:
        return await open_billing(settings, catalog)
    # Keys are named after the database, so gateways of one deployment share their counts
    # and two deployments on one Redis server never mix theirs.
    space = "creditgate:" + hashlib.sha256(settings.database_url.encode()).hexdigest()[:12]
    return await open_billing(
        settings,
        catalog,
        limiter=RedisRateLimiter(redis, prefix=space + ":rpm:"),
        demo_quota=RedisDailyQuota(redis, prefix=space + ":demo:"),
    )


def create_app(settings: Settings, *, billing_factory: BillingFactory = default_billing) -> Starlette:
    catalog = Catalog(settings.file)
    metrics = Metrics()
    router = Router(catalog, settings.file.server, settings.file.auto, metrics=metrics)
    routes: list[BaseRoute] = []
    state: dict[str, Services] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = UpstreamPool()
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        service = await billing_factory(settings, catalog, redis)
        pipeline = Pipeline(
            catalog=catalog,
            billing=service,
            billing_config=settings.file.billing,
            router=router,
            pool=pool,
            providers=build_providers(),
            metrics=metrics,
        )
        services = Services(settings, catalog, router, pool, pipeline, service, redis)
        state["services"] = services
        app.state.services = services
        _mount_late_routes(app, services)
        try:
            yield
        finally:
            await pipeline.drain()
            await pool.close()
            await service.close()
            if redis is not None:
                await redis.aclose()

    app = Gateway(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.catalog = catalog
    app.state.router = router
    for r in public_routes(catalog, router, settings.file.currency, _ready_checks(state, settings)):
        app.router.routes.append(r)
    for r in docs_routes():
        app.router.routes.append(r)
    app.router.routes.append(Route("/metrics", _metrics_endpoint(metrics), methods=["GET"]))
    app.add_middleware(RequestIdMiddleware, ids=app.request_ids)
    return app


def _ready_checks(state: dict[str, Services], settings: Settings) -> dict[str, Callable[[], Awaitable[None]] | None]:
    async def db() -> None:
        await state["services"].billing_service.ping()

    async def redis() -> None:
        client = state["services"].redis
        assert client is not None
        await client.ping()

    billing = settings.file.billing.enabled
    return {"db": db if billing else None, "redis": redis if settings.redis_url else None}


def _mount_late_routes(app: Starlette, s: Services) -> None:
    """Routes that need the services built in the lifespan."""
    limit = s.settings.file.server.max_body_bytes
    chat = ChatEndpoint(s.pipeline, OpenAIDialect(), max_body_bytes=limit)
    messages = ChatEndpoint(s.pipeline, AnthropicDialect(), max_body_bytes=limit, anthropic_auth=True)
    late: list[BaseRoute] = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
    ]
    if s.settings.file.billing.enabled:
        late += _billing_routes(s)
    app.router.routes[:0] = late
    if isinstance(app, Gateway):
        app.chat_routes.update(
            {
                "/v1/chat/completions": RequestIdMiddleware(chat, app.request_ids),
                "/v1/messages": RequestIdMiddleware(messages, app.request_ids),
            }
        )


def _billing_routes(s: Services) -> list[BaseRoute]:
    from creditgate.api.account import account_routes
    from creditgate.api.admin import admin_routes

    return [*account_routes(s.billing_service), *admin_routes(s.billing_service, s.settings, s.router)]


def _metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, headers={"content-type": content_type})

    return endpoint


def app_from_env() -> Starlette:
    """For `uvicorn --factory` with several workers: the config path comes from
    CREDITGATE_CONFIG."""
    from creditgate.config import load_settings

    return create_app(load_settings())

"""Small catalogs, a hand-driven clock, requests, and a failover loop shaped like the pipeline's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from creditgate.canonical import ChatRequest
from creditgate.catalog import Catalog, CatalogModel, Deployment
from creditgate.config import FileConfig
from creditgate.errors import GatewayError, UpstreamError
from creditgate.routing import Router


def model(
    model_id: str, *, price: str = "1", deployments: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    """A catalog entry; by default one deployment on provider `p1` and the same price for
    input and output (so the blended price is `price`)."""
    return {
        "id": model_id,
        "price": {"input": price, "output": price},
        "deployments": deployments or [{"provider": "p1", "model": model_id}],
        **extra,
    }


def dep(provider: str, name: str, *, priority: int = 0, weight: int = 1) -> dict[str, Any]:
    return {"provider": provider, "model": name, "priority": priority, "weight": weight}


def catalog_of(*models: dict[str, Any]) -> Catalog:
    providers = sorted({d["provider"] for m in models for d in m["deployments"]})
    config = FileConfig.model_validate(
        {
            "providers": [{"id": p, "type": "openai", "base_url": "http://127.0.0.1:9"} for p in providers],
            "models": list(models),
        }
    )
    return Catalog(config)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat(
    text: str = "hello",
    *,
    model: str = "auto",
    fallbacks: Sequence[str] = (),
    has_images: bool = False,
    body_bytes: int | None = None,
    **body: Any,
) -> ChatRequest:
    content: Any = text
    if has_images:
        content = [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 4000}},
        ]
    payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    return ChatRequest(
        body=payload,
        model=model,
        fallbacks=list(fallbacks),
        has_images=has_images,
        body_bytes=body_bytes if body_bytes is not None else len(str(payload).encode()),
    )


def everyone(_: CatalogModel) -> bool:
    return True


def fail(status: int = 503, *, retry_after: float | None = None) -> UpstreamError:
    return UpstreamError(f"upstream said {status}", upstream_status=status, retry_after=retry_after)


@dataclass
class Outcome:
    tried: list[str] = field(default_factory=list)
    served_by: str | None = None
    error: GatewayError | None = None


def serve(
    router: Router, models: Sequence[CatalogModel], upstream: Callable[[Deployment], UpstreamError | None]
) -> Outcome:
    """Drive one request through the router the way the pipeline does."""
    out = Outcome()
    last: UpstreamError | None = None
    for m, d in router.attempts(models):
        out.tried.append(d.key)
        attempt = router.started(d, model=m, request_id="req-test")
        err = upstream(d)
        if err is None:
            router.succeeded(attempt, latency_ms=100)
            out.served_by = d.key
            return out
        router.failed(attempt, err)
        last = err
        if not router.should_fail_over(err):
            out.error = err
            return out
    out.error = router.exhausted(len(out.tried), last, models)
    return out


def always(outcome: UpstreamError | None) -> Callable[[Deployment], UpstreamError | None]:
    """An upstream that answers every call the same way (None: success)."""
    return lambda _: outcome


def picked(router: Router, m: CatalogModel) -> str | None:
    d = router.pick(m)
    return None if d is None else d.key

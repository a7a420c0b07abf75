"""Which upstream failures move a request on, and Retry-After."""

from __future__ import annotations

import pytest

from creditgate.errors import AllUpstreamsFailed, UpstreamError, UpstreamTimeout

from .conftest import RouterFactory
from .support import Clock, catalog_of, dep, fail, model, serve

THREE = model("m", deployments=[dep("a", "m"), dep("b", "m", priority=1), dep("c", "m", priority=2)])


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_request_errors_are_not_retried_elsewhere(make_router: RouterFactory, status: int) -> None:
    catalog = catalog_of(THREE)
    router = make_router(catalog)
    out = serve(router, [catalog.models["m"]], lambda d: fail(status))
    assert out.tried == ["a/m"]
    assert isinstance(out.error, UpstreamError) and out.error.upstream_status == status


@pytest.mark.parametrize(
    "error",
    [
        fail(401),
        fail(403),
        fail(429),
        fail(500),
        fail(502),
        fail(503),
        fail(504),
        fail(529),
        UpstreamError("refused", upstream_status=0, kind="connect"),
        UpstreamTimeout("slow", phase="connect"),
        UpstreamTimeout("slow", phase="first_byte"),
        UpstreamTimeout("slow", phase="total"),
    ],
    ids=lambda e: e.kind if not e.upstream_status else str(e.upstream_status),
)
def test_transient_failures_fail_over(make_router: RouterFactory, error: UpstreamError) -> None:
    catalog = catalog_of(THREE)
    router = make_router(catalog)
    out = serve(router, [catalog.models["m"]], lambda d: error if d.key == "a/m" else None)
    assert out.tried == ["a/m", "b/m"] and out.served_by == "b/m"
    reason = f"http_{error.upstream_status}" if error.upstream_status else error.kind
    assert router.metrics.failovers.labels(deployment="a/m", reason=reason)._value.get() == 1


def test_retry_after_keeps_a_deployment_out_until_then(make_router: RouterFactory, clock: Clock) -> None:
    catalog = catalog_of(model("m", deployments=[dep("a", "m"), dep("b", "m", priority=1)]))
    router = make_router(catalog, failure_threshold=10)
    m = catalog.models["m"]
    serve(router, [m], lambda d: fail(429, retry_after=20) if d.key == "a/m" else None)
    clock.advance(19)
    assert serve(router, [m], lambda d: None).tried == ["b/m"]
    row = next(r for r in router.snapshot() if r["key"] == "a/m")
    assert row["state"] == "healthy" and row["cooling_down_until"] is not None
    clock.advance(1)
    assert serve(router, [m], lambda d: None).tried == ["a/m"]


def test_all_failed_passes_on_the_last_retry_after(make_router: RouterFactory) -> None:
    catalog = catalog_of(model("m"))
    router = make_router(catalog)
    out = serve(router, [catalog.models["m"]], lambda d: fail(429, retry_after=2.5))
    assert isinstance(out.error, AllUpstreamsFailed)
    assert out.error.headers == {"retry-after": "3"}
    assert "HTTP 429" in out.error.message and "upstream said 429" in out.error.message


def test_an_absurd_retry_after_is_capped(make_router: RouterFactory, clock: Clock) -> None:
    catalog = catalog_of(model("m"))
    router = make_router(catalog, {"max_retry_after_seconds": 60})
    m = catalog.models["m"]
    serve(router, [m], lambda d: fail(503, retry_after=10**9))
    clock.advance(60)
    assert serve(router, [m], lambda d: None).served_by == "p1/m"

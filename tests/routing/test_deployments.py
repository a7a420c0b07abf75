"""Choosing deployments: weights within a priority, priorities in order, bounded failover
across deployments and fallback models."""

from __future__ import annotations

from collections import Counter

from creditgate.errors import AllUpstreamsFailed, NoDeployment

from .conftest import RouterFactory
from .support import catalog_of, chat, dep, everyone, fail, model, picked, serve

TWO_WEIGHTED = model("m", deployments=[dep("a", "m", weight=3), dep("b", "m", weight=1)])


def test_traffic_splits_by_weight_among_the_best_priority(make_router: RouterFactory) -> None:
    catalog = catalog_of(
        model(
            "m",
            deployments=[
                dep("a", "m", weight=3),
                dep("b", "m", weight=1),
                dep("c", "m", priority=1, weight=100),
            ],
        )
    )
    router = make_router(catalog, seed=7)
    picks = Counter(picked(router, catalog.models["m"]) for _ in range(1000))
    assert abs(picks["a/m"] - 750) <= 75
    assert abs(picks["b/m"] - 250) <= 75
    assert picks["c/m"] == 0  # a lower priority waits while the first is healthy


def test_next_priority_takes_over_when_the_first_is_out_of_rotation(make_router: RouterFactory) -> None:
    catalog = catalog_of(model("m", deployments=[dep("a", "m"), dep("b", "m", priority=1)]))
    router = make_router(catalog, failure_threshold=1)
    m = catalog.models["m"]
    first = serve(router, [m], lambda d: fail(503) if d.key == "a/m" else None)
    assert first.tried == ["a/m", "b/m"] and first.served_by == "b/m"
    # a/m's breaker is open now: the next request goes straight to priority 1
    second = serve(router, [m], lambda d: None)
    assert second.tried == ["b/m"]


def test_standby_deployment_with_weight_zero_only_serves_when_alone(make_router: RouterFactory) -> None:
    catalog = catalog_of(model("m", deployments=[dep("a", "m"), dep("spare", "m", weight=0)]))
    router = make_router(catalog, max_attempts=2)
    m = catalog.models["m"]
    assert {picked(router, m) for _ in range(50)} == {"a/m"}
    out = serve(router, [m], lambda d: fail(502) if d.key == "a/m" else None)
    assert out.tried == ["a/m", "spare/m"] and out.served_by == "spare/m"


def test_failover_walks_deployments_then_fallback_models_up_to_the_bound(make_router: RouterFactory) -> None:
    catalog = catalog_of(
        model("m", deployments=[dep("a", "m"), dep("b", "m", priority=1)]),
        model("f1", deployments=[dep("c", "f1")]),
        model("f2", deployments=[dep("d", "f2")]),
    )
    router = make_router(catalog, max_attempts=3)
    models = router.resolve(chat(model="m", fallbacks=["f1", "f2"]), everyone)
    assert [x.id for x in models] == ["m", "f1", "f2"]
    out = serve(router, models, lambda d: fail(500))
    assert out.tried == ["a/m", "b/m", "c/f1"]  # d/f2 is never reached: three attempts in all
    assert isinstance(out.error, AllUpstreamsFailed)
    assert out.error.status == 502
    assert "tried 3 deployments" in out.error.message and "HTTP 500" in out.error.message


def test_a_fallback_serves_when_the_first_model_fails(make_router: RouterFactory) -> None:
    catalog = catalog_of(model("m"), model("f1"), model("f2"))
    router = make_router(catalog, max_attempts=5)
    models = router.resolve(chat(model="m", fallbacks=["f2", "f1"]), everyone)
    out = serve(router, models, lambda d: fail(529) if d.key == "p1/m" else None)
    assert out.tried == ["p1/m", "p1/f2"] and out.served_by == "p1/f2"


def test_a_deployment_shared_by_two_models_is_tried_once_per_request(make_router: RouterFactory) -> None:
    shared = [dep("a", "same")]
    catalog = catalog_of(model("alias1", deployments=shared), model("alias2", deployments=shared))
    router = make_router(catalog, max_attempts=5)
    models = router.resolve(chat(model="alias1", fallbacks=["alias2"]), everyone)
    out = serve(router, models, lambda d: fail(503))
    assert out.tried == ["a/same"]
    assert isinstance(out.error, AllUpstreamsFailed) and "tried 1 deployment," in out.error.message


def test_nothing_available_is_a_503_with_retry_after(make_router: RouterFactory) -> None:
    catalog = catalog_of(TWO_WEIGHTED)
    router = make_router(catalog, failure_threshold=1, cooldown_seconds=30)
    m = catalog.models["m"]
    serve(router, [m], lambda d: fail(503))  # both deployments fail once and open
    out = serve(router, [m], lambda d: None)
    assert out.tried == []
    assert isinstance(out.error, NoDeployment) and out.error.status == 503
    assert out.error.headers["retry-after"] == "30"
    assert "no deployment of m is available" in out.error.message and "retry in 30 s" in out.error.message

"""Circuit breakers: open on repeated failure, one probe after the cooldown, and the
state `GET /admin/deployments` shows."""

from __future__ import annotations

from creditgate.errors import NoDeployment
from creditgate.routing import Router

from .conftest import RouterFactory
from .support import Clock, always, catalog_of, chat, dep, everyone, fail, model, serve

ONE = model("m", deployments=[dep("a", "m")])


def state(router: Router, key: str = "a/m") -> str:
    return str(next(r for r in router.snapshot() if r["key"] == key)["state"])


def test_opens_after_threshold_consecutive_failures(make_router: RouterFactory) -> None:
    catalog = catalog_of(ONE)
    router = make_router(catalog, failure_threshold=3, cooldown_seconds=30)
    m = catalog.models["m"]
    for _ in range(2):
        serve(router, [m], lambda d: fail(503))
    assert state(router) == "healthy"
    serve(router, [m], lambda d: fail(503))
    assert state(router) == "open"
    assert isinstance(serve(router, [m], lambda d: None).error, NoDeployment)


def test_a_success_resets_the_consecutive_count(make_router: RouterFactory) -> None:
    catalog = catalog_of(ONE)
    router = make_router(catalog, failure_threshold=3)
    m = catalog.models["m"]
    for outcome in [fail(503), fail(503), None, fail(503), fail(503)]:
        serve(router, [m], always(outcome))
    assert state(router) == "healthy"


def test_opens_on_a_high_recent_error_rate(make_router: RouterFactory) -> None:
    catalog = catalog_of(ONE)
    router = make_router(
        catalog,
        {"breaker_window": 10, "breaker_min_samples": 10, "breaker_error_rate": 0.5},
        failure_threshold=3,
    )
    m = catalog.models["m"]
    for i in range(9):  # fails every other call: never three in a row
        serve(router, [m], always(fail(500) if i % 2 == 0 else None))
    assert state(router) == "healthy"  # nine outcomes: not enough to judge
    serve(router, [m], lambda d: None)
    serve(router, [m], lambda d: fail(500))  # window: 5 failures of the last 10
    assert state(router) == "open"


def test_request_errors_do_not_count_against_a_deployment(make_router: RouterFactory) -> None:
    catalog = catalog_of(ONE)
    router = make_router(catalog, failure_threshold=1)
    serve(router, [catalog.models["m"]], lambda d: fail(400))
    row = router.snapshot()[0]
    assert row["state"] == "healthy" and row["failures"] == 1 and row["error_rate"] is None


def test_half_open_admits_exactly_one_probe_then_closes_on_success(make_router: RouterFactory, clock: Clock) -> None:
    catalog = catalog_of(ONE)
    router = make_router(catalog, failure_threshold=1, cooldown_seconds=30)
    m = catalog.models["m"]
    serve(router, [m], lambda d: fail(503))
    clock.advance(29.9)
    assert list(router.attempts([m])) == []
    clock.advance(0.1)
    assert state(router) == "half_open"
    ((_, probe_dep),) = router.attempts([m])
    probe = router.started(probe_dep)
    assert list(router.attempts([m])) == []  # the probe is in flight: nobody else gets through
    router.succeeded(probe, latency_ms=50)
    assert state(router) == "healthy"
    assert len(list(router.attempts([m]))) == 1
    transitions = router.metrics.breaker_transitions
    counts = [transitions.labels(deployment="a/m", state=s)._value.get() for s in ("open", "half_open", "healthy")]
    assert counts == [1, 1, 1]


def test_a_failed_probe_reopens_for_another_cooldown(make_router: RouterFactory, clock: Clock) -> None:
    catalog = catalog_of(ONE)
    router = make_router(catalog, failure_threshold=1, cooldown_seconds=30)
    m = catalog.models["m"]
    serve(router, [m], lambda d: fail(503))
    clock.advance(30)
    assert serve(router, [m], lambda d: fail(504)).tried == ["a/m"]
    assert state(router) == "open"
    clock.advance(29)
    assert list(router.attempts([m])) == []
    clock.advance(1)
    assert serve(router, [m], lambda d: None).served_by == "a/m"


def test_a_cancelled_probe_lets_the_next_request_probe(make_router: RouterFactory, clock: Clock) -> None:
    catalog = catalog_of(ONE)
    router = make_router(catalog, failure_threshold=1, cooldown_seconds=5)
    m = catalog.models["m"]
    serve(router, [m], lambda d: fail(503))
    clock.advance(5)
    ((_, d),) = router.attempts([m])
    router.cancelled(router.started(d))
    assert state(router) == "half_open"
    assert len(list(router.attempts([m]))) == 1


def test_snapshot_reports_health_and_speed(make_router: RouterFactory, clock: Clock) -> None:
    catalog = catalog_of(model("m", deployments=[dep("a", "m", weight=2)]), model("n", deployments=[dep("a", "m")]))
    router = make_router(catalog, failure_threshold=2, cooldown_seconds=30)
    models = router.resolve(chat(model="m"), everyone)
    ((_, d),) = router.attempts(models)
    router.succeeded(router.started(d), latency_ms=1000, ttft_ms=200, output_tokens=400)
    busy = router.started(d)
    serve(router, models, lambda d: fail(502))
    serve(router, models, lambda d: fail(502))
    rows = router.snapshot()
    assert len(rows) == 1  # one deployment key shared by two catalog models
    row = rows[0]
    assert row["key"] == "a/m" and row["models"] == ["m", "n"] and row["provider"] == "a"
    assert row["state"] == "open"
    assert row["cooling_down_until"] == "2023-11-14T22:30:30.000Z"  # wall clock 1.7e9 + 1030
    assert row["error_rate"] == round(2 / 3, 4)
    assert row["latency_ms_ewma"] == 1000.0 and row["ttft_ms_ewma"] == 200.0
    assert row["tokens_per_s_ewma"] == 500.0  # 400 tokens in the 800 ms after the first one
    assert row["in_flight"] == 1 and row["requests"] == 4 and row["failures"] == 2
    router.cancelled(busy)
    assert router.snapshot()[0]["in_flight"] == 0


def test_a_verdict_given_twice_counts_once(make_router: RouterFactory) -> None:
    catalog = catalog_of(ONE)
    router = make_router(catalog, failure_threshold=1)
    ((_, d),) = router.attempts([catalog.models["m"]])
    attempt = router.started(d)
    router.succeeded(attempt, latency_ms=10)
    router.failed(attempt, fail(503))
    row = router.snapshot()[0]
    assert row["state"] == "healthy" and row["failures"] == 0 and row["in_flight"] == 0


def test_a_mid_stream_failure_counts_but_is_not_a_failover(make_router: RouterFactory) -> None:
    catalog = catalog_of(ONE)
    router = make_router(catalog, failure_threshold=1)
    ((_, d),) = router.attempts([catalog.models["m"]])
    router.failed(router.started(d), fail(0), mid_stream=True)
    assert state(router) == "open"
    counted = [
        s
        for metric in router.metrics.failovers.collect()
        for s in metric.samples
        if s.name.endswith("_total") and s.value > 0
    ]
    assert counted == []

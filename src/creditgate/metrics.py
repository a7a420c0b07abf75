"""The gateway's Prometheus metrics, in one object built on one registry.

`create_app` builds a single `Metrics` and hands it to whoever records (pipeline, router);
`GET /metrics` serves `metrics.render()`. Each instance owns its registry, so tests and
several apps in one process never collide, and nothing is registered at import time.

Labels stay bounded: models and deployments come from the catalog, dialects and statuses
from a short fixed set. Amounts are integer micros, like everywhere else.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Seconds: from a fast cached reply up to long generations.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        # --- requests (recorded by the pipeline) ---
        self.requests = Counter(
            "creditgate_requests",
            "Chat requests answered, by HTTP status and dialect.",
            ["status", "dialect"],
            registry=r,
        )
        self.request_latency = Histogram(
            "creditgate_request_duration_seconds",
            "Time from request to the last byte, by dialect.",
            ["dialect"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "creditgate_upstream_duration_seconds",
            "Time an upstream took to answer (non-streaming) or to start streaming, by deployment.",
            ["deployment"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "creditgate_tokens",
            "Tokens billed, by model and kind (prompt, completion, cached, reasoning).",
            ["model", "kind"],
            registry=r,
        )
        self.cost_micros = Counter(
            "creditgate_cost_micros",
            "Amount charged in micros of the wallet currency, by model.",
            ["model"],
            registry=r,
        )
        self.in_flight = Gauge("creditgate_requests_in_flight", "Chat requests being served now.", registry=r)
        # --- routing (recorded by the router) ---
        self.route_decisions = Counter(
            "creditgate_route_decisions",
            "Models chosen for requests, by policy (direct for a named model, or the auto-* policy applied).",
            ["policy", "model"],
            registry=r,
        )
        self.failovers = Counter(
            "creditgate_failovers",
            "Upstream failures before the first byte that move a request on to another deployment, "
            "by the deployment that failed and why.",
            ["deployment", "reason"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "creditgate_breaker_transitions",
            "Circuit breaker state changes, by deployment and new state.",
            ["deployment", "state"],
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, for `GET /metrics`."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

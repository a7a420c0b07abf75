"""Which deployment serves a request, and what happens when it fails.

The pipeline drives one request like this (all calls synchronous, no I/O here):

    models = router.resolve(request, permits, request_id=rid)   # chosen model first
    tried, last = 0, None
    for model, deployment in router.attempts(models):
        tried += 1
        attempt = router.started(deployment, model=model, request_id=rid)
        try: ...call the upstream...
        except UpstreamError as err:
            router.failed(attempt, err)
            last = err
            if not router.should_fail_over(err): raise
            continue
        except BaseException: router.cancelled(attempt); raise
        router.succeeded(attempt, latency_ms=..., ttft_ms=..., output_tokens=...)
        break
    else:
        raise router.exhausted(tried, last, models)

Within one model, deployments are drawn by weight among the available ones of the best
(lowest) priority; the next priority is used when all of those are unavailable or already
tried for this request. After a model's deployments, the next model in the list is tried
(an auto policy's alternatives, then the request's `models: [...]` fallbacks), up to
`ServerConfig.max_attempts` attempts in all. A weight of 0 means "standby": such a
deployment gets traffic only when it is the only one left in its priority.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from creditgate.canonical import ChatRequest
from creditgate.catalog import Catalog, CatalogModel, Deployment
from creditgate.config import ServerConfig
from creditgate.errors import (
    AllUpstreamsFailed,
    AllUpstreamsTimedOut,
    Forbidden,
    GatewayError,
    NoDeployment,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
)
from creditgate.metrics import Metrics
from creditgate.money import format_amount
from creditgate.routing.health import BreakerRules, DeploymentHealth, State, counts_against
from creditgate.routing.policies import (
    DESCRIPTIONS,
    AutoSettings,
    Policy,
    choose_policy,
    describe_auto,
    estimate_prompt_tokens,
    order,
)

log = logging.getLogger("creditgate.routing")

VIRTUAL_IDS: tuple[str, ...] = ("auto", "auto-cheap", "auto-best", "auto-code", "auto-fast", "auto-free")


@dataclass(slots=True)
class Attempt:
    """One upstream call in flight. Hand it back to exactly one of `succeeded`, `failed` or
    `cancelled`; a second verdict is ignored."""

    deployment: Deployment
    model: CatalogModel | None
    request_id: str | None
    probe: bool  # the single half-open probe of its deployment
    done: bool = field(default=False)


def failure_reason(error: UpstreamError) -> str:
    """A short, bounded label for an upstream failure: `http_503`, `timeout_first_byte`,
    `connect`..."""
    return f"http_{error.upstream_status}" if error.upstream_status else error.kind


class Router:
    def __init__(
        self,
        catalog: Catalog,
        server: ServerConfig,
        auto: Mapping[str, Any] | None = None,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.catalog = catalog
        self.max_attempts = server.max_attempts
        self.settings = AutoSettings.parse(auto)
        self.metrics = metrics if metrics is not None else Metrics()
        self.clock = clock
        self.wall_clock = wall_clock
        self.rng = rng if rng is not None else random.Random()
        s = self.settings
        rules = BreakerRules(
            failure_threshold=server.failure_threshold,
            cooldown_seconds=server.cooldown_seconds,
            window=s.breaker_window,
            error_rate=s.breaker_error_rate,
            min_samples=s.breaker_min_samples,
            ewma_alpha=s.ewma_alpha,
            max_retry_after_seconds=s.max_retry_after_seconds,
        )
        self._health: dict[str, DeploymentHealth] = {}
        self._deployments: dict[str, Deployment] = {}
        self._served_by: dict[str, list[str]] = {}
        self._decisions: dict[tuple[str, str], Any] = {}
        for model in catalog:
            for d in model.deployments:
                if d.key not in self._health:
                    self._health[d.key] = DeploymentHealth(d.key, rules, self._transition)
                    self._deployments[d.key] = d
                    self._served_by[d.key] = []
                self._served_by[d.key].append(model.id)
        # A catalog model with a virtual model's id shadows it.
        self.virtual_ids = tuple(v for v in VIRTUAL_IDS if catalog.get(v) is None)

    # --- resolution ----------------------------------------------------------------------

    def is_virtual(self, model_id: str) -> bool:
        return model_id in self.virtual_ids

    def resolve(
        self,
        request: ChatRequest,
        permits: Callable[[CatalogModel], bool],
        *,
        request_id: str | None = None,
    ) -> list[CatalogModel]:
        """The catalog models to try, in order: the chosen one first, then an auto policy's
        alternatives, then the request's `models: [...]` fallbacks (each resolved the same
        way). Raises NotFound for an unknown id, Forbidden when the caller may not use the
        requested model (or any model its auto policy could choose), NoDeployment when no
        model fits an auto request at all. A fallback the caller may not use, or one without
        vision for a request with images, is skipped; the first model is the caller's to pick."""
        chosen: list[CatalogModel] = []
        seen: set[str] = set()
        label = "direct"
        for index, model_id in enumerate([request.model, *request.fallbacks]):
            primary = index == 0
            param = "model" if primary else "models"
            model = self.catalog.get(model_id)
            if model is not None:
                if not permits(model):
                    if primary:
                        raise Forbidden(f"your key may not use model {model_id!r}", param=param)
                    log.debug("request %s: skipping fallback %s (not permitted)", request_id, model_id)
                    continue
                if not primary and request.has_images and not model.vision:
                    log.debug("request %s: skipping fallback %s (no images)", request_id, model_id)
                    continue
                found = [model]
            elif self.is_virtual(model_id):
                try:
                    found, policy, reason = self._auto(model_id, request, permits)
                except GatewayError:
                    if primary:
                        raise
                    continue
                if primary:
                    label = policy
                    log.debug(
                        "request %s: %s applied %s (%s): %s",
                        request_id,
                        model_id,
                        policy,
                        reason,
                        ", ".join(m.id for m in found),
                        extra={"request_id": request_id},
                    )
            else:
                raise NotFound(
                    f"model {model_id!r} does not exist; GET /v1/models lists the models you can use",
                    param=param,
                    code="model_not_found",
                )
            for m in found:
                if m.id not in seen:
                    seen.add(m.id)
                    chosen.append(m)
        decision = (label, chosen[0].id)
        counter = self._decisions.get(decision)
        if counter is None:  # label children are looked up once
            counter = self._decisions[decision] = self.metrics.route_decisions.labels(policy=label, model=decision[1])
        counter.inc()
        return chosen

    def _auto(
        self, name: str, request: ChatRequest, permits: Callable[[CatalogModel], bool]
    ) -> tuple[list[CatalogModel], Policy, str]:
        s = self.settings
        tokens = estimate_prompt_tokens(request, s)
        if name == "auto":
            policy, reason = choose_policy(request, tokens, s)
        else:
            policy, reason = cast(Policy, name), "requested"
        fits = [m for m in self.catalog if (m.vision or not request.has_images) and m.context_window >= tokens]
        ranked = order(policy, fits, s, self._expected_ms)
        if not ranked:
            raise NoDeployment(self._nothing_fits(name, policy, request, tokens), param="model")
        permitted = [m for m in ranked if permits(m)]
        if not permitted:
            names = ", ".join(m.id for m in ranked[:5])
            raise Forbidden(
                f"your key may not use any model {name} would choose for this request ({names})",
                param="model",
            )
        # Models with a deployment ready right now go first, so a few models that are all
        # cooling down cannot crowd out one that works.
        now = self.clock()
        ready = [m for m in permitted if any(self._health[d.key].available(now) for d in m.deployments)]
        ready_ids = {m.id for m in ready}
        waiting = [m for m in permitted if m.id not in ready_ids]
        return (ready + waiting)[: 1 + s.alternatives], policy, reason

    def _nothing_fits(self, name: str, policy: Policy, request: ChatRequest, tokens: int) -> str:
        why: list[str] = []
        models = list(self.catalog)
        if request.has_images and not any(m.vision for m in models):
            why.append("no model accepts images")
        largest = max((m.context_window for m in models if m.vision or not request.has_images), default=0)
        if tokens > largest:
            why.append(f"the prompt (about {tokens} tokens) is longer than any model's context window ({largest})")
        if policy == "auto-free" and not why:
            limit = format_amount(self.settings.free_max_micros)
            why.append(f"no model that fits is free (blended price at most {limit} per 1M tokens)")
        return f"{name} found no model for this request: {'; '.join(why) or 'the catalog is empty'}"

    def _expected_ms(self, model: CatalogModel) -> float | None:
        typical = self.settings.fast_typical_output_tokens
        measured = [ms for d in model.deployments if (ms := self._health[d.key].expected_ms(typical)) is not None]
        return min(measured) if measured else None

    # --- choosing deployments ------------------------------------------------------------

    def pick(self, model: CatalogModel, exclude: Collection[str] = ()) -> Deployment | None:
        """A deployment of `model` to try now, or None when none is available: by weight among
        the available ones of the lowest priority, skipping the keys in `exclude`."""
        now = self.clock()
        ready = [d for d in model.deployments if d.key not in exclude and self._health[d.key].available(now)]
        if not ready:
            return None
        best = min(d.priority for d in ready)
        tier = [d for d in ready if d.priority == best]
        weighted = [d for d in tier if d.weight > 0]
        if len(weighted) == 1:
            return weighted[0]
        if not weighted:
            return self.rng.choice(tier)
        return self.rng.choices(weighted, weights=[d.weight for d in weighted])[0]

    def attempts(self, models: Sequence[CatalogModel]) -> Iterator[tuple[CatalogModel, Deployment]]:
        """(model, deployment) pairs in failover order, at most `max_attempts`, never the same
        deployment twice. Lazy: each pair is drawn when asked for, from the health at that
        moment, so a breaker that opened during the previous attempt is already respected."""
        tried: set[str] = set()
        for model in models:
            while len(tried) < self.max_attempts:
                deployment = self.pick(model, tried)
                if deployment is None:
                    break
                tried.add(deployment.key)
                yield model, deployment
            if len(tried) >= self.max_attempts:
                return

    # --- outcomes ------------------------------------------------------------------------

    def started(
        self, deployment: Deployment, *, model: CatalogModel | None = None, request_id: str | None = None
    ) -> Attempt:
        """Count a call as in flight. Call right after drawing the pair from `attempts`, with
        no await in between, so a half-open deployment admits exactly one probe."""
        probe = self._health[deployment.key].start(self.clock())
        if probe:
            log.info(
                "request %s: probing %s after its cooldown",
                request_id,
                deployment.key,
                extra={"request_id": request_id},
            )
        return Attempt(deployment, model, request_id, probe)

    def succeeded(
        self,
        attempt: Attempt,
        *,
        latency_ms: float,
        ttft_ms: float | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """The call answered. `latency_ms` is the whole call (or until the stream started, as
        the caller measures it); `ttft_ms` and `output_tokens` feed the tokens/s average."""
        if attempt.done:
            return
        attempt.done = True
        self._health[attempt.deployment.key].succeed(
            attempt.probe, latency_ms=latency_ms, ttft_ms=ttft_ms, output_tokens=output_tokens
        )

    def failed(self, attempt: Attempt, error: UpstreamError, *, mid_stream: bool = False) -> None:
        """The call failed; `mid_stream` when bytes had already gone to the client (it is
        recorded against the deployment, but nothing can fail over any more)."""
        if attempt.done:
            return
        attempt.done = True
        key = attempt.deployment.key
        self._health[key].fail(attempt.probe, error, self.clock())
        reason = failure_reason(error)
        if mid_stream or not self.should_fail_over(error):
            log.info(
                "request %s: %s failed (%s)%s",
                attempt.request_id,
                key,
                reason,
                " mid-stream" if mid_stream else "",
                extra={"request_id": attempt.request_id},
            )
            return
        self.metrics.failovers.labels(deployment=key, reason=reason).inc()
        log.warning(
            "request %s: %s failed (%s); failing over",
            attempt.request_id,
            key,
            reason,
            extra={"request_id": attempt.request_id},
        )

    def cancelled(self, attempt: Attempt) -> None:
        """The call ended with no verdict on the upstream (the client went away, the task was
        cancelled): free its in-flight slot, and its probe slot if it was the probe."""
        if attempt.done:
            return
        attempt.done = True
        self._health[attempt.deployment.key].release(attempt.probe)

    @staticmethod
    def should_fail_over(error: UpstreamError) -> bool:
        """Only failures another deployment could cure: connection errors, timeouts, 408,
        429, 500, 502, 503, 504, 529, and 401/403 (that deployment's own key or account is
        refused; the client's request is not at fault). A 4xx about the request would fail
        everywhere."""
        return counts_against(error)

    # --- errors for the client -----------------------------------------------------------

    def exhausted(
        self, tried: int, last: UpstreamError | None, models: Sequence[CatalogModel] | None = None
    ) -> GatewayError:
        """The error to raise when `attempts` ran out: NoDeployment (503) when nothing could
        be tried, AllUpstreamsFailed (502) when everything tried failed (504 when the last
        one timed out)."""
        if tried == 0 or last is None:
            return self.no_deployment(models)
        return self.all_failed(tried, last)

    def all_failed(self, tried: int, last: UpstreamError) -> AllUpstreamsFailed:
        what = f"HTTP {last.upstream_status} ({last.kind})" if last.upstream_status else last.kind
        plural = "deployment" if tried == 1 else "deployments"
        headers = {}
        if last.retry_after:
            headers["retry-after"] = str(max(1, math.ceil(last.retry_after)))
        failed = AllUpstreamsTimedOut if isinstance(last, UpstreamTimeout) else AllUpstreamsFailed
        return failed(
            f"the upstream failed: tried {tried} {plural}, the last one failed with {what}: {last.message}",
            headers=headers,
        )

    def no_deployment(self, models: Sequence[CatalogModel] | None = None) -> NoDeployment:
        """Every deployment that could serve `models` (all deployments when None) is cooling
        down; Retry-After says when the first is due back."""
        now = self.clock()
        keys = {d.key for m in models for d in m.deployments} if models is not None else set(self._health)
        due = min((self._health[k].available_at(now) for k in keys), default=now)
        wait = max(1, math.ceil(due - now))
        names = ", ".join(m.id for m in models) if models else "the requested model"
        return NoDeployment(
            f"no deployment of {names} is available right now: they are cooling down after failures "
            f"or rate limits; retry in {wait} s",
            headers={"retry-after": str(wait)},
        )

    # --- introspection -------------------------------------------------------------------

    def _transition(self, key: str, state: State) -> None:
        self.metrics.breaker_transitions.labels(deployment=key, state=state.value).inc()
        level = logging.WARNING if state is State.OPEN else logging.INFO
        log.log(level, "deployment %s is now %s", key, state.value)

    def _iso(self, at: float) -> str:
        wall = self.wall_clock() + (at - self.clock())
        return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def snapshot(self) -> list[dict[str, Any]]:
        """Every deployment's health, for `GET /admin/deployments`."""
        now = self.clock()
        out: list[dict[str, Any]] = []
        for key, health in self._health.items():
            d = self._deployments[key]
            out.append(
                {
                    "key": key,
                    "models": list(self._served_by[key]),
                    "provider": d.provider.id,
                    "upstream_model": d.upstream_model,
                    "priority": d.priority,
                    "weight": d.weight,
                    **health.snapshot(now, self._iso),
                }
            )
        return out

    def virtual_models(self) -> list[dict[str, Any]]:
        """The virtual model ids, for `GET /v1/models`."""
        return [
            {
                "id": v,
                "object": "model",
                "owned_by": "creditgate",
                "virtual": True,
                "description": describe_auto(self.settings) if v == "auto" else DESCRIPTIONS[v],
            }
            for v in self.virtual_ids
        ]

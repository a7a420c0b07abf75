"""Per-deployment health: a circuit breaker, a Retry-After block and speed averages.

A deployment is in one of three breaker states:

* ``healthy`` – in rotation.
* ``open`` – out of rotation until ``cooldown_seconds`` have passed. It opens after
  ``failure_threshold`` consecutive failures, or when at least ``breaker_min_samples`` of the
  last ``breaker_window`` outcomes are known and the share of failures among them reaches
  ``breaker_error_rate`` (so a deployment failing every other request is caught too, which
  a consecutive count alone would miss).
* ``half_open`` – the cooldown is over; exactly one request (the probe) may be in flight.
  Its success restores the deployment (and forgets the old outcomes, so the error rate does
  not re-open it at once); its failure re-opens the breaker for another cooldown.

Independently, a deployment that answered with Retry-After is not used until that time
(capped by ``max_retry_after_seconds`` so one odd header cannot park it for days).

Only failures that say something about the deployment count against it: connection errors,
timeouts, 408/429/5xx/529, and 401/403 (its key or account is broken). A 400, 404, 413 or
422 is the request's fault and would fail anywhere, so it is neutral.

Times are floats from the router's monotonic clock; nothing here reads the real time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from creditgate.errors import UpstreamError


class State(StrEnum):
    HEALTHY = "healthy"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerRules:
    failure_threshold: int
    cooldown_seconds: float
    window: int
    error_rate: float
    min_samples: int
    ewma_alpha: float
    max_retry_after_seconds: float


def counts_against(error: UpstreamError) -> bool:
    """Whether this failure is evidence that the deployment itself is unwell."""
    return error.retryable or error.upstream_status in (401, 403)


def _ewma(old: float | None, sample: float, alpha: float) -> float:
    return sample if old is None else old + alpha * (sample - old)


class DeploymentHealth:
    """Mutable health of one deployment key. Not thread-safe: the gateway calls it from one
    event loop, and every method is synchronous."""

    __slots__ = (
        "_on_transition",
        "blocked_until",
        "consecutive",
        "failures",
        "in_flight",
        "key",
        "latency_ms",
        "open_until",
        "outcomes",
        "probing",
        "requests",
        "rules",
        "state",
        "tokens_per_s",
        "ttft_ms",
    )

    def __init__(self, key: str, rules: BreakerRules, on_transition: Callable[[str, State], None]) -> None:
        self.key = key
        self.rules = rules
        self._on_transition = on_transition
        self.state = State.HEALTHY
        self.open_until = 0.0
        self.blocked_until = 0.0
        self.probing = False
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.consecutive = 0
        self.outcomes: deque[bool] = deque(maxlen=rules.window)
        self.latency_ms: float | None = None
        self.ttft_ms: float | None = None
        self.tokens_per_s: float | None = None

    # --- state ---------------------------------------------------------------------------

    def _move(self, state: State) -> None:
        self.state = state
        self._on_transition(self.key, state)

    def refresh(self, now: float) -> State:
        """Apply the passage of time: an open breaker whose cooldown is over turns half-open."""
        if self.state is State.OPEN and now >= self.open_until:
            self._move(State.HALF_OPEN)
        return self.state

    def available(self, now: float) -> bool:
        """May a new request be sent here now?"""
        state = self.refresh(now)
        if now < self.blocked_until or state is State.OPEN:
            return False
        return not (state is State.HALF_OPEN and self.probing)

    def available_at(self, now: float) -> float:
        """The earliest time this deployment could take a request (``now`` if it can)."""
        state = self.refresh(now)
        at = max(now, self.blocked_until)
        if state is State.OPEN:
            at = max(at, self.open_until)
        return at

    def error_rate(self) -> float | None:
        if not self.outcomes:
            return None
        return sum(1 for ok in self.outcomes if not ok) / len(self.outcomes)

    def _tripped(self) -> bool:
        if self.consecutive >= self.rules.failure_threshold:
            return True
        rate = self.error_rate()
        enough = len(self.outcomes) >= self.rules.min_samples
        return enough and rate is not None and rate >= self.rules.error_rate

    def _open(self, now: float) -> None:
        self.open_until = now + self.rules.cooldown_seconds
        self._move(State.OPEN)

    # --- outcomes ------------------------------------------------------------------------

    def start(self, now: float) -> bool:
        """Count a request as in flight; True when it is the half-open probe."""
        self.refresh(now)
        self.in_flight += 1
        self.requests += 1
        if self.state is State.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def _finish(self, probe: bool) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        if probe:
            self.probing = False

    def succeed(self, probe: bool, *, latency_ms: float, ttft_ms: float | None, output_tokens: int | None) -> None:
        self._finish(probe)
        self.consecutive = 0
        alpha = self.rules.ewma_alpha
        self.latency_ms = _ewma(self.latency_ms, max(0.0, latency_ms), alpha)
        if ttft_ms is not None:
            self.ttft_ms = _ewma(self.ttft_ms, max(0.0, ttft_ms), alpha)
        if output_tokens:
            generating_ms = latency_ms - (ttft_ms or 0.0)
            if generating_ms > 0:
                self.tokens_per_s = _ewma(self.tokens_per_s, output_tokens * 1000 / generating_ms, alpha)
        if self.state is State.HALF_OPEN:
            self.outcomes.clear()
            self._move(State.HEALTHY)
        self.outcomes.append(True)

    def fail(self, probe: bool, error: UpstreamError, now: float) -> None:
        self._finish(probe)
        self.failures += 1
        if error.retry_after is not None and error.retry_after > 0:
            wait = min(error.retry_after, self.rules.max_retry_after_seconds)
            self.blocked_until = max(self.blocked_until, now + wait)
        if not counts_against(error):
            return
        self.consecutive += 1
        self.outcomes.append(False)
        self.refresh(now)
        if self.state is State.HALF_OPEN or (self.state is State.HEALTHY and self._tripped()):
            self._open(now)

    def release(self, probe: bool) -> None:
        """The request ended with no verdict (the client went away): free its slot."""
        self._finish(probe)

    # --- speed ---------------------------------------------------------------------------

    def expected_ms(self, typical_output_tokens: int) -> float | None:
        """How long a typical reply is expected to take, from what was measured; None when
        nothing was. Time to first token plus generation at the measured rate when both are
        known, else the whole-call latency."""
        if self.ttft_ms is not None and self.tokens_per_s:
            return self.ttft_ms + typical_output_tokens * 1000 / self.tokens_per_s
        return self.latency_ms

    def snapshot(self, now: float, to_wall: Callable[[float], str]) -> dict[str, Any]:
        state = self.refresh(now)
        until = self.blocked_until
        if state is State.OPEN:
            until = max(until, self.open_until)
        rate = self.error_rate()
        return {
            "state": state.value,
            "cooling_down_until": to_wall(until) if until > now else None,
            "error_rate": None if rate is None else round(rate, 4),
            "recent_outcomes": len(self.outcomes),
            "consecutive_failures": self.consecutive,
            "latency_ms_ewma": _round(self.latency_ms),
            "ttft_ms_ewma": _round(self.ttft_ms),
            "tokens_per_s_ewma": _round(self.tokens_per_s),
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)

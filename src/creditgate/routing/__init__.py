"""Routing: which catalog models and deployments serve a request, failover between them,
circuit breakers, and the virtual `auto-*` models. Pure and synchronous; the pipeline calls
it around each upstream attempt."""

from creditgate.routing.health import State
from creditgate.routing.policies import AutoSettings, estimate_prompt_tokens, looks_like_code
from creditgate.routing.router import VIRTUAL_IDS, Attempt, Router, failure_reason

__all__ = [
    "VIRTUAL_IDS",
    "Attempt",
    "AutoSettings",
    "Router",
    "State",
    "estimate_prompt_tokens",
    "failure_reason",
    "looks_like_code",
]

"""Fixtures for the routing tests: a hand-driven clock and a router factory."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from creditgate.catalog import Catalog
from creditgate.config import ServerConfig
from creditgate.metrics import Metrics
from creditgate.routing import Router

from .support import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


RouterFactory = Callable[..., Router]


@pytest.fixture
def make_router(clock: Clock) -> RouterFactory:
    def make(catalog: Catalog, auto: dict[str, Any] | None = None, *, seed: int = 1, **server: Any) -> Router:
        return Router(
            catalog,
            ServerConfig(**server),
            auto,
            metrics=Metrics(),
            clock=clock,
            wall_clock=lambda: 1_700_000_000.0 + clock.now,
            rng=random.Random(seed),
        )

    return make

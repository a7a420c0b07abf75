"""Fixtures: one in-process simulator for the whole session, and clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from creditgate import simulator


@pytest.fixture(scope="session")
async def sim() -> AsyncIterator[simulator.SimulatorHandle]:
    handle = await simulator.start()
    yield handle
    await handle.close()


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def base(sim: simulator.SimulatorHandle) -> Callable[[str], str]:
    """``base("tokens=3")`` is the simulator URL with that behaviour prefix."""
    return lambda spec="": sim.url + (f"/x/{spec}" if spec else "")


@pytest.fixture
def oai(base: Callable[[str], str]) -> Callable[..., openai.AsyncOpenAI]:
    def make(spec: str = "", **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=base(spec) + "/v1", api_key="test-key", max_retries=0, **kwargs)

    return make


@pytest.fixture
def claude(base: Callable[[str], str]) -> Callable[..., anthropic.AsyncAnthropic]:
    def make(spec: str = "", **kwargs: Any) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=base(spec), api_key="test-key", max_retries=0, **kwargs)

    return make

"""Shared fixtures: the wire-protocol validators and free ports."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.schemas import errors

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def schema_errors() -> Callable[[Any, str], list[str]]:
    """`schema_errors(obj, "openai:CreateChatCompletionResponse")` or
    `schema_errors(obj, "anthropic.Message")`: the validation errors, [] when valid.
    OpenAI schemas are checked leniently (optional fields may be null)."""

    def check(obj: Any, name: str) -> list[str]:
        lenient = name.startswith("openai:")
        return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors(obj, name, lenient)]

    return check

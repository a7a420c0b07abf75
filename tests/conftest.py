"""Shared fixtures: the wire-protocol validators and free ports."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = Path(os.environ.get("CREDITGATE_PROTOCOLS_DIR", REPO.parent / "shared" / "protocols"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def schema_errors() -> Callable[[Any, str], list[str]]:
    """`schema_errors(obj, "openai:CreateChatCompletionResponse")` or
    `schema_errors(obj, "anthropic.Message")`: the validation errors, [] when valid.
    OpenAI schemas are checked leniently (optional fields may be null)."""
    if not (PROTOCOLS / "validate.py").is_file():
        pytest.fail(f"protocol schemas not found at {PROTOCOLS}; set CREDITGATE_PROTOCOLS_DIR")
    sys.path.insert(0, str(PROTOCOLS))
    import validate  # type: ignore[import-not-found]

    def check(obj: Any, name: str) -> list[str]:
        lenient = name.startswith("openai:")
        return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validate.errors(obj, name, lenient)]

    return check

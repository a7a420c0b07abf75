"""Helpers for the end-to-end routing tests: what the simulator received per prefix, the
gateway's usage records and metrics, and prices worked out by hand."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
from tests.e2e.conftest import ADMIN_TOKEN, Gateway

USER = [{"role": "user", "content": "Tell me about meadows"}]


def chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": USER, "max_tokens": 50, **extra}


def post_chat(gw: Gateway, key: str, body: dict[str, Any], timeout: float = 20) -> httpx.Response:
    return httpx.post(
        gw.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=timeout
    )


def sim_requests(simulator: str) -> list[dict[str, Any]]:
    """What the simulator received, oldest first (its log keeps the last 1,000)."""
    r = httpx.get(simulator + "/x/requests", params={"n": 1000}, timeout=10)
    r.raise_for_status()
    return list(r.json())


def label_of(path: str) -> str | None:
    """The `id=` label of a request path like `/x/status=503,id=a/v1/chat/completions`."""
    m = re.search(r"/x/[^/]*\bid=([^,/]+)", path)
    return m.group(1) if m else None


def received(simulator: str, *labels: str) -> Counter[str]:
    """How many chat requests the simulator received per `id=` label (only `labels`)."""
    counts: Counter[str] = Counter()
    for r in sim_requests(simulator):
        label = label_of(r["path"])
        if label in labels:
            counts[label] += 1
    return counts


def usage_records(gw: Gateway, account_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """The account's usage records, newest first."""
    r = gw.admin("GET", f"/admin/accounts/{account_id}/usage?limit={limit}")
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def deployments(gw: Gateway) -> dict[str, dict[str, Any]]:
    r = gw.admin("GET", "/admin/deployments")
    assert r.status_code == 200, r.text
    body = r.json()
    rows = body["data"] if isinstance(body, dict) else body
    return {row["key"]: row for row in rows}


def micros(amount: Any) -> int:
    """An amount as the API shows it (a JSON number or a string), in micros."""
    return int(Decimal(str(amount)) * 1_000_000)


def cost_micros(record: dict[str, Any], input_price: int, output_price: int) -> int:
    """What a usage record should cost at prices per 1M tokens (whole currency units), where
    1 unit per 1M tokens is 1 micro per token."""
    return int(record["prompt_tokens"]) * input_price + int(record["completion_tokens"]) * output_price


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def metric(gw: Gateway, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    r = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert r.status_code == 200, r.text
    total = 0.0
    for line in r.text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m["name"] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m["labels"] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m["value"])
    return total

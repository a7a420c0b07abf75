"""A stream cut by the upstream after bytes went out: no failover (the client already has
part of an answer), the stream ends with an error in the client's own dialect, and the
client pays for what it received: not nothing, not the hold."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import Gateway, module_gateway
from tests.e2e.routing_support import USER, cost_micros, micros, received, usage_records

CONFIG = """
database: sqlite:///unused.db
currency:
  code: INR
billing:
  group_commit_ms: 2
server:
  max_attempts: 3
  cooldown_seconds: 30
  failure_threshold: 5
providers:
  - {{id: st-cut-oa, type: openai, base_url: "{sim}/x/cut_after=3,tokens=20,tps=100,id=st-cut-oa/v1", api_key: k}}
  - {{id: st-cut-an, type: anthropic, base_url: "{sim}/x/cut_after=3,tokens=20,tps=100,id=st-cut-an", api_key: k}}
  - {{id: st-err-oa, type: openai, base_url: "{sim}/x/error_after=3,tokens=20,tps=100,id=st-err-oa/v1", api_key: k}}
  - {{id: st-err-an, type: anthropic, base_url: "{sim}/x/error_after=3,tokens=20,tps=100,id=st-err-an", api_key: k}}
  - {{id: st-early-oa, type: openai, base_url: "{sim}/x/cut_after=0,id=st-early-oa/v1", api_key: k}}
  - {{id: st-early-an, type: anthropic, base_url: "{sim}/x/cut_after=0,id=st-early-an", api_key: k}}
  - {{id: st-spare, type: openai, base_url: "{sim}/x/id=st-spare/v1", api_key: k}}
models:
  - {{id: st/cut, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: st-cut-oa, model: m, priority: 0}}, {{provider: st-spare, model: m, priority: 1}}]}}
  - {{id: st/cut-anthropic, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: st-cut-an, model: m, priority: 0}}, {{provider: st-spare, model: m, priority: 1}}]}}
  - {{id: st/error, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: st-err-oa, model: m, priority: 0}}, {{provider: st-spare, model: m, priority: 1}}]}}
  - {{id: st/error-anthropic, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: st-err-an, model: m, priority: 0}}, {{provider: st-spare, model: m, priority: 1}}]}}
  - {{id: st/early, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: st-early-oa, model: m, priority: 0}}, {{provider: st-spare, model: m, priority: 1}}]}}
  - {{id: st/early-anthropic, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: st-early-an, model: m, priority: 0}}, {{provider: st-spare, model: m, priority: 1}}]}}
"""


gw = module_gateway(CONFIG, "routing-streams")


def sse(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each server-sent event."""
    out: list[tuple[str | None, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            out.append((event, "\n".join(data)))
    return out


def stream(gw: Gateway, key: str, dialect: str, model: str) -> tuple[int, list[tuple[str | None, str]]]:
    if dialect == "openai":
        path, headers = "/chat/completions", {"authorization": f"Bearer {key}"}
    else:
        path, headers = "/messages", {"x-api-key": key, "anthropic-version": "2023-06-01"}
    body: dict[str, Any] = {"model": model, "messages": USER, "max_tokens": 100, "stream": True}
    with httpx.stream("POST", gw.v1 + path, json=body, headers=headers, timeout=20) as r:
        return r.status_code, sse(r.read().decode())


def received_text(dialect: str, events: list[tuple[str | None, str]]) -> str:
    text = ""
    for _, data in events:
        if data == "[DONE]":
            continue
        obj = json.loads(data)
        if dialect == "openai":
            text += "".join((c.get("delta") or {}).get("content") or "" for c in obj.get("choices") or ())
        elif obj.get("type") == "content_block_delta":
            text += obj["delta"].get("text", "")
    return text


@pytest.mark.parametrize(
    ("dialect", "model", "upstream"),
    [
        ("openai", "st/cut", "st-cut-oa"),
        ("anthropic", "st/cut", "st-cut-oa"),
        ("openai", "st/cut-anthropic", "st-cut-an"),
        ("anthropic", "st/cut-anthropic", "st-cut-an"),
        ("openai", "st/error", "st-err-oa"),
        ("anthropic", "st/error-anthropic", "st-err-an"),
    ],
)
def test_a_stream_cut_after_the_first_byte_ends_in_an_error_and_bills_what_was_received(
    gw: Gateway, simulator: str, dialect: str, model: str, upstream: str
) -> None:
    account, key = gw.account()
    before = received(simulator, upstream, "st-spare")
    status, events = stream(gw, key, dialect, model)
    assert status == 200
    # no failover once bytes went out
    after = received(simulator, upstream, "st-spare")
    assert after[upstream] - before[upstream] == 1 and after["st-spare"] == before["st-spare"]
    text = received_text(dialect, events)
    assert text, "the client should have received part of the answer before the cut"
    last_event, last_data = events[-1]
    if dialect == "openai":
        assert all(data != "[DONE]" for _, data in events)
        error = json.loads(last_data)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    else:
        assert last_event == "error"
        assert json.loads(last_data)["type"] == "error"
        assert all(event != "message_stop" for event, _ in events)
    [record] = usage_records(gw, account)
    assert record["status"] == "cut" and record["deployment"] == f"{upstream}/m"
    # billed for the part received: the reply would have been 20 tokens
    assert 0 < record["completion_tokens"] < 20
    if record["estimated"]:
        assert record["completion_tokens"] == math.ceil(len(text.encode()) / 4)
    cost = micros(record["cost"])
    assert cost == cost_micros(record, 1000, 2000)
    assert 0 < cost < micros(record["hold"])
    money = gw.balance(account)
    assert 100_000_000 - micros(money["balance"]) == cost
    assert money["available"] == money["balance"]  # the rest of the hold was released


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize(("model", "upstream"), [("st/early", "st-early-oa"), ("st/early-anthropic", "st-early-an")])
def test_a_stream_cut_before_any_output_fails_over(
    gw: Gateway, simulator: str, dialect: str, model: str, upstream: str
) -> None:
    account, key = gw.account()
    before = received(simulator, upstream, "st-spare")
    status, events = stream(gw, key, dialect, model)
    assert status == 200
    after = received(simulator, upstream, "st-spare")
    assert after[upstream] - before[upstream] == 1 and after["st-spare"] - before["st-spare"] == 1
    # the client sees one clean answer from the deployment that served
    if dialect == "openai":
        assert events[-1][1] == "[DONE]"
    else:
        assert events[-1][0] == "message_stop"
    assert all(event != "error" and '"error"' not in data for event, data in events)
    assert received_text(dialect, events)
    [record] = usage_records(gw, account)
    assert record["status"] == "ok" and record["deployment"] == "st-spare/m"
    assert 100_000_000 - micros(gw.balance(account)["balance"]) == micros(record["cost"]) > 0


def test_a_non_stream_request_dropped_unanswered_fails_over(gw: Gateway, simulator: str) -> None:
    account, key = gw.account()
    before = received(simulator, "st-cut-oa", "st-spare")
    body = {"model": "st/cut", "messages": USER, "max_tokens": 50}
    r = httpx.post(gw.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=20)
    assert r.status_code == 200, r.text
    after = received(simulator, "st-cut-oa", "st-spare")
    assert after["st-cut-oa"] - before["st-cut-oa"] == 1 and after["st-spare"] - before["st-spare"] == 1
    [record] = usage_records(gw, account)
    assert record["deployment"] == "st-spare/m" and record["status"] == "ok"

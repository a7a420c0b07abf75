"""Errors on the wire, in both client dialects: failed, refusing, cut and broken upstreams, and
requests the gateway refuses itself. Every error is in the dialect's own envelope; an error
after a stream started goes inside the stream and the stream does not end cleanly.

This module runs its own gateway with the circuit breaker out of the way, so that failing
upstreams give the same answer however many tests (here or elsewhere) hit them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from tests.conftest import free_port
from tests.e2e.conftest import CONFIG, Gateway, module_gateway
from tests.e2e.sdk_support import assert_openai_error, openai_chunks, sse_events

# The mid-stream errors come slowly (10 tokens a second, error after 2) so that the first text
# reaches the gateway well before the error: an error in the same read as the first text is
# rightly answered with a failover or a 502 instead, as nothing was sent yet.
PROVIDERS = """\
  - {{id: sim-anthropic-cut, type: anthropic, base_url: "{sim}/x/cut_after=3,tokens=20", api_key: sim-key}}
  - {{id: sim-gemini-cut, type: gemini, base_url: "{sim}/x/cut_after=3,tokens=20", api_key: sim-key}}
  - {{id: sim-openai-error, type: openai, base_url: "{sim}/x/error_after=2,tokens=20,tps=10/v1", api_key: sim-key}}
  - {{id: sim-anthropic-error, type: anthropic, base_url: "{sim}/x/error_after=2,tokens=20,tps=10", api_key: sim-key}}
  - {{id: sim-anthropic-400, type: anthropic, base_url: "{sim}/x/status=400", api_key: sim-key}}
  - {{id: sim-gemini-400, type: gemini, base_url: "{sim}/x/status=400", api_key: sim-key}}
"""
# A port nobody listens on: connections are refused.
REFUSED_PORT = free_port()
PROVIDERS += f"""\
  - {{{{id: sim-refused, type: openai, base_url: "http://127.0.0.1:{REFUSED_PORT}/v1", api_key: sim-key}}}}
"""
MODELS = """\
  - {{id: err/claude-cut, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-anthropic-cut, model: claude-sim}}]}}
  - {{id: err/gemini-cut, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-gemini-cut, model: gemini-sim}}]}}
  - {{id: err/openai-error, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-openai-error, model: sim-error}}]}}
  - {{id: err/claude-error, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-anthropic-error, model: claude-sim}}]}}
  - {{id: err/claude-bad, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-anthropic-400, model: claude-sim}}]}}
  - {{id: err/gemini-bad, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-gemini-400, model: gemini-sim}}]}}
  - {{id: err/hang, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-hang, model: sim-hang}}]}}
  - {{id: err/refused, max_output_tokens: 256, price: {{input: 1000, output: 2000}},
     deployments: [{{provider: sim-refused, model: sim-refused}}]}}
"""
CUT = ["test/cut", "err/claude-cut", "err/gemini-cut"]
BROKEN_MID_STREAM = ["err/openai-error", "err/claude-error"]
REFUSING = ["test/bad", "err/claude-bad", "err/gemini-bad"]
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]


def error_config() -> str:
    """The shared catalog plus broken upstreams of every type, with breakers that never keep a
    deployment out (no cooldown, a threshold never reached)."""
    config = CONFIG
    for old, new in [
        ("cooldown_seconds: 30", "cooldown_seconds: 0"),
        ("failure_threshold: 3", "failure_threshold: 1000"),
    ]:
        assert old in config
        config = config.replace(old, new)
    assert config.count("\nmodels:\n") == 1
    return config.replace("\nmodels:\n", "\n" + PROVIDERS + "models:\n") + MODELS


gw = module_gateway(error_config(), "errors")


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.account(credits="1000")[1]


def post(gw: Gateway, path: str, key: str | None, body: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(gw.url + path, json=body, headers=headers, timeout=30)


def stream(gw: Gateway, path: str, key: str, body: dict[str, Any]) -> bytes:
    with httpx.stream(
        "POST", gw.url + path, json={**body, "stream": True}, headers={"authorization": f"Bearer {key}"}, timeout=30
    ) as r:
        assert r.status_code == 200, r.read()
        return r.read()


def assert_anthropic_error(r: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers.get("request-id")
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert body["error"]["message"]
    return dict(body["error"])


# --- upstream failures before the first byte ---------------------------------------------------


def test_upstream_503_is_502_without_leaking_the_upstream(gw: Gateway, key: str, simulator: str) -> None:
    r = post(gw, "/v1/chat/completions", key, {"model": "test/down", "messages": HELLO})
    assert_openai_error(r, 502)
    host = simulator.split("://", 1)[1]
    for secret in (host, "127.0.0.1", "sim-key", "/x/status"):
        assert secret not in r.text
    with (
        openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0) as client,
        pytest.raises(openai.InternalServerError),
    ):
        client.chat.completions.create(model="test/down", messages=HELLO)


def test_upstream_503_in_the_anthropic_dialect(gw: Gateway, key: str, simulator: str) -> None:
    r = post(gw, "/v1/messages", key, {"model": "test/down", "max_tokens": 32, "messages": HELLO})
    assert r.status_code >= 500
    assert_anthropic_error(r, r.status_code, "api_error")
    assert simulator.split("://", 1)[1] not in r.text and "sim-key" not in r.text


@pytest.mark.parametrize("model", REFUSING)
def test_upstream_400_is_400_in_both_dialects(gw: Gateway, key: str, model: str) -> None:
    error = assert_openai_error(post(gw, "/v1/chat/completions", key, {"model": model, "messages": HELLO}), 400)
    assert error["type"] == "invalid_request_error"
    r = post(gw, "/v1/messages", key, {"model": model, "max_tokens": 32, "messages": HELLO})
    assert_anthropic_error(r, 400, "invalid_request_error")
    with (
        anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0) as client,
        pytest.raises(anthropic.BadRequestError),
    ):
        client.messages.create(model=model, max_tokens=32, messages=HELLO)


def test_upstream_refusing_connections_is_502_without_its_address(gw: Gateway, key: str) -> None:
    for stream in (False, True):
        body = {"model": "err/refused", "messages": HELLO, "stream": stream}
        r = post(gw, "/v1/chat/completions", key, body)
        error = assert_openai_error(r, 502)
        assert "connect" in error["message"]
        assert str(REFUSED_PORT) not in r.text and "127.0.0.1" not in r.text


def test_upstream_that_never_answers_is_504_in_both_dialects(gw: Gateway, key: str) -> None:
    """`sim-hang` gives up after 1 s without a first byte."""
    error = assert_openai_error(post(gw, "/v1/chat/completions", key, {"model": "err/hang", "messages": HELLO}), 504)
    assert error["type"] == "timeout_error"
    assert "in time" in error["message"]
    r = post(gw, "/v1/messages", key, {"model": "err/hang", "max_tokens": 32, "messages": HELLO, "stream": True})
    assert_anthropic_error(r, 504, "timeout_error")


# --- failures after the stream started ---------------------------------------------------------


@pytest.mark.parametrize("model", CUT + BROKEN_MID_STREAM)
def test_broken_openai_stream_ends_with_an_error_event_and_no_done(gw: Gateway, key: str, model: str) -> None:
    chunks, done = openai_chunks(stream(gw, "/v1/chat/completions", key, {"model": model, "messages": HELLO}))
    assert not done, "a broken stream ended with [DONE] as if it were complete"
    assert "error" in chunks[-1]
    assert set(chunks[-1]["error"]) >= {"message", "type", "param", "code"}
    assert "sim-key" not in chunks[-1]["error"]["message"]
    assert any(c.get("choices") and c["choices"][0]["delta"].get("content") for c in chunks[:-1]), (
        "no text was streamed before the failure"
    )
    with (
        openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0) as client,
        pytest.raises(openai.APIError),
    ):
        list(client.chat.completions.create(model=model, messages=HELLO, stream=True))


@pytest.mark.parametrize("model", CUT + BROKEN_MID_STREAM)
def test_broken_anthropic_stream_ends_with_an_error_event(gw: Gateway, key: str, model: str) -> None:
    raw = stream(gw, "/v1/messages", key, {"model": model, "max_tokens": 64, "messages": HELLO})
    events = [(name, orjson.loads(data)) for name, data in sse_events(raw)]
    names = [n for n, _ in events]
    assert names[0] == "message_start"
    assert "content_block_delta" in names
    assert names[-1] == "error" and "message_stop" not in names
    assert events[-1][1]["type"] == "error" and events[-1][1]["error"]["message"]
    with (
        anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0) as client,
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(model=model, max_tokens=64, messages=HELLO) as s,
    ):
        s.get_final_message()


# --- requests the gateway refuses --------------------------------------------------------------


def test_body_over_the_limit_is_413_in_both_dialects(gw: Gateway, key: str) -> None:
    big = [{"role": "user", "content": "x" * 70_000}]
    error = assert_openai_error(post(gw, "/v1/chat/completions", key, {"model": "test/echo", "messages": big}), 413)
    assert "65536" in error["message"]
    r = post(gw, "/v1/messages", key, {"model": "test/echo", "max_tokens": 8, "messages": big})
    assert_anthropic_error(r, 413, "request_too_large")


def test_chunked_body_over_the_limit_is_413(gw: Gateway, key: str) -> None:
    """No content-length to go by: the gateway stops reading at the limit."""

    def body() -> Iterator[bytes]:
        yield b'{"model": "test/echo", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 10_000
        yield b'"}]}'

    r = httpx.post(gw.v1 + "/chat/completions", content=body(), headers={"authorization": f"Bearer {key}"})
    assert "content-length" not in r.request.headers
    assert_openai_error(r, 413)


def test_malformed_json_in_the_anthropic_dialect(gw: Gateway, key: str) -> None:
    r = httpx.post(gw.url + "/v1/messages", content=b'{"model": "test/echo",, }', headers={"x-api-key": key})
    error = assert_anthropic_error(r, 400, "invalid_request_error")
    assert "JSON" in error["message"] and "column" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO}, "model"),
        ({"model": "test/echo", "messages": []}, "messages"),
        ({"model": "test/echo", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": "test/echo", "messages": HELLO, "n": 0}, "n"),
        ({"model": "test/echo", "messages": HELLO, "max_tokens": -1}, "max_tokens"),
        ({"model": "test/echo", "messages": HELLO, "stream": "yes"}, "stream"),
    ],
)
def test_invalid_openai_request_is_400_naming_the_field(
    gw: Gateway, key: str, body: dict[str, Any], param: str
) -> None:
    error = assert_openai_error(post(gw, "/v1/chat/completions", key, body), 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_error_responses_say_not_to_retry_client_errors(gw: Gateway, key: str) -> None:
    """The SDKs retry what they are not told to leave alone; a 4xx about the request is final."""
    r = post(gw, "/v1/chat/completions", key, {"model": "test/nope", "messages": HELLO})
    assert r.headers.get("x-should-retry") == "false"
    r = post(gw, "/v1/chat/completions", key, {"model": "test/down", "messages": HELLO})
    assert r.headers.get("x-should-retry") != "false"


def test_errors_keep_the_gateway_serving(gw: Gateway, key: str) -> None:
    """After all of the above, an ordinary request still works."""
    with openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0) as client:
        completion = client.chat.completions.create(model="test/echo", messages=HELLO)
    assert completion.choices[0].message.content

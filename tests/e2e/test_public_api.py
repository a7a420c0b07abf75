"""The public, unauthenticated surface: model lists, health, the API description and metrics."""

from __future__ import annotations

import re
from decimal import Decimal

import httpx
import openai
import pytest
from tests.e2e.conftest import Gateway
from tests.e2e.sdk_support import SchemaErrors, assert_openai_error


def get(gateway: Gateway, path: str) -> httpx.Response:
    return httpx.get(gateway.url + path, timeout=30)


def test_v1_models_needs_no_key_and_lists_the_catalog(gateway: Gateway) -> None:
    r = get(gateway, "/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert len(ids) == len(set(ids))
    assert {"test/echo", "test/vision", "test/claude", "test/gemini", "test/down"} <= set(ids)
    for m in body["data"]:
        assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"]
    virtual = [m for m in body["data"] if m.get("virtual")]
    assert virtual and all(m["id"] == "auto" or m["id"].startswith("auto-") for m in virtual)
    assert "auto-cheap" in ids


def test_v1_models_validates_against_the_openai_spec(gateway: Gateway, schema_errors: SchemaErrors) -> None:
    assert schema_errors(get(gateway, "/v1/models").json(), "openai:ListModelsResponse") == []


def test_api_models_has_the_simple_fields(gateway: Gateway) -> None:
    r = get(gateway, "/api/models")
    assert r.status_code == 200
    models = {m["id"]: m for m in r.json()["data"]}
    assert "test/echo" in models
    for m in models.values():
        assert {"id", "name", "provider", "context_window", "input_cost_per_1m", "output_cost_per_1m", "vision"} <= set(
            m
        ), m
    echo = models["test/echo"]
    assert echo["context_window"] == 8192
    assert Decimal(str(echo["input_cost_per_1m"])) == 1000
    assert Decimal(str(echo["output_cost_per_1m"])) == 2000
    assert echo["vision"] is False and models["test/vision"]["vision"] is True
    assert not any(i.startswith("auto") for i in models), "virtual models have no price of their own"


def test_one_model_and_an_unknown_one(gateway: Gateway) -> None:
    r = get(gateway, "/v1/models/test/claude")
    assert r.status_code == 200 and r.json()["id"] == "test/claude"
    error = assert_openai_error(get(gateway, "/v1/models/test/nope"), 404)
    assert "test/nope" in error["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/health"), ("GET", "/v1/credits"), ("POST", "/v1/chat/completions"), ("GET", "/v1/nothing-here")],
)
def test_one_request_id_per_response(gateway: Gateway, method: str, path: str) -> None:
    """Every response, success or error, carries its request id once under each name."""
    r = httpx.request(method, gateway.url + path, headers={"authorization": "Bearer sk-nope"}, json={}, timeout=30)
    ids = r.headers.get_list("x-request-id")
    assert len(ids) == 1 and ids[0].startswith("req_"), ids
    assert r.headers.get_list("request-id") == ids


def test_health(gateway: Gateway) -> None:
    r = get(gateway, "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.headers.get("x-request-id")


def test_health_ready_checks_the_database(gateway: Gateway) -> None:
    r = get(gateway, "/health/ready")
    assert r.status_code == 200
    assert r.json()["status"] == "ready" and r.json()["db"] == "ok"


def test_openapi_json_describes_the_chat_endpoints(gateway: Gateway) -> None:
    r = get(gateway, "/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/chat/completions", "/v1/messages", "/v1/models"} <= set(spec["paths"])


def test_every_documented_path_is_routed(gateway: Gateway) -> None:
    """A documented path answers, with whatever status its method and auth call for, but never
    with 'no route'."""
    paths = get(gateway, "/openapi.json").json()["paths"]
    for path, methods in paths.items():
        concrete = re.sub(r"\{[^}]+\}", "test/echo", path)
        for method in methods:
            r = httpx.request(method.upper(), gateway.url + concrete, json={}, timeout=30)
            assert "no route" not in r.text, (method, path, r.text)


def test_docs_page(gateway: Gateway) -> None:
    r = get(gateway, "/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in r.text
    assert "<script src=" not in r.text, "the docs page must not load external scripts"


def test_unknown_route_is_a_404_envelope(gateway: Gateway) -> None:
    error = assert_openai_error(get(gateway, "/v1/nothing-here"), 404)
    assert "/v1/nothing-here" in error["message"]


def test_wrong_method_is_405_envelope(gateway: Gateway) -> None:
    assert_openai_error(get(gateway, "/v1/chat/completions"), 405)


def _counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests(gateway: Gateway) -> None:
    dialect = "openai"
    before = get(gateway, "/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    ok = _counter(before.text, "creditgate_requests_total", dialect=dialect, status="200")
    missing = _counter(before.text, "creditgate_requests_total", dialect=dialect, status="404")
    key = gateway.account(credits="10")[1]
    with openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0) as client:
        client.chat.completions.create(model="test/echo", messages=[{"role": "user", "content": "hi"}])
        client.chat.completions.create(model="test/echo", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="test/nope", messages=[{"role": "user", "content": "hi"}])
    after = get(gateway, "/metrics").text
    assert _counter(after, "creditgate_requests_total", dialect=dialect, status="200") == ok + 2
    assert _counter(after, "creditgate_requests_total", dialect=dialect, status="404") == missing + 1
    assert _counter(after, "creditgate_tokens_total", model="test/echo") > 0

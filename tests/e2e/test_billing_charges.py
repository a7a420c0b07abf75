"""What a paying client sees, through the `openai` SDK against a real gateway process: the
cost of every request (body, stream and header) equals the catalog price of the reported
tokens and the charge in the ledger; the balance, the transaction history and the usage
records agree; streams cut by the client are billed for what was streamed."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tests.e2e.billing_support import (
    assert_ledger_balances,
    chat_body,
    client,
    credits,
    envelope,
    micros,
    price_of,
    sdk_error,
    transactions,
    usage_records,
    wait_for,
)
from tests.e2e.conftest import Gateway

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "what does a prepaid credit cost?"}]


def test_cost_in_body_and_header_is_the_exact_ledger_charge(gateway: Gateway) -> None:
    account_id, key = gateway.account("5")
    raw = client(gateway, key).chat.completions.with_raw_response.create(
        model="test/echo", messages=MESSAGES, max_tokens=20
    )
    completion = raw.parse()
    assert completion.usage is not None
    usage = completion.usage.model_dump()
    cost = price_of(usage["prompt_tokens"], usage["completion_tokens"])
    assert cost > 0
    assert micros(usage["cost"]) == cost
    assert micros(raw.headers["x-creditgate-cost"]) == cost

    (record,) = usage_records(gateway, account_id)
    assert record["request_id"] == raw.headers["x-request-id"]
    assert micros(record["cost"]) == cost and record["estimated"] is False and record["status"] == "ok"
    assert (record["prompt_tokens"], record["completion_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    usage_txn, grant = transactions(gateway, key)
    assert usage_txn["type"] == "USAGE" and micros(usage_txn["amount"]) == -cost
    assert grant["type"] == "GRANT" and micros(grant["amount"]) == 5_000_000
    view = credits(gateway, key)
    assert view["currency"] == "INR"
    assert micros(view["balance"]) == 5_000_000 - cost == micros(view["available"])
    assert micros(view["held"]) == 0
    (lot,) = view["lots"]
    assert lot["kind"] == "grant" and micros(lot["remaining"]) == 5_000_000 - cost


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_usage_chunk_carries_the_cost(gateway: Gateway, include_usage: bool) -> None:
    account_id, key = gateway.account("5")
    raw = client(gateway, key).chat.completions.with_raw_response.create(
        model="test/echo",
        messages=MESSAGES,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": include_usage},
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    with_usage = [c for c in chunks if c.usage is not None]
    (record,) = usage_records(gateway, account_id)
    assert record["request_id"] == raw.headers["x-request-id"]
    if include_usage:
        assert len(with_usage) == 1 and with_usage[0] is chunks[-1] and chunks[-1].choices == []
        usage = with_usage[0].usage.model_dump()  # type: ignore[union-attr]
        cost = price_of(usage["prompt_tokens"], usage["completion_tokens"])
        assert micros(usage["cost"]) == cost == micros(record["cost"])
        assert usage["completion_tokens"] == record["completion_tokens"]
    else:
        assert with_usage == []
        cost = price_of(record["prompt_tokens"], record["completion_tokens"])
        assert micros(record["cost"]) == cost > 0
    assert micros(credits(gateway, key)["balance"]) == 5_000_000 - cost
    assert_ledger_balances(gateway, account_id, key)


def test_stream_bytes_end_with_usage_then_done(gateway: Gateway) -> None:
    """On the wire: the usage chunk with the cost comes after the last content chunk and
    just before `data: [DONE]`."""
    _, key = gateway.account("5")
    body = chat_body(stream=True, stream_options={"include_usage": True}, max_tokens=8)
    with httpx.stream(
        "POST", gateway.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert '"cost":' in events[-2] and '"choices":[]' in events[-2]
    assert all('"cost"' not in e for e in events[:-2])


def test_estimated_usage_when_the_upstream_reports_none(gateway: Gateway) -> None:
    account_id, key = gateway.account("5")
    chunks = list(
        client(gateway, key).chat.completions.create(
            model="test/nousage", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    (last,) = [c for c in chunks if c.usage is not None]
    usage = last.usage.model_dump()  # type: ignore[union-attr]
    assert usage["completion_tokens"] == -(-len(text.encode()) // 4)  # about 4 bytes a token, rounded up
    assert micros(usage["cost"]) == price_of(usage["prompt_tokens"], usage["completion_tokens"]) > 0
    (record,) = usage_records(gateway, account_id)
    assert record["estimated"] is True and record["usage"] is None
    assert micros(record["cost"]) == micros(usage["cost"])
    assert_ledger_balances(gateway, account_id, key)


def test_failed_requests_are_recorded_but_not_charged(gateway: Gateway) -> None:
    account_id, key = gateway.account("5")
    sdk = client(gateway, key)
    # 502 from the upstream, or 503 once earlier failures have opened its circuit breaker.
    with pytest.raises(openai.APIStatusError) as failed:
        sdk.chat.completions.create(model="test/down", messages=MESSAGES)
    assert sdk_error(failed.value, failed.value.status_code)["type"] in ("upstream_error", "service_unavailable")
    with pytest.raises(openai.APIStatusError) as failed_stream:
        list(sdk.chat.completions.create(model="test/down", messages=MESSAGES, stream=True))
    assert failed_stream.value.status_code in (502, 503)
    sdk_error(failed_stream.value, failed_stream.value.status_code)
    records = usage_records(gateway, account_id)
    assert len(records) == 2
    assert all(r["status"] == "error" and micros(r["cost"]) == 0 for r in records)
    assert [t["type"] for t in transactions(gateway, key)] == ["GRANT"]
    view = credits(gateway, key)
    assert micros(view["balance"]) == micros(view["available"]) == 5_000_000


def test_client_that_drops_a_stream_pays_for_what_was_streamed(gateway: Gateway) -> None:
    """test/slow streams 200 tokens at 40 a second; the client leaves after 20 of them."""
    account_id, key = gateway.account("5")
    stream = client(gateway, key).chat.completions.create(
        model="test/slow", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    received = ""
    in_flight: dict[str, Any] = {}
    for n, chunk in enumerate(stream, 1):
        if chunk.choices:
            received += chunk.choices[0].delta.content or ""
        if n == 10:
            in_flight = credits(gateway, key)  # the hold shows while the stream runs
        if n == 20:
            break
    stream.close()

    records = wait_for(lambda: usage_records(gateway, account_id), what="the dropped stream's usage record")
    (record,) = records
    assert record["status"] == "disconnected"
    cost = micros(record["cost"])
    # Billed for the text produced (at least what this client read), not for the hold
    # and not for the 200 tokens it would have been sent.
    assert record["completion_tokens"] >= -(-len(received.encode()) // 4) > 0
    assert record["completion_tokens"] < 100
    assert cost == price_of(record["prompt_tokens"], record["completion_tokens"])
    assert 0 < cost < micros(record["hold"])
    assert micros(in_flight["held"]) == micros(record["hold"])
    assert micros(in_flight["available"]) == 5_000_000 - micros(record["hold"])
    assert micros(in_flight["balance"]) == 5_000_000
    balance, charges = assert_ledger_balances(gateway, account_id, key)
    assert charges == cost and balance == 5_000_000 - cost


def test_transactions_newest_first_with_cursor_pages(gateway: Gateway) -> None:
    account_id, key = gateway.account("1")
    for i in range(2):
        r = gateway.admin(
            "POST",
            f"/admin/accounts/{account_id}/credits",
            {"amount": "2", "kind": "topup", "idempotency_key": f"t{i}"},
        )
        assert r.status_code == 201, r.text
    sdk = client(gateway, key)
    for _ in range(3):
        sdk.chat.completions.create(model="test/echo", messages=MESSAGES, max_tokens=4)
    everything = transactions(gateway, key)
    assert [t["type"] for t in everything] == ["USAGE", "USAGE", "USAGE", "TOPUP", "TOPUP", "GRANT"]
    stamps = [t["createdAt"] for t in everything]
    assert stamps == sorted(stamps, reverse=True)
    paged = transactions(gateway, key, limit=2)
    assert [t["id"] for t in paged] == [t["id"] for t in everything]

    headers = {"authorization": f"Bearer {key}"}
    first = httpx.get(gateway.v1 + "/credits/transactions", params={"limit": 4}, headers=headers).json()
    assert len(first["data"]) == 4 and first["next_cursor"]
    rest = httpx.get(
        gateway.v1 + "/credits/transactions", params={"limit": 4, "cursor": first["next_cursor"]}, headers=headers
    ).json()
    assert [t["type"] for t in rest["data"]] == ["TOPUP", "GRANT"] and rest["next_cursor"] is None
    for bad in ({"limit": 1001}, {"limit": 0}, {"cursor": "not-a-cursor"}):
        r = httpx.get(gateway.v1 + "/credits/transactions", params=bad, headers=headers)
        assert envelope(r, 400)["param"] in ("limit", "cursor")
    assert httpx.get(gateway.v1 + "/credits/transactions", params={"limit": 1000}, headers=headers).status_code == 200
    assert micros(credits(gateway, key)["balance"]) == 5_000_000 - sum(
        -micros(t["amount"]) for t in everything if t["type"] == "USAGE"
    )

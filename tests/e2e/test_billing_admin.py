"""The operator's side of billing against a running gateway: credits through the admin API
(idempotent), its error envelopes, and the `creditgate accounts|keys|credits` commands run
as separate processes on the gateway's own database, whose changes the gateway picks up."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import openai
from tests.e2e.billing_support import (
    assert_ledger_balances,
    client,
    credits,
    envelope,
    micros,
    transactions,
    wait_for,
)
from tests.e2e.conftest import ADMIN_TOKEN, Gateway


def test_replayed_credit_changes_nothing(gateway: Gateway) -> None:
    account_id, key = gateway.account(None)
    path = f"/admin/accounts/{account_id}/credits"
    first = gateway.admin("POST", path, {"amount": "7.25", "kind": "topup", "idempotency_key": "order-42"})
    assert first.status_code == 201, first.text
    assert first.json()["replayed"] is False and first.json()["amount"] == 7.25
    for _ in range(2):
        again = gateway.admin("POST", path, {"amount": "7.25", "kind": "topup", "idempotency_key": "order-42"})
        assert again.status_code == 201
        assert again.json()["replayed"] is True
        assert again.json()["transaction_id"] == first.json()["transaction_id"]
        assert again.json()["lot_id"] == first.json()["lot_id"]
    # The same key for a different credit is a conflict, not a second credit.
    clash = gateway.admin("POST", path, {"amount": "9", "kind": "topup", "idempotency_key": "order-42"})
    assert envelope(clash, 409)["param"] == "idempotency_key"
    # The key may also come as an Idempotency-Key header.
    by_header = httpx.post(
        gateway.url + path,
        json={"amount": "1", "kind": "bonus"},
        headers={"authorization": f"Bearer {ADMIN_TOKEN}", "idempotency-key": "h1"},
    )
    assert by_header.status_code == 201
    assert gateway.admin("POST", path, {"amount": "1", "kind": "bonus", "idempotency_key": "h1"}).json()["replayed"]

    assert [t["type"] for t in transactions(gateway, key)] == ["BONUS", "TOPUP"]
    view = gateway.balance(account_id)
    assert micros(view["balance"]) == 8_250_000 and micros(view["topped_up"]) == 7_250_000
    assert_ledger_balances(gateway, account_id, key)


def test_admin_errors_use_the_envelope(gateway: Gateway) -> None:
    account_id, _ = gateway.account(None)
    r = httpx.post(gateway.url + f"/admin/accounts/{account_id}/credits", json={"amount": "1"})
    assert envelope(r, 401)["code"] == "invalid_admin_token"
    assert envelope(gateway.admin("GET", "/admin/accounts/999999"), 404)["message"]
    bad = gateway.admin("POST", f"/admin/accounts/{account_id}/credits", {"amount": "0.0000001"})
    assert envelope(bad, 400)["param"] == "amount"
    negative = gateway.admin("POST", f"/admin/accounts/{account_id}/credits", {"amount": "-5"})
    assert envelope(negative, 400)["param"] == "amount"
    kind = gateway.admin("POST", f"/admin/accounts/{account_id}/credits", {"amount": "1", "kind": "gift"})
    assert envelope(kind, 400)["param"] == "kind"
    assert micros(gateway.balance(account_id)["balance"]) == 0


def cli(gw: Gateway, *args: str) -> str:
    """Run `creditgate ARGS` as its own process on the gateway's config and database."""
    done = subprocess.run(
        [sys.executable, "-m", "creditgate", *args, "--config", str(gw.config)],
        env=gw.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def answers(gw: Gateway, key: str) -> int:
    """The status of one small chat request with `key`."""
    try:
        client(gw, key).chat.completions.create(
            model="test/echo", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


def test_cli_on_the_gateway_database(gateway: Gateway) -> None:
    account_id, key = gateway.account("1")
    assert answers(gateway, key) == 200

    # Credits granted from the command line reach the running gateway.
    out = cli(gateway, "credits", "grant", str(account_id), "5", "--kind", "topup", "--idempotency-key", "cli-1")
    assert "topup of 5 INR" in out
    assert "replayed" in cli(
        gateway, "credits", "grant", str(account_id), "5", "--kind", "topup", "--idempotency-key", "cli-1"
    )
    wait_for(lambda: micros(credits(gateway, key)["balance"]) > 5_000_000, what="the CLI's credit")
    assert "TOPUP" in cli(gateway, "credits", "transactions", str(account_id))
    assert re.search(r"req_[0-9a-f]+", cli(gateway, "accounts", "usage", str(account_id)))
    assert str(account_id) in cli(gateway, "accounts", "list", "--limit", "1000")

    # Suspending and re-activating an account.
    assert "suspended" in cli(gateway, "accounts", "suspend", str(account_id))
    wait_for(lambda: answers(gateway, key) == 403, what="the suspension to reach the gateway")
    cli(gateway, "accounts", "activate", str(account_id))
    wait_for(lambda: answers(gateway, key) == 200, what="the activation to reach the gateway")

    # A key reset on the command line: the old secret stops working, the new one works.
    key_id = gateway.balance(account_id)["keys"][0]["id"]
    out = cli(gateway, "keys", "reset", str(key_id))
    found = re.search(r"sk-[0-9a-f]{64}", out)
    assert found is not None, out
    new_key = found.group(0)
    wait_for(lambda: answers(gateway, key) == 401, what="the reset to reach the gateway")
    assert answers(gateway, new_key) == 200
    assert f"key {key_id} revoked" in cli(gateway, "keys", "revoke", str(key_id))
    wait_for(lambda: answers(gateway, new_key) == 401, what="the revocation to reach the gateway")
    assert_ledger_balances(
        gateway, account_id, gateway.admin("POST", f"/admin/accounts/{account_id}/keys", {}).json()["key"]
    )

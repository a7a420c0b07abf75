"""The operator's CLI against a real SQLite database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from creditgate.cli_admin import accounts_app, credits_app, keys_app

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITGATE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("CREDITGATE_CONFIG", raising=False)


def test_accounts_keys_and_credits_from_the_command_line(db: None) -> None:
    made = runner.invoke(accounts_app, ["create", "ops@example.com", "--name", "Ops", "--trial"])
    assert made.exit_code == 0, made.output
    assert "ops@example.com" in made.output
    dup = runner.invoke(accounts_app, ["create", "ops@example.com"])
    assert dup.exit_code == 1 and "already exists" in dup.output

    granted = runner.invoke(credits_app, ["grant", "1", "2.5", "--kind", "topup", "--idempotency-key", "x"])
    assert granted.exit_code == 0 and "2.5 USD" in granted.output
    replay = runner.invoke(credits_app, ["grant", "1", "2.5", "--kind", "topup", "--idempotency-key", "x"])
    assert "replayed" in replay.output
    bad = runner.invoke(credits_app, ["grant", "1", "0.0000001"])
    assert bad.exit_code == 2 and "6 decimal places" in bad.output

    key = runner.invoke(keys_app, ["create", "1", "--name", "ci", "--model", "m1", "--daily-cap", "1"])
    assert key.exit_code == 0 and re.search(r"sk-[0-9a-f]{64}", key.output)
    listed = runner.invoke(keys_app, ["list", "1"])
    assert "ci" in listed.output and "m1" in listed.output

    shown = runner.invoke(accounts_app, ["show", "1"])
    assert "2.5" in shown.output and "topup" in shown.output
    tx = runner.invoke(credits_app, ["transactions", "1"])
    assert "TOPUP" in tx.output
    expired = runner.invoke(credits_app, ["expire"])
    assert expired.exit_code == 0 and "0 lot(s) expired" in expired.output
    suspended = runner.invoke(accounts_app, ["suspend", "1"])
    assert "suspended" in suspended.output

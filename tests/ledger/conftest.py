"""Billing fixtures: see tests/ledger/billing_support.py."""

from tests.ledger.billing_support import db_url, pg_url, services, sqlite_url

__all__ = ["db_url", "pg_url", "services", "sqlite_url"]

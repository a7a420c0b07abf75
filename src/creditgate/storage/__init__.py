"""Persistence: the SQL schema, engines for SQLite and PostgreSQL, and migrations."""

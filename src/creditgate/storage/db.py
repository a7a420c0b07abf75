"""Async engines from one database URL.

`sqlite:///path` becomes sqlite+aiosqlite with WAL, `synchronous=FULL`, a busy timeout and
foreign keys on. These engines carry the operator's writes (accounts, keys, top-ups), which
are rare, so they fsync every commit. Settlements, the writes of the hot path, go through a
connection of their own (`ledger/sqlite_settlements.py`, `synchronous=NORMAL` by default:
safe against a crash of the process, see `billing.sqlite_synchronous`).

SQLite has one writer at a time and a deferred transaction that later wants to write can
fail with "database is locked" without waiting. So writes go through `Database.writer`,
whose transactions start with BEGIN IMMEDIATE (they queue on the busy timeout instead),
and reads through `Database.reader`. On PostgreSQL both are the same engine.
`postgresql://` becomes postgresql+asyncpg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

BUSY_TIMEOUT_MS = 10_000


def async_url(url: str) -> str:
    """The SQLAlchemy async URL for a plain database URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL {parsed.render_as_string()!r}: use sqlite:/// or postgresql://")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite database URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return str(parsed.database)


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine(url: str, *, writer: bool = True) -> AsyncEngine:
    """One engine for `url`; on SQLite, `writer` chooses BEGIN IMMEDIATE transactions."""
    engine = create_async_engine(async_url(url), pool_pre_ping=not is_sqlite(url))
    if is_sqlite(url):
        _sqlite_pragmas(engine, immediate=writer)
    return engine


@dataclass
class Database:
    url: str
    writer: AsyncEngine
    reader: AsyncEngine

    @property
    def sqlite(self) -> bool:
        return is_sqlite(self.url)

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def connect(url: str) -> Database:
    writer = create_engine(url, writer=True)
    reader = create_engine(url, writer=False) if is_sqlite(url) else writer
    return Database(url, writer, reader)

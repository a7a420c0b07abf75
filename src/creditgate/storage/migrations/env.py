"""Alembic environment: runs on a connection handed over by `migrate()`, or, from the
`alembic` command line, on the URL in the config or CREDITGATE_DATABASE_URL."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from creditgate.storage.db import create_engine
from creditgate.storage.schema import metadata

config = context.config


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_from_url(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_on)
    finally:
        await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    run_on(connection)
else:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("CREDITGATE_DATABASE_URL")
    if not url:
        raise SystemExit("set sqlalchemy.url or CREDITGATE_DATABASE_URL to the database to migrate")
    asyncio.run(run_from_url(url))

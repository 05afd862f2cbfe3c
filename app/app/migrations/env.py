"""Alembic environment: async engine, URL from the app's DATABASE_URL setting."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.config import load_database_settings, normalise_database_url
from app.db import connect_args
from app.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    # Tests may pass a URL in config.attributes; deployments always use DATABASE_URL.
    url = config.attributes.get("database_url")
    return normalise_database_url(str(url)) if url else load_database_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    settings = load_database_settings() if not config.attributes.get("database_url") else None
    args = connect_args(settings, "alembic") if settings else {}
    engine = create_async_engine(_url(), poolclass=NullPool, connect_args=args)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())

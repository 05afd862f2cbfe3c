"""Async SQLAlchemy engine and sessions; created in the lifespan, i.e. after the fork."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.config import DatabaseSettings, Settings


def connect_args(settings: DatabaseSettings, application_name: str) -> dict[str, object]:
    return {
        "timeout": settings.db_connect_timeout,
        "server_settings": {
            # JIT compilation costs more than it saves on short OLTP queries.
            "jit": "off",
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "application_name": application_name,
        },
    }


def create_engine(settings: Settings) -> AsyncEngine:
    # The async default pool (AsyncAdaptedQueuePool); QueuePool itself is sync-only.
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=settings.db_pool_recycle,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=settings.db_pool_pre_ping,
        pool_use_lifo=True,
        echo=settings.debug,
        connect_args=connect_args(settings, settings.app_name),
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request, committed unless the handler raised."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise

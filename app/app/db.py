"""Async SQLAlchemy engine and sessions; created in the lifespan, i.e. after the fork."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine.interfaces import DBAPIConnection, Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

from app.config import DatabaseSettings, Settings

log = logging.getLogger(__name__)

# Seconds a client is told to wait before retrying when the database is unavailable.
RETRY_AFTER = 5
# SQLSTATE classes meaning "the server cannot serve now", not "the SQL is wrong":
# 08 connection exception, 53 insufficient resources (too many connections, disk full),
# 57 operator intervention (starting up, shutting down, terminated, statement_timeout).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})


class DatabaseUnavailable(Exception):
    """PostgreSQL is down, unreachable, restarting or too busy: a 503, never a 500."""


def is_unavailable(exc: BaseException) -> bool:
    """True for faults of the database server or the way to it, False for our own bugs."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection within DB_POOL_TIMEOUT
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if isinstance(exc.orig.__cause__, asyncpg.TargetServerAttributeNotMatched):
            return True  # no host takes writes: a Patroni cluster between two primaries
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        return exc.connection_invalidated or sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    # asyncpg lets socket errors through unwrapped: refused, reset, unreachable, and
    # TimeoutError (an OSError) for the connect timeout and the command timeout.
    return isinstance(exc, OSError)


def _command_timeout(settings: DatabaseSettings) -> float | None:
    # Client-side bound for a server that stopped answering (blackholed host): a little
    # longer than statement_timeout, so a live server always cancels first, cleanly.
    if settings.db_statement_timeout_ms == 0:
        return None
    return settings.db_statement_timeout_ms / 1000 + 1


def connect_args(settings: DatabaseSettings, application_name: str) -> dict[str, object]:
    return {
        "timeout": settings.db_connect_timeout,
        "command_timeout": _command_timeout(settings),
        "server_settings": {
            # JIT compilation costs more than it saves on short OLTP queries.
            "jit": "off",
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "application_name": application_name,
        },
    }


# SQLSTATE classes a wait cannot fix: wrong password (28), unknown database (3D).
_CONNECT_FINAL_SQLSTATE_CLASSES = frozenset({"28", "3D"})
INVALID_PASSWORD = "28P01"  # invalid_password: the server refused the password
PRIMARY_POLL = 0.25  # seconds between two connection attempts while waiting


def _connect_either_password(
    dialect: Dialect,
    cargs: Sequence[object],
    params: dict[str, Any],
    previous_password: str | None,
) -> DBAPIConnection:
    """`dialect.connect`, tried once more with the previous password when the server
    refuses the current one: during a rotation the app may have the new password before
    the server does. Any other error, or a refused previous password, is raised as is."""
    try:
        return dialect.connect(*cargs, **params)
    except Exception as exc:
        if (
            previous_password is None
            or getattr(exc, "sqlstate", None) != INVALID_PASSWORD
            or params.get("password") == previous_password
        ):
            raise
    log.info("database password refused, connecting with DATABASE_PASSWORD_PREVIOUS")
    return dialect.connect(*cargs, **{**params, "password": previous_password})


def follow_the_primary(
    engine: AsyncEngine, seconds: float, previous_password: str | None = None
) -> None:
    """New connections with several hosts in the URL (a Patroni cluster, with
    target_session_attrs=read-write) try the hosts one at a time, the one that took the
    last connection first, each within the connect timeout: asyncpg's own multi-host
    connect spends one timeout on all of them, so a host that accepts TCP but never answers
    (a frozen machine) ahead of the primary would fail every new connection. While no
    host is the primary (the lead moves), they try again for up to `seconds`.
    A refused password is tried once more with `previous_password` when it is set."""
    last: tuple[str, int] | None = None  # (host, port) that took the last connection

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect, conn_rec, cargs, cparams):  # noqa: ANN001, ANN202 - SQLAlchemy's hook
        nonlocal last
        hosts = cparams.get("host")
        # One server: asyncpg's connect as it is (None stands for the URL's own host).
        candidates = (
            list(zip(hosts, cparams["port"], strict=True)) if isinstance(hosts, list) else [None]
        )
        deadline = time.monotonic() + seconds
        while True:
            errors: list[Exception] = []
            for candidate in sorted(candidates, key=lambda c: c != last):
                params = (
                    cparams
                    if candidate is None
                    else {**cparams, "host": candidate[0], "port": candidate[1]}
                )
                try:
                    connection = _connect_either_password(dialect, cargs, params, previous_password)
                except Exception as exc:
                    sqlstate = getattr(exc, "sqlstate", None) or ""
                    if sqlstate[:2] in _CONNECT_FINAL_SQLSTATE_CLASSES:
                        raise
                    errors.append(exc)
                    continue
                last = candidate
                return connection
            if time.monotonic() >= deadline:
                raise errors[-1]
            # Runs in SQLAlchemy's greenlet on the event loop: sleep without blocking it.
            await_only(asyncio.sleep(PRIMARY_POLL))


def ping_on_checkout(engine: AsyncEngine) -> None:
    """Replace, on checkout, a pooled connection the server has closed (a restart, a
    switchover): one round trip, none for a connection asyncpg already knows is closed
    or one made just now. SQLAlchemy's own pool_pre_ping wraps its ping in BEGIN and
    ROLLBACK, for PgBouncer's transaction mode: three round trips on every request."""

    @event.listens_for(engine.sync_engine, "connect")
    def _fresh(dbapi_connection, connection_record):  # noqa: ANN001, ANN202
        connection_record.info["fresh"] = True

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping(dbapi_connection, connection_record, connection_proxy):  # noqa: ANN001, ANN202
        if connection_record.info.pop("fresh", False):
            return  # as SQLAlchemy's pre-ping: a new connection has just answered
        driver = dbapi_connection.driver_connection
        try:
            if driver.is_closed():
                raise ConnectionError("the server closed the connection")
            # Runs in SQLAlchemy's greenlet on the event loop, like a query.
            await_only(driver.execute("SELECT 1"))
        except Exception as exc:
            # The pool drops this connection, and every older one, and connects anew.
            raise sa_exc.DisconnectionError(str(exc)) from exc


def create_engine(settings: Settings) -> AsyncEngine:
    # The async default pool (AsyncAdaptedQueuePool); QueuePool itself is sync-only.
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=settings.db_pool_recycle,
        pool_timeout=settings.db_pool_timeout,
        pool_use_lifo=True,
        echo=settings.debug,
        # SQLAlchemy's error text and echo log show the SQL without the values a caller sent.
        hide_parameters=True,
        connect_args=connect_args(settings, settings.app_name),
    )
    if settings.db_pool_pre_ping:
        ping_on_checkout(engine)
    previous = settings.database_password_previous
    follow_the_primary(
        engine, settings.db_primary_wait, previous.get_secret_value() if previous else None
    )
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that only read: autocommit, so a read is one round trip
    without a BEGIN before it and a COMMIT after it. Under READ COMMITTED each statement
    sees the commits made before it anyway: the transaction added nothing to a read."""
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


def _describe(exc: BaseException) -> str:
    # The driver's message, not SQLAlchemy's (that one carries the SQL and its parameters).
    detail = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    return f"{type(exc).__name__}: {detail}"


def dropping_a_dead_session(
    session: AsyncSession, load: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[Any]]:
    """`load`, which closes the session without a ROLLBACK when the database is
    unavailable (a server that does not answer would make the ROLLBACK wait too), so that
    the request can still end well if the cache answers on a second look."""

    async def load_or_drop() -> Any:
        try:
            return await load()
        except Exception as exc:
            if is_unavailable(exc):
                await session.invalidate()
            raise

    return load_or_drop


def _session_dependency(
    sessionmaker_name: str,
) -> Callable[[Request], AsyncIterator[AsyncSession]]:
    async def session_dependency(request: Request) -> AsyncIterator[AsyncSession]:
        sessionmaker: async_sessionmaker[AsyncSession] = getattr(
            request.app.state, sessionmaker_name
        )
        async with sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException as exc:
                try:
                    await session.rollback()
                except Exception as rollback_error:
                    # The connection died with the request's error; that error is the answer.
                    log.warning("rollback failed", extra={"error": _describe(rollback_error)})
                if is_unavailable(exc):
                    log.warning("database unavailable", extra={"error": _describe(exc)})
                    raise DatabaseUnavailable from exc
                raise

    return session_dependency


# FastAPI dependency: one session per request, committed unless the handler raised.
# Use with `Depends(get_session, scope="function")`, so the commit happens before the
# response is sent and a database fault there still becomes the response (503).
# The session connects lazily: a request served from the cache never touches PostgreSQL.
get_session = _session_dependency("sessionmaker")
# The same for handlers that only read: autocommit, no transaction around them.
get_read_session = _session_dependency("read_sessionmaker")


async def database_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    # No exception text: it may name hosts and addresses.
    return JSONResponse(
        {"detail": "the database is unavailable, retry later"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER)},
    )

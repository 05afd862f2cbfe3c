"""Fixtures against the host's real PostgreSQL and Redis.

TEST_DATABASE_URL: an admin URL; each session creates and drops its own database.
TEST_REDIS_URL: every test uses its own key prefix, deleted at the end of the session.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from redis import Redis as SyncRedis
from sqlalchemy.engine import make_url

from app.auth import WRITE_SCOPE, mint
from app.config import Settings
from app.factory import create_app
from app.migrate import alembic_config
from tests.faults import FaultProxy

ADMIN_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "x" * 40


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(ADMIN_URL))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(prefix: str = "fastapi_app_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    name = make_url(url).database
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = create_database()
    try:
        command.upgrade(alembic_config(url), "head")
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"fastapi-app-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = SyncRedis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def make_settings(database_url: str, redis_prefix: str) -> Callable[..., Settings]:
    prefix = f"{redis_prefix}:{uuid.uuid4().hex[:8]}"

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": database_url,
            "redis_url": REDIS_URL,
            "environment": "testing",
            "secret_key": SECRET,
            "cache_prefix": prefix,
            "redis_retry_interval": 0,
            # An app started with a dependency down waits this long (test_warm_up.py).
            "warm_up_seconds": 0.5,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
async def clean_db(database_url: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(database_url))
    try:
        await conn.execute("TRUNCATE products RESTART IDENTITY")
    finally:
        await conn.close()


def write_headers(settings: Settings) -> dict[str, str]:
    """An Authorization header that lets the app of these settings accept writes."""
    assert settings.secret_key is not None
    secret = settings.secret_key.get_secret_value()
    token = mint(secret, settings.app_name, "tests", [WRITE_SCOPE], ttl=3600)
    return {"Authorization": f"Bearer {token}"}


class AppClient(httpx.AsyncClient):
    app: FastAPI


async def start_client(
    settings: Settings, headers: dict[str, str] | None = None
) -> tuple[AppClient, FastAPI, object]:
    app = create_app(settings)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = AppClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=headers
    )
    client.app = app
    return client, app, lifespan


@pytest.fixture
async def app_factory(clean_db: None) -> AsyncIterator[Callable[..., object]]:
    """Start apps (lifespan included) from settings; all are shut down after the test.
    Their clients send a write token unless `authenticated=False`."""
    started: list[tuple[AppClient, object]] = []

    async def start(settings: Settings, authenticated: bool = True) -> AppClient:
        headers = write_headers(settings) if authenticated else None
        client, _app, lifespan = await start_client(settings, headers)
        started.append((client, lifespan))
        return client

    yield start
    for client, lifespan in reversed(started):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)  # type: ignore[attr-defined]


@pytest.fixture
async def client(app_factory, make_settings) -> AppClient:  # type: ignore[no-untyped-def]
    return await app_factory(make_settings())  # type: ignore[no-any-return]


async def _proxy(url: str, default_port: int) -> FaultProxy:
    target = urlsplit(url)
    return await FaultProxy(target.hostname or "127.0.0.1", target.port or default_port).start()


# Both depend on app_factory so that they are torn down first: closing the proxy resets
# whatever it still holds, and the apps' pools then close at once, even after a blackhole.
@pytest.fixture
async def pg_proxy(app_factory: object) -> AsyncIterator[FaultProxy]:
    """A FaultProxy in front of the test PostgreSQL; use `pg_proxy.url(database_url)`."""
    proxy = await _proxy(ADMIN_URL, 5432)
    yield proxy
    await proxy.close()


@pytest.fixture
async def redis_proxy(app_factory: object) -> AsyncIterator[FaultProxy]:
    """A FaultProxy in front of the test Redis; use `redis_proxy.url(REDIS_URL)`."""
    proxy = await _proxy(REDIS_URL, 6379)
    yield proxy
    await proxy.close()


PRODUCT = {"sku": "SKU-1", "name": "Widget", "category": "tools", "price": "9.99", "stock": 5}


def product(**overrides: object) -> dict[str, object]:
    return {**PRODUCT, **overrides}

"""Rotating the database password without a failed request (DATABASE_PASSWORD_PREVIOUS),
against the host's PostgreSQL with a role of the test's own, whose password is changed
while the app serves: the app gets the new password first, the server later."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlalchemy import make_url

from app.config import Settings
from tests.conftest import AppClient, product
from tests.test_database_down import admin

OLD, NEW = "old-password-0123456789", "new-password-9876543210"


@pytest.fixture
async def app_role(database_url: str) -> AsyncIterator[str]:
    """A login role with the password OLD, allowed what the app does to products."""
    role = f"rot_{uuid.uuid4().hex[:8]}"
    async with admin(database_url) as conn:
        await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{OLD}'")
        await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON products TO {role}")
        await conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
    try:
        yield role
    finally:
        async with admin(database_url) as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
            )
            await conn.execute(f"DROP OWNED BY {role}")
            await conn.execute(f"DROP ROLE {role}")


def url_of(database_url: str, role: str, password: str) -> str:
    url = make_url(database_url).set(username=role, password=password)
    return url.render_as_string(hide_password=False)


async def burst(client: httpx.AsyncClient, tag: str, size: int = 20) -> list[int]:
    """Reads and writes at once: more than the pool holds, so new connections open."""
    requests = [client.get("/api/v1/products", params={"page": p}) for p in range(1, size)]
    requests += [client.post("/api/v1/products", json=product(sku=f"{tag}-{i}")) for i in range(5)]
    return [r.status_code for r in await asyncio.gather(*requests)]


async def new_connections(client: AppClient) -> None:
    """Close the pooled connections: the next requests open new ones."""
    await client.app.state.engine.dispose()


async def test_the_new_password_before_and_after_the_server_has_it(  # type: ignore[no-untyped-def]
    app_factory, make_settings: Callable[..., Settings], database_url: str, app_role: str
) -> None:
    settings = make_settings(
        database_url=url_of(database_url, app_role, NEW),
        database_password_previous=OLD,
        db_pool_size=2,
        db_max_overflow=2,
    )
    client = await app_factory(settings)
    statuses: list[int] = []
    # The server knows only the old password: each new connection is refused with the new
    # one and opened with the previous one.
    statuses += await burst(client, "old")
    await new_connections(client)
    statuses += await burst(client, "old-again")
    # The server takes the new password while the app serves (connections already open
    # stay open), then only the new one works.
    async with admin(database_url) as conn:
        change = asyncio.create_task(conn.execute(f"ALTER ROLE {app_role} PASSWORD '{NEW}'"))
        statuses += await burst(client, "during")
        await change
    await new_connections(client)
    statuses += await burst(client, "new")
    assert statuses and set(statuses) <= {200, 201}, statuses
    assert (await client.get("/health/ready")).json()["status"] == "ok"

    # The old password no longer opens anything: an app with only that one fails.
    stale = await app_factory(make_settings(database_url=url_of(database_url, app_role, OLD)))
    assert (await stale.get("/api/v1/products/1")).status_code == 500


async def test_each_host_of_a_cluster_url_takes_the_previous_password(  # type: ignore[no-untyped-def]
    app_factory, make_settings: Callable[..., Settings], database_url: str, app_role: str
) -> None:
    # A Patroni cluster's URL (several hosts, read-write wanted): the fallback applies to
    # the host that answers, as with one server.
    base = make_url(url_of(database_url, app_role, NEW))
    hosts = [f"{base.host}:{base.port or 5432}"] * 2
    url = base.set(
        host=None, port=None, query={"host": hosts, "target_session_attrs": "read-write"}
    )
    settings = make_settings(
        database_url=url.render_as_string(hide_password=False),
        database_password_previous=OLD,
        db_primary_wait=2,
    )
    client = await app_factory(settings)
    statuses = await burst(client, "cluster")
    assert set(statuses) <= {200, 201}, statuses


async def test_the_previous_password_is_not_tried_for_other_errors(  # type: ignore[no-untyped-def]
    app_factory, make_settings: Callable[..., Settings], database_url: str, app_role: str
) -> None:
    # An unknown database (3D000) is no password problem: the previous one is not tried.
    url = make_url(url_of(database_url, app_role, OLD)).set(database="no_such_database_here")
    settings = make_settings(
        database_url=url.render_as_string(hide_password=False), database_password_previous=OLD
    )
    client = await app_factory(settings)
    assert (await client.get("/api/v1/products/1")).status_code == 500


async def test_two_wrong_passwords_fail_fast_as_before(  # type: ignore[no-untyped-def]
    app_factory, make_settings: Callable[..., Settings], database_url: str, app_role: str
) -> None:
    # Neither password is the server's: a configuration error, loud and at once (500, as
    # a wrong password without DATABASE_PASSWORD_PREVIOUS), never a wait for a primary.
    settings = make_settings(
        database_url=url_of(database_url, app_role, "wrong-password-one"),
        database_password_previous="wrong-password-two",
        db_primary_wait=5,
    )
    client = await app_factory(settings)
    started = time.monotonic()
    response = await client.get("/api/v1/products/1")
    assert (response.status_code, response.json()) == (500, {"detail": "internal server error"})
    assert time.monotonic() - started < 2


def test_an_empty_previous_password_is_none(make_settings: Callable[..., Settings]) -> None:
    assert make_settings(database_password_previous="").database_password_previous is None
    previous = make_settings(database_password_previous=OLD).database_password_previous
    assert previous is not None and previous.get_secret_value() == OLD
    assert OLD not in repr(make_settings(database_password_previous=OLD))

"""A new worker opens its pools' first connections before it takes requests (warm_up.py)."""

from __future__ import annotations

import time

from app.warm_up import CONNECTIONS
from tests.conftest import REDIS_URL, product


async def test_a_started_app_holds_warm_connections_before_any_request(  # type: ignore[no-untyped-def]
    app_factory, make_settings, database_url, pg_proxy, redis_proxy
) -> None:
    client = await app_factory(
        make_settings(
            database_url=pg_proxy.url(database_url),
            redis_url=redis_proxy.url(REDIS_URL),
            warm_up_seconds=3,
        )
    )
    assert pg_proxy.connects == CONNECTIONS
    assert redis_proxy.connects == CONNECTIONS
    # The first requests use them: no new connection for a write and a read.
    created = await client.post("/api/v1/products", json=product())
    assert created.status_code == 201, created.text
    read = await client.get(f"/api/v1/products/{created.json()['id']}")
    assert read.status_code == 200
    assert (pg_proxy.connects, redis_proxy.connects) == (CONNECTIONS, CONNECTIONS)


async def test_no_warm_up_when_set_to_zero(  # type: ignore[no-untyped-def]
    app_factory, make_settings, database_url, pg_proxy, redis_proxy
) -> None:
    await app_factory(
        make_settings(
            database_url=pg_proxy.url(database_url),
            redis_url=redis_proxy.url(REDIS_URL),
            warm_up_seconds=0,
        )
    )
    assert (pg_proxy.connects, redis_proxy.connects) == (0, 0)


async def test_a_dependency_down_delays_the_start_by_warm_up_seconds_at_most(  # type: ignore[no-untyped-def]
    app_factory, make_settings, redis_proxy
) -> None:
    await redis_proxy.down()
    t0 = time.monotonic()
    client = await app_factory(
        make_settings(redis_url=redis_proxy.url(REDIS_URL), warm_up_seconds=1)
    )
    took = time.monotonic() - t0
    assert 0.9 <= took < 2.5, took
    # It serves: reads come from the database, and the readiness check names Redis.
    listed = await client.get("/api/v1/products")
    assert listed.status_code == 200, listed.text
    ready = await client.get("/health/ready")
    assert ready.status_code == 503 and "redis" in ready.json()["failing"]

"""Read-through caching and its invalidation."""

from __future__ import annotations

import asyncpg
from prometheus_client import REGISTRY

from app.cache import Cache
from tests.conftest import _asyncpg_dsn, product


def _count(name: str, cache: str) -> float:
    return REGISTRY.get_sample_value(name, {"cache": cache}) or 0.0


async def _sql(database_url: str, statement: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(database_url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def test_hit_then_invalidated_by_update(client, database_url) -> None:  # type: ignore[no-untyped-def]
    pid = (await client.post("/api/v1/products", json=product())).json()["id"]
    hits, misses = (
        _count("app_cache_hits_total", "product"),
        _count("app_cache_misses_total", "product"),
    )
    assert (await client.get(f"/api/v1/products/{pid}")).json()["stock"] == 5
    # Change the row behind the app's back: a cached read must not see it.
    await _sql(database_url, f"UPDATE products SET stock = 99 WHERE id = {pid}")
    assert (await client.get(f"/api/v1/products/{pid}")).json()["stock"] == 5
    assert _count("app_cache_misses_total", "product") == misses + 1
    assert _count("app_cache_hits_total", "product") == hits + 1
    # A write through the API invalidates: the next read is fresh.
    await client.patch(f"/api/v1/products/{pid}", json={"name": "Renamed"})
    fresh = (await client.get(f"/api/v1/products/{pid}")).json()
    assert (fresh["name"], fresh["stock"]) == ("Renamed", 99)


async def test_lists_invalidated_by_create_and_delete(client) -> None:  # type: ignore[no-untyped-def]
    await client.post("/api/v1/products", json=product())
    assert (await client.get("/api/v1/products")).json()["total"] == 1
    second = (await client.post("/api/v1/products", json=product(sku="SKU-2"))).json()
    assert (await client.get("/api/v1/products")).json()["total"] == 2
    await client.delete(f"/api/v1/products/{second['id']}")
    assert (await client.get("/api/v1/products")).json()["total"] == 1


async def test_keys_follow_query_parameters(client) -> None:  # type: ignore[no-untyped-def]
    await client.post("/api/v1/products", json=product(sku="A", category="a"))
    await client.post("/api/v1/products", json=product(sku="B", category="b"))
    for _round in range(2):  # second round comes from the cache
        a = (await client.get("/api/v1/products", params={"category": "a"})).json()
        b = (await client.get("/api/v1/products", params={"category": "b"})).json()
        assert [p["sku"] for p in a["items"]] == ["A"]
        assert [p["sku"] for p in b["items"]] == ["B"]


async def test_write_visible_from_another_worker(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    worker_a, worker_b = await app_factory(settings), await app_factory(settings)
    pid = (await worker_a.post("/api/v1/products", json=product())).json()["id"]
    assert (await worker_b.get(f"/api/v1/products/{pid}")).json()["stock"] == 5
    await worker_a.patch(f"/api/v1/products/{pid}", json={"stock": 1})
    assert (await worker_b.get(f"/api/v1/products/{pid}")).json()["stock"] == 1
    assert (await worker_b.get("/api/v1/products")).json()["items"][0]["stock"] == 1


async def test_reader_racing_a_write_cannot_store_stale_data(client) -> None:  # type: ignore[no-untyped-def]
    cache: Cache = client.app.state.cache
    loads = 0

    async def slow_load() -> dict[str, int]:
        nonlocal loads
        loads += 1
        if loads == 1:
            # A write commits and invalidates while this reader holds old data.
            await cache.invalidate("product:42")
            return {"stock": 1}
        return {"stock": 2}

    assert await cache.get_or_load("product", "product:42", "v", 60, slow_load) == (
        {"stock": 1},
        False,
    )
    assert await cache.get_or_load("product", "product:42", "v", 60, slow_load) == (
        {"stock": 2},
        False,
    )
    assert await cache.get_or_load("product", "product:42", "v", 60, slow_load) == (
        {"stock": 2},
        True,
    )


async def test_values_are_json_not_pickle(client) -> None:  # type: ignore[no-untyped-def]
    pid = (await client.post("/api/v1/products", json=product())).json()["id"]
    await client.get(f"/api/v1/products/{pid}")
    cache: Cache = client.app.state.cache
    keys = [k async for k in cache.redis.scan_iter(match=f"{cache.prefix}:product:{pid}:*")]
    data = [k for k in keys if not k.endswith(":version")]
    assert len(data) == 1
    assert (await cache.redis.get(data[0])).startswith('{"id":')


async def test_cache_can_be_disabled(app_factory, make_settings, database_url) -> None:  # type: ignore[no-untyped-def]
    client = await app_factory(make_settings(cache_enabled=False))
    pid = (await client.post("/api/v1/products", json=product())).json()["id"]
    await client.get(f"/api/v1/products/{pid}")
    await _sql(database_url, f"UPDATE products SET stock = 77 WHERE id = {pid}")
    assert (await client.get(f"/api/v1/products/{pid}")).json()["stock"] == 77

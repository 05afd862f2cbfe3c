"""The HTTP contract of /api/v1/products and /version."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import httpx
import pytest
from sqlalchemy import event

from tests.conftest import product


async def test_create_get_list_update_delete(client) -> None:  # type: ignore[no-untyped-def]
    created = await client.post("/api/v1/products", json=product())
    assert created.status_code == 201
    body = created.json()
    assert body["sku"] == "SKU-1" and body["price"] == "9.99" and body["stock"] == 5
    assert created.headers["location"].endswith(f"/api/v1/products/{body['id']}")
    assert created.headers["cache-control"] == "no-store"

    got = await client.get(f"/api/v1/products/{body['id']}")
    assert got.status_code == 200
    assert got.json() == body
    assert got.headers["cache-control"] == "public, max-age=5"

    updated = await client.patch(f"/api/v1/products/{body['id']}", json={"price": 12.5})
    assert updated.status_code == 200
    assert updated.json()["price"] == "12.50"
    assert updated.json()["name"] == "Widget"

    listed = await client.get("/api/v1/products")
    assert listed.status_code == 200
    assert listed.json()["total"] == 1
    assert listed.json()["items"][0]["price"] == "12.50"

    deleted = await client.delete(f"/api/v1/products/{body['id']}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.get(f"/api/v1/products/{body['id']}")).status_code == 404
    assert (await client.delete(f"/api/v1/products/{body['id']}")).status_code == 404


async def test_pagination_and_category_filter(client) -> None:  # type: ignore[no-untyped-def]
    for i in range(7):
        category = "books" if i % 2 else "tools"
        response = await client.post(
            "/api/v1/products", json=product(sku=f"S{i}", category=category)
        )
        assert response.status_code == 201
    page = (await client.get("/api/v1/products", params={"page": 2, "page_size": 3})).json()
    assert [p["sku"] for p in page["items"]] == ["S3", "S4", "S5"]
    assert (page["page"], page["page_size"], page["total"]) == (2, 3, 7)
    books = (await client.get("/api/v1/products", params={"category": "books"})).json()
    assert books["total"] == 3
    assert {p["category"] for p in books["items"]} == {"books"}
    empty = (await client.get("/api/v1/products", params={"page": 9})).json()
    assert empty["items"] == [] and empty["total"] == 7


@pytest.mark.parametrize(
    "params",
    [{"page_size": 101}, {"page_size": 0}, {"page": 0}, {"page": "x"}, {"category": ""}],
)
async def test_list_rejects_bad_query(client, params) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/api/v1/products", params=params)
    assert response.status_code == 422
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "payload",
    [
        {k: v for k, v in product().items() if k != "sku"},
        product(price=-1),
        product(price="1.234"),
        product(stock=-1),
        product(name=""),
        product(sku="x" * 65),
        product(unknown="field"),
        product(price="abc"),
    ],
)
async def test_create_rejects_bad_body(client, payload) -> None:  # type: ignore[no-untyped-def]
    assert (await client.post("/api/v1/products", json=payload)).status_code == 422


async def test_create_rejects_non_json(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/api/v1/products", content=b"nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


async def test_duplicate_sku_is_409(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.post("/api/v1/products", json=product())).status_code == 201
    response = await client.post("/api/v1/products", json=product(name="Other"))
    assert response.status_code == 409
    other = (await client.post("/api/v1/products", json=product(sku="SKU-2"))).json()
    clash = await client.patch(f"/api/v1/products/{other['id']}", json={"sku": "SKU-1"})
    assert clash.status_code == 409


async def test_get_unknown_and_invalid_ids(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/api/v1/products/999999")).status_code == 404
    assert (await client.get("/api/v1/products/0")).status_code == 422
    assert (await client.get("/api/v1/products/abc")).status_code == 422
    assert (await client.patch("/api/v1/products/999999", json={"stock": 1})).status_code == 404


@pytest.mark.parametrize(
    "payload", [{"name": None}, {"price": None}, {"stock": -3}, {"bogus": 1}, {"sku": ""}]
)
async def test_update_rejects_bad_body(client, payload) -> None:  # type: ignore[no-untyped-def]
    created = (await client.post("/api/v1/products", json=product())).json()
    response = await client.patch(f"/api/v1/products/{created['id']}", json=payload)
    assert response.status_code == 422


async def test_update_may_clear_description(client) -> None:  # type: ignore[no-untyped-def]
    created = (await client.post("/api/v1/products", json=product(description="d"))).json()
    response = await client.patch(f"/api/v1/products/{created['id']}", json={"description": None})
    assert response.status_code == 200
    assert response.json()["description"] is None


async def test_version_reports_package_and_release(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    import app

    client = await app_factory(make_settings(app_release="2024-06-01-abc123"))
    response = await client.get("/version")
    assert response.status_code == 200
    assert response.json() == {
        "name": "fastapi-ops-app",
        "version": app.__version__,
        "release": "2024-06-01-abc123",
    }
    assert app.__version__ == "0.1.0"


async def test_unknown_route_is_404_json(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


async def test_an_uncached_read_is_one_round_trip_after_the_ping(  # type: ignore[no-untyped-def]
    app_factory, make_settings
) -> None:
    client = await app_factory(make_settings(cache_enabled=False))
    engine = client.app.state.engine
    driver: list[str] = []  # what asyncpg sends by itself: the ping, BEGIN, COMMIT
    queries: list[str] = []  # what SQLAlchemy runs

    @event.listens_for(engine.sync_engine, "connect")
    def log_statements(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.driver_connection.add_query_logger(lambda q: driver.append(q.query))

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def log_queries(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        queries.append(statement.split()[0])

    async def sent(request: Awaitable[httpx.Response], status: int) -> tuple[list, list]:
        driver.clear()
        queries.clear()
        assert (await request).status_code == status
        await asyncio.sleep(0)  # asyncpg calls its query loggers soon, not at once
        return driver, queries

    await engine.dispose()  # connections from here on log their statements
    created = client.post("/api/v1/products", json=product())
    # A new connection: no ping. A write: its transaction.
    assert await sent(created, 201) == (["BEGIN;", "COMMIT;"], ["INSERT"])
    pid = 1  # clean_db restarts the ids
    # A read on the pooled connection: the checkout's ping, then its query(ies); no
    # BEGIN, no COMMIT.
    got = client.get(f"/api/v1/products/{pid}")
    assert await sent(got, 200) == (["SELECT 1"], ["SELECT"])
    listed = client.get("/api/v1/products")
    assert await sent(listed, 200) == (["SELECT 1"], ["SELECT", "SELECT"])

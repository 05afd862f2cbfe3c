"""No URL the app emits comes from the request's Host header: PUBLIC_BASE_URL or a path."""

from __future__ import annotations

import pytest

from tests.conftest import product

PRODUCTS = "/api/v1/products"
EVIL = {"Host": "evil.example"}


async def test_location_is_a_path_without_public_base_url(client) -> None:  # type: ignore[no-untyped-def]
    created = await client.post(PRODUCTS, json=product(), headers=EVIL)
    assert created.status_code == 201
    assert created.headers["location"] == f"{PRODUCTS}/{created.json()['id']}"


async def test_location_starts_with_public_base_url(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    client = await app_factory(make_settings(public_base_url="https://shop.example/"))
    created = await client.post(PRODUCTS, json=product(), headers=EVIL)
    location = created.headers["location"]
    assert location == f"https://shop.example{PRODUCTS}/{created.json()['id']}"
    assert (await client.get(location.removeprefix("https://shop.example"))).status_code == 200


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize(
    "path", [f"{PRODUCTS}/", f"{PRODUCTS}/1/", "/health/ready/", "/version/", "/docs/"]
)
async def test_trailing_slash_is_404_not_a_redirect(client, method, path) -> None:  # type: ignore[no-untyped-def]
    # Starlette's redirect would point at http://evil.example/...
    response = await client.request(method, path, headers=EVIL)
    assert response.status_code == 404
    assert "location" not in response.headers
    assert "evil" not in response.text

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import free_port


async def test_live_and_ready(client) -> None:  # type: ignore[no-untyped-def]
    live = await client.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok"},
        "failing": [],
    }
    assert ready.headers["cache-control"] == "no-store"


async def test_ready_is_503_naming_postgres_when_unreachable(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    url = f"postgresql://postgres:postgres@127.0.0.1:{free_port()}/nowhere"
    client = await app_factory(make_settings(database_url=url))
    started = time.monotonic()
    ready = await client.get("/health/ready")
    assert time.monotonic() - started < 3
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["database"]
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["database"].startswith("error:")
    # Liveness never looks at dependencies.
    assert (await client.get("/health/live")).status_code == 200


def _from(client, host: str | None) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    """A client of the same app whose requests come from `host` (None: a unix socket)."""
    transport = httpx.ASGITransport(app=client.app, client=(host, 40000) if host else None)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.mark.parametrize(
    ("host", "detailed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # an IPv4 client of a dual-stack socket
        (None, True),
        ("203.0.113.7", False),
        ("10.1.2.3", False),
        ("2001:db8::1", False),
        ("testclient", False),  # not an address
    ],
)
async def test_ready_details_only_for_detail_networks(client, host, detailed) -> None:  # type: ignore[no-untyped-def]
    async with _from(client, host) as other:
        ready = await other.get("/health/ready")
    assert ready.status_code == 200
    full = {"status": "ok", "checks": {"database": "ok", "redis": "ok"}, "failing": []}
    assert ready.json() == (full if detailed else {"status": "ok"})


async def test_ready_status_only_when_unavailable_outside(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    url = f"postgresql://postgres:postgres@127.0.0.1:{free_port()}/nowhere"
    client = await app_factory(make_settings(database_url=url))
    async with _from(client, "203.0.113.7") as outside:
        # A forwarded address counts only through a trusted proxy (Gunicorn's
        # forwarded_allow_ips), which this app does not do itself.
        ready = await outside.get("/health/ready", headers={"X-Forwarded-For": "127.0.0.1"})
    assert (ready.status_code, ready.json()) == (503, {"status": "unavailable"})


async def test_detail_networks_are_a_setting(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    client = await app_factory(make_settings(health_detail_networks="10.0.0.0/8, 2001:db8::/32"))
    for host, detailed in [("10.1.2.3", True), ("2001:db8::1", True), ("127.0.0.1", False)]:
        async with _from(client, host) as other:
            assert ("failing" in (await other.get("/health/ready")).json()) is detailed, host

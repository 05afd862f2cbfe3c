"""Redis outages: reads keep working from the database; writes say 503, never 500."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.conftest import REDIS_URL, free_port, product
from tests.faults import FaultProxy


def _errors() -> float:
    return sum(
        REGISTRY.get_sample_value("app_cache_errors_total", {"operation": op}) or 0.0
        for op in ("get", "set", "invalidate")
    )


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of our own, so killing it leaves the shared one alone."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is required (the host services provide it)"
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def _wait_for_ping(client) -> None:  # type: ignore[no-untyped-def]
    for _attempt in range(100):
        try:
            await client.app.state.redis.ping()
            return
        except Exception:
            await asyncio.sleep(0.05)
    raise AssertionError("private redis did not start")


async def test_reads_survive_redis_being_killed(app_factory, make_settings, private_redis) -> None:  # type: ignore[no-untyped-def]
    url, proc = private_redis
    client = await app_factory(make_settings(redis_url=url))
    await _wait_for_ping(client)
    pid = (await client.post("/api/v1/products", json=product())).json()["id"]
    assert (await client.get(f"/api/v1/products/{pid}")).status_code == 200
    assert (await client.get(f"/api/v1/products/{pid}")).status_code == 200  # cached

    proc.kill()
    proc.wait(timeout=10)
    errors = _errors()
    for _request in range(3):
        response = await client.get(f"/api/v1/products/{pid}")
        assert response.status_code == 200
        assert response.json()["sku"] == "SKU-1"
    listed = await client.get("/api/v1/products")
    assert listed.status_code == 200 and listed.json()["total"] == 1
    assert _errors() > errors

    ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["redis"]
    assert (await client.get("/health/live")).status_code == 200

    # Without Redis a write could neither lock nor invalidate: refuse it cleanly.
    update = await client.patch(f"/api/v1/products/{pid}", json={"stock": 1})
    assert update.status_code == 503
    assert update.headers["retry-after"] == "5"


async def test_reads_with_redis_never_reachable(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    client = await app_factory(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    created = await client.post("/api/v1/products", json=product())
    assert created.status_code == 201  # the insert does not need Redis
    pid = created.json()["id"]
    for _request in range(2):
        assert (await client.get(f"/api/v1/products/{pid}")).status_code == 200
    assert (await client.get("/api/v1/products")).status_code == 200
    assert (await client.delete(f"/api/v1/products/{pid}")).status_code == 503


async def _seed(client) -> int:  # type: ignore[no-untyped-def]
    """One product, cached, and the first list page cached with it."""
    pid = (await client.post("/api/v1/products", json=product())).json()["id"]
    assert (await client.get(f"/api/v1/products/{pid}")).status_code == 200
    assert (await client.get("/api/v1/products")).json()["total"] == 1
    return int(pid)


async def _assert_degraded(client, pid: int) -> None:  # type: ignore[no-untyped-def]
    """Reads from PostgreSQL, creation works, locked writes 503 — each within a bound."""
    statuses = []
    for method, path, body, expected in [
        ("GET", f"/api/v1/products/{pid}", None, 200),
        ("GET", "/api/v1/products", None, 200),
        ("POST", "/api/v1/products", product(sku="SKU-2"), 201),
        ("PATCH", f"/api/v1/products/{pid}", {"stock": 1}, 503),
        ("DELETE", f"/api/v1/products/{pid}", None, 503),
    ]:
        started = time.monotonic()
        response = await client.request(method, path, json=body)
        assert time.monotonic() - started < 2  # a few REDIS_SOCKET_TIMEOUTs at most
        assert response.status_code == expected, (method, path, response.text)
        if expected == 503:
            assert response.headers["retry-after"] == "5"
        statuses.append(response.status_code)
    assert 500 not in statuses
    ready = await client.get("/health/ready")
    assert (ready.status_code, ready.json()["failing"]) == (503, ["redis"])


async def _assert_recovered(client, pid: int) -> None:  # type: ignore[no-untyped-def]
    # The POST's list invalidation failed during the outage. The pre-outage page (total 1)
    # is still in Redis under its live token; the owed invalidation is replayed first.
    assert (await client.get("/api/v1/products")).json()["total"] == 2
    assert (await client.patch(f"/api/v1/products/{pid}", json={"stock": 3})).status_code == 200
    assert (await client.get(f"/api/v1/products/{pid}")).json()["stock"] == 3
    assert (await client.get("/health/ready")).status_code == 200


@pytest.mark.parametrize("fault", ["down", "blackhole"])
async def test_redis_faults_degrade_and_recover(  # type: ignore[no-untyped-def]
    app_factory, make_settings, redis_proxy: FaultProxy, fault
) -> None:
    client = await app_factory(make_settings(redis_url=redis_proxy.url(REDIS_URL)))
    pid = await _seed(client)
    await getattr(redis_proxy, fault)()
    await _assert_degraded(client, pid)
    await redis_proxy.up()
    await _assert_recovered(client, pid)


async def test_redis_pool_exhausted_degrades_and_recovers(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    client = await app_factory(make_settings(redis_pool_size=1))
    pid = await _seed(client)
    pool = client.app.state.redis.connection_pool
    held = await pool.get_connection()  # the only connection: every other user waits
    try:
        await _assert_degraded(client, pid)
    finally:
        await pool.release(held)
    await _assert_recovered(client, pid)

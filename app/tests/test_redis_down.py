"""Redis outages: reads keep working from the database; writes say 503, never 500."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.conftest import free_port, product


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
    for _ in range(100):
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
    for _ in range(3):
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
    for _ in range(2):
        assert (await client.get(f"/api/v1/products/{pid}")).status_code == 200
    assert (await client.get("/api/v1/products")).status_code == 200
    assert (await client.delete(f"/api/v1/products/{pid}")).status_code == 503

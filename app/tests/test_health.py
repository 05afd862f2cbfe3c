from __future__ import annotations

import time

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

"""Redis through Sentinel, against a real master, replica and Sentinel (tests/redis_ha.py).

The tests share one throwaway trio and leave it healthy (the old master of a failover
comes back as a replica); each starts by waiting for that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import RedisError

from app.config import Settings
from tests.conftest import product
from tests.redis_ha import RedisHA


@pytest.fixture(scope="session")
def redis_ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHA]:
    ha = RedisHA(tmp_path_factory.mktemp("redis-ha"))
    try:
        ha.start()
        yield ha
    finally:
        ha.stop()


@pytest.fixture
def ha(redis_ha: RedisHA) -> RedisHA:
    redis_ha.wait_healthy()
    return redis_ha


def _settings(make_settings: Callable[..., Settings], ha: RedisHA, **overrides: object) -> Settings:
    return make_settings(redis_url=ha.redis_url, redis_sentinels=ha.sentinels, **overrides)


def _product_hits() -> float:
    return REGISTRY.get_sample_value("app_cache_hits_total", {"cache": "product"}) or 0.0


async def _seed(client) -> int:  # type: ignore[no-untyped-def]
    pid = (await client.post("/api/v1/products", json=product())).json()["id"]
    for _read in range(2):
        assert (await client.get(f"/api/v1/products/{pid}")).status_code == 200
    return int(pid)


async def test_reads_and_writes_go_through_sentinel(app_factory, make_settings, ha) -> None:  # type: ignore[no-untyped-def]
    for port in [*ha.ports, ha.sentinel_port]:
        ha.node(port).acl_log_reset()
    client = await app_factory(_settings(make_settings, ha))
    hits = _product_hits()
    pid = await _seed(client)
    assert _product_hits() == hits + 1  # the second read came from Redis
    assert (await client.patch(f"/api/v1/products/{pid}", json={"stock": 7})).status_code == 200
    assert (await client.get(f"/api/v1/products/{pid}")).json()["stock"] == 7
    assert (await client.get("/health/ready")).status_code == 200
    # The cache lives on the master the Sentinel names (REDIS_URL's host:port is a dummy).
    prefix = client.app.state.settings.cache_prefix
    assert ha.node(ha.master()).keys(f"{prefix}:*")
    # Nothing the app sent was refused: its ACLs on the data nodes and on the Sentinel
    # (redis_ha.APP_ACL, SENTINEL_APP_ACL) are enough.
    for port in [*ha.ports, ha.sentinel_port]:
        assert ha.node(port).acl_log() == [], port


async def _until_the_app_writes_to(client, ha: RedisHA, old: int, pid: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds until the app's writes land on a new master; every read meanwhile is 200."""
    started = time.monotonic()
    key = f"{client.app.state.settings.cache_prefix}:probe"
    for attempt in range(300):
        response = await client.get(f"/api/v1/products/{pid}")
        assert response.status_code == 200, response.text
        new = ha.master()
        if new != old:
            try:
                await client.app.state.redis.set(key, attempt)
            except RedisError:
                pass  # the reads above are served from the database meanwhile
            else:
                if ha.node(new).get(key) == str(attempt):
                    return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"the app never wrote to a new master (Sentinel says {ha.master()})")


async def test_app_follows_a_sentinel_failover(app_factory, make_settings, ha) -> None:  # type: ignore[no-untyped-def]
    client = await app_factory(_settings(make_settings, ha))
    pid = await _seed(client)
    old = ha.master()
    ha.sentinel().sentinel_failover("fastapi-ops")
    # The old master keeps accepting writes until Sentinel reconfigures it, ~10 s later:
    # the app must not wait for that (it asks the Sentinels again every second).
    elapsed = await _until_the_app_writes_to(client, ha, old, pid)
    assert elapsed < 6, elapsed
    response = await client.patch(f"/api/v1/products/{pid}", json={"stock": 2})
    assert response.status_code == 200
    assert (await client.get(f"/api/v1/products/{pid}")).json()["stock"] == 2


async def test_app_follows_a_killed_master(app_factory, make_settings, ha) -> None:  # type: ignore[no-untyped-def]
    client = await app_factory(_settings(make_settings, ha))
    await follows_a_killed_master(client, ha)


async def follows_a_killed_master(client, ha: RedisHA) -> None:  # type: ignore[no-untyped-def]
    """kill -9 of the master: the app writes to the promoted replica within 10 s."""
    pid = await _seed(client)
    old = ha.master()
    ha.kill(old)  # kill -9: Sentinel sees it down after 1 s, then promotes the replica
    try:
        elapsed = await _until_the_app_writes_to(client, ha, old, pid)
    finally:
        new = ha.master()
        ha.start_node(old, replicaof=new if new != old else None)
    assert elapsed < 10, elapsed
    response = await client.patch(f"/api/v1/products/{pid}", json={"stock": 4})
    assert response.status_code == 200
    assert (await client.get(f"/api/v1/products/{pid}")).json()["stock"] == 4


@pytest.mark.parametrize(("stale_answers", "status"), [(1, 200), (2, 503)])
async def test_readonly_drops_the_connection_and_asks_again(  # type: ignore[no-untyped-def]
    app_factory, make_settings, ha, monkeypatch, stale_answers, status
) -> None:
    """A Sentinel that has not seen a failover yet names the replica: its READONLY answer
    drops the connection and the one retry asks the Sentinels again (no third try)."""
    client = await app_factory(_settings(make_settings, ha))
    pid = (await client.post("/api/v1/products", json=product())).json()["id"]
    replica_port = ha.replica()
    replica = ha.node(replica_port)

    def readonly_errors() -> int:
        return int(replica.info("errorstats").get("errorstat_READONLY", {}).get("count", 0))

    before = readonly_errors()
    sentinel = client.app.state.redis.connection_pool.sentinel_manager
    real = sentinel.discover_master

    async def stale_until_readonly(service: str) -> tuple[str, int]:
        if readonly_errors() - before < stale_answers:
            return "127.0.0.1", replica_port
        return await real(service)  # type: ignore[no-any-return]

    monkeypatch.setattr(sentinel, "discover_master", stale_until_readonly)
    await client.app.state.redis.connection_pool.disconnect()  # the next use connects anew
    response = await client.patch(f"/api/v1/products/{pid}", json={"stock": 3})
    assert response.status_code == status, response.text
    assert readonly_errors() == before + stale_answers


async def test_lock_waits_for_a_replica(app_factory, make_settings, ha) -> None:  # type: ignore[no-untyped-def]
    master, replica = ha.master(), ha.replica()
    ha.node(master).acl_log_reset()
    client = await app_factory(_settings(make_settings, ha, redis_lock_replicas=1))
    # The default WAIT (250 ms) is what a dead replica costs a write; a live replica's
    # acknowledgement can take longer than that on a machine busy with other tests.
    patient = await app_factory(
        _settings(make_settings, ha, redis_lock_replicas=1, redis_socket_timeout=4)
    )
    pid = (await client.post("/api/v1/products", json=product())).json()["id"]
    assert (await patient.patch(f"/api/v1/products/{pid}", json={"stock": 1})).status_code == 200
    assert ha.node(master).acl_log() == []  # WAIT is in the app's ACL (@connection)
    locks = f"{client.app.state.settings.cache_prefix}:lock:*"

    # More replicas than there are: never enough acknowledgements.
    greedy = await app_factory(_settings(make_settings, ha, redis_lock_replicas=2))
    response = await greedy.patch(f"/api/v1/products/{pid}", json={"stock": 2})
    assert (response.status_code, response.headers["retry-after"]) == (503, "5")

    ha.kill(replica)
    try:
        started = time.monotonic()
        response = await client.patch(f"/api/v1/products/{pid}", json={"stock": 2})
        assert time.monotonic() - started < 2  # WAIT gives up after REDIS_SOCKET_TIMEOUT / 2
        assert (response.status_code, response.headers["retry-after"]) == (503, "5")
        assert ha.node(master).keys(locks) == []  # released, not left to expire
        assert (await client.get(f"/api/v1/products/{pid}")).json()["stock"] == 1
    finally:
        ha.start_node(replica, replicaof=master)
    ha.wait_healthy()
    assert (await patient.patch(f"/api/v1/products/{pid}", json={"stock": 5})).status_code == 200

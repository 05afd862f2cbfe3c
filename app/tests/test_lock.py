from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from app.lock import LockNotReplicated, RedisLock
from tests.conftest import REDIS_URL, product


async def test_only_one_holder_under_contention(redis_prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    key = f"{redis_prefix}:lock:{uuid.uuid4().hex}"
    locks = [RedisLock(redis, key, timeout=5, wait=0) for _lock in range(25)]
    try:
        results = await asyncio.gather(*(lock.acquire() for lock in locks))
        assert results.count(True) == 1
        assert len({lock.token for lock in locks}) == 25  # random, not timestamps
    finally:
        for lock in locks:
            await lock.release()
        await redis.aclose()


async def test_waiters_run_one_at_a_time(redis_prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL, decode_responses=True, max_connections=50)
    key = f"{redis_prefix}:lock:{uuid.uuid4().hex}"
    inside = 0
    most = 0
    done = 0

    async def worker() -> None:
        nonlocal inside, most, done
        async with RedisLock(redis, key, timeout=5, wait=10, poll=0.005):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1
            done += 1

    try:
        await asyncio.gather(*(worker() for _worker in range(15)))
    finally:
        await redis.aclose()
    assert (most, done) == (1, 15)


async def test_release_never_deletes_someone_elses_lock(redis_prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    key = f"{redis_prefix}:lock:{uuid.uuid4().hex}"
    try:
        first = RedisLock(redis, key, timeout=0.1, wait=0)
        assert await first.acquire()
        await asyncio.sleep(0.2)  # expired
        second = RedisLock(redis, key, timeout=5, wait=0)
        assert await second.acquire()
        assert await first.release() is False
        assert await redis.get(key) == second.token
        assert await second.release() is True
        assert await redis.get(key) is None
    finally:
        await redis.aclose()


async def test_a_retried_set_finds_its_own_lock(redis_prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    key = f"{redis_prefix}:lock:{uuid.uuid4().hex}"
    try:
        lock = RedisLock(redis, key, timeout=5, wait=0)
        await redis.set(key, lock.token, px=5000)  # as if the first SET's reply was lost
        assert await lock.acquire()
        assert await RedisLock(redis, key, timeout=5, wait=0).acquire() is False
        assert await lock.release() is True
    finally:
        await redis.aclose()


async def test_lock_without_enough_replicas_is_released(redis_prefix: str) -> None:
    # The test Redis has no replica: WAIT 1 gives up after replica_timeout.
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    key = f"{redis_prefix}:lock:{uuid.uuid4().hex}"
    try:
        lock = RedisLock(redis, key, timeout=5, wait=1, replicas=1, replica_timeout=0.05)
        with pytest.raises(LockNotReplicated, match="0 of 1 replicas"):
            await lock.acquire()
        assert (lock.owned, await redis.get(key)) == (False, None)
    finally:
        await redis.aclose()


async def test_update_is_409_while_the_lock_is_held(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    client = await app_factory(make_settings(lock_wait=0.1))
    pid = (await client.post("/api/v1/products", json=product())).json()["id"]
    cache = client.app.state.cache
    held = RedisLock(cache.redis, cache.key("lock", f"product:{pid}"), timeout=5, wait=0)
    assert await held.acquire()
    try:
        response = await client.patch(f"/api/v1/products/{pid}", json={"stock": 9})
        assert response.status_code == 409
        assert response.headers["retry-after"] == "1"
    finally:
        await held.release()
    assert (await client.patch(f"/api/v1/products/{pid}", json={"stock": 9})).status_code == 200


async def test_concurrent_updates_all_apply(client) -> None:  # type: ignore[no-untyped-def]
    pid = (await client.post("/api/v1/products", json=product(stock=0))).json()["id"]
    responses = await asyncio.gather(
        *(client.patch(f"/api/v1/products/{pid}", json={"stock": n}) for n in range(1, 9))
    )
    assert [r.status_code for r in responses] == [200] * 8
    final = (await client.get(f"/api/v1/products/{pid}")).json()["stock"]
    assert final in range(1, 9)

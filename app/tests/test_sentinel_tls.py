"""Redis through Sentinel over TLS, as the collection deploys it (redis_tls): the data
nodes, the replication and the Sentinel listen on TLS ports only, and the app checks them
against the CA in REDIS_URL's ssl_ca_certs (tests/redis_ha.py, tls=True)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.redis_ha import RedisHA
from tests.test_sentinel import _settings, follows_a_killed_master


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHA]:
    trio = RedisHA(tmp_path_factory.mktemp("redis-ha-tls"), tls=True)
    try:
        trio.start()
        yield trio
    finally:
        trio.stop()


def test_the_trio_speaks_tls_only(ha: RedisHA) -> None:
    for port in [*ha.ports, ha.sentinel_port]:
        with pytest.raises(RedisConnectionError):
            Redis(host="127.0.0.1", port=port, socket_timeout=2).ping()
    # The server's certificate must be signed by the CA the client trusts.
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        Redis(
            port=ha.ports[0],
            ssl=True,
            ssl_ca_certs=ssl.get_default_verify_paths().cafile,
            socket_timeout=2,
        ).ping()


async def test_the_app_follows_a_killed_master_over_tls(app_factory, make_settings, ha) -> None:  # type: ignore[no-untyped-def]
    ha.wait_healthy()
    client = await app_factory(_settings(make_settings, ha))
    assert (await client.get("/health/ready")).json()["checks"]["redis"] == "ok"
    # Sentinel (over TLS) calls the master down and promotes the replica (over TLS).
    await follows_a_killed_master(client, ha)

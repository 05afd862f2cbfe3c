"""The app's Redis client: one server from REDIS_URL, or the master that Sentinel names.

In Sentinel mode every connect asks the Sentinels for the master, a command that fails
with a connection error or a timeout is retried once at once on a new connection (so a
request during a failover usually reaches the new master), and a demoted master's
READONLY answer drops the connection (redis-py's SentinelManagedConnection) so the retry
asks again.
"""

from __future__ import annotations

import contextlib
import logging
import time

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.config import Settings, split_host_port

log = logging.getLogger(__name__)

# How often a worker asks the Sentinels whether the master moved, at most (on a request).
# A live old master keeps accepting writes until Sentinel reconfigures it (~10 s after a
# failover); this bounds how long pooled connections may keep writing to it.
MASTER_RECHECK = 1.0


class _MasterConnection(SentinelManagedConnection):
    """Asks the Sentinels for the master before every connect, including the reconnect of
    the client's retry: redis-py asks only in connect() (redis/redis-py#3874)."""

    async def _connect_retry(self) -> None:
        await self.connect_check_health(check_health=self.connection_pool.check_connection)

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self.is_connected:
            return
        self.host, self.port = await self.connection_pool.get_master_address()
        # Never retry the socket connect to an address that may be stale (redis-py#3560).
        await super().connect_check_health(check_health=check_health, retry_socket_connect=False)


class _MasterSSLConnection(_MasterConnection, SSLConnection):
    """The same over TLS (REDIS_URL rediss://, its ssl_* parameters)."""


class _SentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel pool with the plain mode's blocking checkout and master recheck."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._recheck_at = 0.0

    async def get_connection(self, *args: object, **kwargs: object) -> AbstractConnection:
        if time.monotonic() >= self._recheck_at:
            self._recheck_at = time.monotonic() + MASTER_RECHECK
            # On a change this closes the idle connections; without an answer, carry on
            # with the connections we have (the master may well be fine).
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                await self.get_master_address()
        return await super().get_connection()

    async def get_master_address(self) -> tuple[str, int]:
        old = self.master_address
        new = await super().get_master_address()
        if old is not None and new != old:
            log.warning(
                "redis master moved",
                extra={"old": f"{old[0]}:{old[1]}", "new": f"{new[0]}:{new[1]}"},
            )
        return new  # type: ignore[no-any-return]

    async def release(self, connection: AbstractConnection) -> None:
        # A connection in use while the master changed: its next use reconnects.
        if connection.is_connected and (connection.host, connection.port) != self.master_address:
            await connection.disconnect()
        await super().release(connection)

    async def aclose(self) -> None:
        await super().aclose()
        await self.sentinel_manager.aclose()  # the clients of the Sentinels


def create_redis(settings: Settings) -> Redis:
    timeouts = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_socket_timeout,
    }
    if not settings.redis_sentinels:
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_pool_size,
            # Wait this long for a free pooled connection before failing.
            timeout=settings.redis_socket_timeout,
            decode_responses=True,
            # No retries: a dead Redis must cost one fast failure, then the DB fallback.
            # (The retry lives on the connections: Redis(retry=) is ignored with a pool.)
            retry=Retry(NoBackoff(), 0),
            **timeouts,
        )
        return Redis(connection_pool=pool)

    # The URL's user, password, db and TLS settings; its host:port is Sentinel's to say.
    url = {k: v for k, v in parse_url(settings.redis_url).items() if k not in ("host", "port")}
    tls = issubclass(url.pop("connection_class", object), SSLConnection)
    auth = {"username": url.get("username"), "password": url.get("password")}
    # rediss://: the Sentinels speak TLS too, checked against the same CA.
    ssl_options = {k: v for k, v in url.items() if k.startswith("ssl_")}
    sentinel_tls = {**ssl_options, "ssl": True} if tls else {}
    sentinel = Sentinel(
        [split_host_port(item) for item in settings.redis_sentinels],
        # The Sentinels know the app's ACL user too; redis-py would pass them only the
        # socket options. No retry: a dead Sentinel costs one timeout, then the next.
        sentinel_kwargs={**auth, **timeouts, **sentinel_tls, "retry": Retry(NoBackoff(), 0)},
    )
    return sentinel.master_for(
        settings.redis_sentinel_service,
        connection_pool_class=_SentinelPool,
        connection_class=_MasterSSLConnection if tls else _MasterConnection,
        max_connections=settings.redis_pool_size,
        timeout=settings.redis_socket_timeout,
        decode_responses=True,
        # One immediate retry, on a new connection: it asks the Sentinels again.
        retry=Retry(NoBackoff(), 1),
        **{**url, **timeouts},
    )

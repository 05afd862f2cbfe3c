"""A new worker opens its first connections to PostgreSQL and Redis before it takes requests.

Otherwise its first requests each pay a TLS handshake. On a busy host a handshake can
outlast Redis's connect timeout (REDIS_SOCKET_TIMEOUT, 0.5 s): those reads fall back to
the database and those writes, which need Redis's lock, answer 503. During a reload the
old workers keep serving until the new ones have started, so the wait costs nobody.

Best effort, bounded by WARM_UP_SECONDS: a dependency that is down is for the readiness
check to report, not a reason not to start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

# Connections opened at once per pool: what a worker's first burst of requests would need.
CONNECTIONS = 2
RETRY_PAUSE = 0.1


async def _until_done(open_one: Callable[[], Awaitable[object]]) -> None:
    """Retries until it succeeds; warm_up's timeout ends it."""
    while True:
        try:
            await asyncio.gather(*(open_one() for _n in range(CONNECTIONS)))
            return
        except Exception:
            await asyncio.sleep(RETRY_PAUSE)


async def warm_up(engine: AsyncEngine, redis: Redis, seconds: float) -> None:
    """Opens CONNECTIONS pooled connections to each dependency, retrying for at most
    `seconds`."""
    if seconds <= 0:
        return

    async def database() -> None:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")

    steps = {"database": database, "redis": redis.ping}
    outcomes = await asyncio.gather(
        *(asyncio.wait_for(_until_done(step), timeout=seconds) for step in steps.values()),
        return_exceptions=True,
    )
    cold = [name for name, o in zip(steps, outcomes, strict=True) if isinstance(o, BaseException)]
    if cold:
        log.warning("started without warm connections", extra={"cold": cold})

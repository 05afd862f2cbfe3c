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
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

# Connections opened at once per pool: what a worker's first burst of requests would need.
CONNECTIONS = 2
RETRY_PAUSE = 0.1


async def _until_done(open_one: Callable[[], Awaitable[object]], deadline: float) -> None:
    while True:
        try:
            await asyncio.gather(*(open_one() for _n in range(CONNECTIONS)))
            return
        except Exception:
            if time.monotonic() + RETRY_PAUSE >= deadline:
                raise
            await asyncio.sleep(RETRY_PAUSE)


async def warm_up(engine: AsyncEngine, redis: Redis, seconds: float) -> dict[str, bool]:
    """Opens CONNECTIONS pooled connections to each dependency, retrying until `seconds`
    have passed; returns which dependencies are warm."""
    if seconds <= 0:
        return {}

    async def database() -> None:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")

    deadline = time.monotonic() + seconds
    steps = {"database": database, "redis": redis.ping}
    outcomes = await asyncio.gather(
        *(
            asyncio.wait_for(_until_done(step, deadline), timeout=seconds)
            for step in steps.values()
        ),
        return_exceptions=True,
    )
    warm = {name: not isinstance(o, BaseException) for name, o in zip(steps, outcomes, strict=True)}
    if not all(warm.values()):
        log.warning("started without warm connections", extra={"warm": warm})
    return warm

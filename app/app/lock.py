"""Distributed lock: SET NX PX with a random token, released atomically by Lua."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from types import TracebackType

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Delete the key only if it still holds our token (it may have expired and been
# taken by someone else meanwhile).
_RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""


class LockNotAcquired(Exception):
    pass


class RedisLock:
    def __init__(
        self, redis: Redis, key: str, timeout: float = 10.0, wait: float = 5.0, poll: float = 0.02
    ) -> None:
        self.redis = redis
        self.key = key
        self.timeout_ms = max(1, int(timeout * 1000))
        self.wait = wait
        self.poll = poll
        self.token = secrets.token_hex(16)
        self.owned = False

    async def acquire(self) -> bool:
        deadline = time.monotonic() + self.wait
        while True:
            if await self.redis.set(self.key, self.token, nx=True, px=self.timeout_ms):
                self.owned = True
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.poll)

    async def release(self) -> bool:
        """True if we still held the lock; False if it had expired first."""
        if not self.owned:
            return False
        self.owned = False
        return bool(await self.redis.eval(_RELEASE, 1, self.key, self.token))

    async def __aenter__(self) -> RedisLock:
        if not await self.acquire():
            raise LockNotAcquired(self.key)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release_quietly()

    async def release_quietly(self) -> None:
        try:
            if not await self.release():
                log.warning("lock expired before release", extra={"lock": self.key})
        except (RedisError, OSError) as error:
            # The key expires on its own; the protected work is already done.
            log.warning("lock release failed", extra={"lock": self.key, "error": repr(error)})

"""Distributed lock: SET NX PX with a random token, released atomically by Lua.

With `replicas` > 0 a lock counts only once that many replicas acknowledged it (WAIT):
replication is asynchronous, and a master that dies before a replica got the lock would
let a second holder in through the promoted replica. WAIT narrows that window, it does not
close it (see the README).
"""

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


class LockNotReplicated(RedisError):
    """Too few replicas acknowledged the lock in time; it was released. A RedisError:
    callers treat it like Redis being unavailable (a write answers 503)."""


class RedisLock:
    def __init__(
        self,
        redis: Redis,
        key: str,
        timeout: float = 10.0,
        wait: float = 5.0,
        poll: float = 0.02,
        replicas: int = 0,
        replica_timeout: float = 0.25,
    ) -> None:
        self.redis = redis
        self.key = key
        self.timeout_ms = max(1, int(timeout * 1000))
        self.wait = wait
        self.poll = poll
        self.replicas = replicas
        # Never 0: WAIT 0 blocks forever.
        self.replica_timeout_ms = max(1, int(replica_timeout * 1000))
        self.token = secrets.token_hex(16)
        self.owned = False

    async def acquire(self) -> bool:
        """True once held; False if still taken after `wait`. Raises LockNotReplicated."""
        deadline = time.monotonic() + self.wait
        while True:
            if await (self._set_replicated() if self.replicas else self._set(self.redis)):
                self.owned = True
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.poll)

    async def _set(self, client: Redis) -> bool:
        """True if the key is ours now. GET: a SET retried after its reply was lost (the
        connection dropped in a failover) finds our own token, not a stranger's lock."""
        previous = await client.set(self.key, self.token, nx=True, px=self.timeout_ms, get=True)
        return previous is None or previous == self.token

    async def _set_replicated(self) -> bool:
        # WAIT counts the replicas that have this connection's writes: one connection.
        async with self.redis.client() as pinned:
            if not await self._set(pinned):
                return False
            # After a retried SET the key was written on an earlier socket, which WAIT on
            # this one does not cover: write it here (again).
            await pinned.pexpire(self.key, self.timeout_ms)
            acked = await self._wait(pinned)
        if acked >= self.replicas:
            return True
        log.warning(
            "lock not replicated, released",
            extra={"lock": self.key, "replicas": acked, "wanted": self.replicas},
        )
        self.owned = True
        await self.release_quietly()
        raise LockNotReplicated(f"{acked} of {self.replicas} replicas acknowledged the lock")

    async def _wait(self, pinned: Redis) -> int:
        connection = pinned.connection
        # Sent by hand: the client's retry would send WAIT on a new socket, where it
        # counts the replicas of nothing.
        if connection is None or not connection.is_connected:
            return 0
        try:
            await connection.send_command("WAIT", self.replicas, self.replica_timeout_ms)
            return int(await connection.read_response())
        except (RedisError, OSError) as error:
            log.warning("WAIT failed", extra={"lock": self.key, "error": repr(error)})
            return 0

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

"""JSON read-through cache in Redis with version tokens for invalidation.

Each namespace (one product, or all product lists) has a version key holding a random
token; data keys embed the token. A write replaces the token, so every older entry
becomes unreachable at once (no KEYS/SCAN) and a reader that read the database before
the write can only store its stale copy under the old, dead token.

An invalidation that fails (Redis down) is kept and replayed before this process's next
cache read or write, so stale entries end as soon as Redis is back here; entries read
by other processes meanwhile are bounded by their TTL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.metrics import CACHE_ERRORS, CACHE_HITS, CACHE_MISSES

log = logging.getLogger(__name__)

# Seconds between two looks in Redis after the database failed a read.
_LOOK_AGAIN_POLL = 0.25

# Version keys live longer than any data key they guard.
_VERSION_TTL = 7 * 24 * 3600

# A hit in one round trip: the namespace's token, then the data key built from it.
_READ = """
local token = redis.call('GET', KEYS[1])
if not token then return {false, false} end
return {token, redis.call('GET', ARGV[1] .. ':' .. token .. ':' .. ARGV[2])}
"""


class Cache:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        enabled: bool = True,
        retry_interval: float = 2.0,
        look_again_seconds: float = 0.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.enabled = enabled
        self.retry_interval = retry_interval
        self.look_again_seconds = look_again_seconds
        self._skip_until = 0.0
        # Namespaces whose invalidation failed; replayed before Redis is used again.
        self._pending: set[str] = set()

    def key(self, *parts: object) -> str:
        return ":".join([self.prefix, *(str(p) for p in parts)])

    def _failed(self, operation: str, exc: Exception) -> None:
        CACHE_ERRORS.labels(operation).inc()
        self._skip_until = time.monotonic() + self.retry_interval
        log.warning(
            "redis unavailable, using the database",
            extra={"operation": operation, "error": repr(exc)},
        )

    def _available(self) -> bool:
        return self.enabled and time.monotonic() >= self._skip_until

    async def _version(self, namespace: str) -> str:
        version_key = self.key(namespace, "version")
        token = await self.redis.get(version_key)
        if token is None:
            # Never fall back to a fixed default: a lost version key must not
            # resurrect entries written under an older token.
            await self.redis.set(version_key, secrets.token_hex(8), nx=True, ex=_VERSION_TTL)
            token = await self.redis.get(version_key)
        return str(token)

    async def get_or_load(
        self,
        cache: str,
        namespace: str,
        params: str,
        ttl: int,
        load: Callable[[], Awaitable[Any]],
        look_again_after: Callable[[Exception], bool] | None = None,
    ) -> tuple[Any, bool]:
        """Return (value, hit). `load` returns a JSON-able value or None (not cached).

        When `load` raises an error `look_again_after` accepts (the database unavailable),
        Redis is asked again, for up to `look_again_seconds` while it fails, before the
        error goes on: a machine that carried both the primary and the Redis master is
        gone, and Sentinel promotes a replica within a few seconds."""
        data_key: str | None = None
        if self._available():
            try:
                data_key, raw = await self._read(namespace, params)
            except (RedisError, OSError) as exc:
                self._failed("get", exc)
            else:
                if raw is not None:
                    CACHE_HITS.labels(cache).inc()
                    return json.loads(raw), True
        CACHE_MISSES.labels(cache).inc()
        try:
            value = await load()
        except Exception as exc:
            if not (self.enabled and look_again_after and look_again_after(exc)):
                raise
            raw = await self._look_again(namespace, params)
            if raw is None:
                raise
            return json.loads(raw), True  # counted as the miss it first was
        if value is not None and data_key is not None:
            try:
                await self.redis.set(data_key, json.dumps(value, separators=(",", ":")), ex=ttl)
            except (RedisError, OSError) as exc:
                self._failed("set", exc)
        return value, False

    async def _read(self, namespace: str, params: str) -> tuple[str, bytes | str | None]:
        """(data key, entry or None) of the namespace's current token."""
        # Never read an entry whose invalidation is still owed.
        await self._replay()
        version_key = self.key(namespace, "version")
        # EVAL, not EVALSHA: the app's Redis ACL allows EVAL but not SCRIPT LOAD.
        version, raw = await self.redis.eval(_READ, 1, version_key, self.key(namespace), params)
        if version is None:
            version = await self._version(namespace)
        return self.key(namespace, version, params), raw

    async def _look_again(self, namespace: str, params: str) -> bytes | str | None:
        """The entry, if Redis answers within look_again_seconds (whatever an earlier
        failure said); None if it answers without one, or never answers."""
        deadline = time.monotonic() + self.look_again_seconds
        while True:
            try:
                return (await self._read(namespace, params))[1]
            except (RedisError, OSError) as exc:
                self._failed("get", exc)
                if time.monotonic() >= deadline:
                    return None
            await asyncio.sleep(_LOOK_AGAIN_POLL)

    async def _replace_tokens(self, namespaces: set[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for namespace in namespaces:
                pipe.set(self.key(namespace, "version"), secrets.token_hex(8), ex=_VERSION_TTL)
            await pipe.execute()
        self._pending -= namespaces

    async def _replay(self) -> None:
        if self._pending:
            await self._replace_tokens(set(self._pending))

    async def invalidate(self, *namespaces: str) -> bool:
        """Replace the version tokens; False (logged, counted) if Redis is unreachable,
        and the invalidation is then owed (replayed before the next use of Redis)."""
        if not self.enabled:
            return True
        # Always tried, even while reads skip Redis: a write that just took its lock
        # knows Redis works, and an owed invalidation is only replayed on later traffic.
        self._pending.update(namespaces)
        try:
            await self._replace_tokens(set(self._pending))
        except (RedisError, OSError) as exc:
            self._failed("invalidate", exc)
            return False
        return True

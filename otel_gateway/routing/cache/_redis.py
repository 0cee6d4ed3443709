"""Cached answers in Redis, shared by every replica: ``GET`` to look up, ``SET ... EX ttl`` to store,
so Redis itself forgets an entry when its time is up (and evicts under its own ``maxmemory`` policy).

As for the rate-limit counters: short socket timeouts, a bounded connection pool and no retries,
so an unreachable Redis raises :class:`CacheUnavailable` at once, and for ``reconnect_after``
seconds after a failure calls fail fast without trying. The layer turns that into a miss.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..ratelimit._redis import redact
from ._backend import CacheUnavailable

try:
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the install
    raise RuntimeError("a redis:// cache backend needs the 'redis' package (pip install redis)") from exc

T = TypeVar("T")


class RedisCache:
    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = 0.5,
        reconnect_after: float = 1.0,
        max_connections: int = 64,
    ) -> None:
        self.url = url
        self._reconnect_after = reconnect_after
        self._down_until = 0.0
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = aioredis.Redis.from_pool(pool)

    def __repr__(self) -> str:
        return f"RedisCache({redact(self.url)!r})"

    async def get(self, key: str) -> bytes | None:
        value = await self._call(lambda: self._client.get(key))
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        await self._call(lambda: self._client.set(key, value, ex=ttl))

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until:
            raise CacheUnavailable(f"{redact(self.url)} failed less than {self._reconnect_after:g} s ago")
        try:
            return await command()
        except (RedisError, OSError) as exc:
            self._down_until = loop.time() + self._reconnect_after
            raise CacheUnavailable(f"{redact(self.url)}: {exc or type(exc).__name__}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()

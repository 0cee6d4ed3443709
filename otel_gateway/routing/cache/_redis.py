"""Cached answers in Redis, shared by every replica: ``GET`` to look up, ``SET ... EX ttl`` to store,
so Redis itself forgets an entry when its time is up (and evicts under its own ``maxmemory`` policy).

Calls go through :class:`..GuardedRedis`, so an unreachable Redis raises :class:`CacheUnavailable`
at once; the layer turns that into a miss.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..._urls import redact_url
from .._redis import GuardedRedis, RedisUnavailable
from ._backend import CacheUnavailable

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
        self._redis = GuardedRedis(
            url, socket_timeout=socket_timeout, reconnect_after=reconnect_after, max_connections=max_connections
        )

    def __repr__(self) -> str:
        return f"RedisCache({redact_url(self.url)!r})"

    async def get(self, key: str) -> bytes | None:
        value = await self._call(lambda: self._redis.client.get(key))
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        await self._call(lambda: self._redis.client.set(key, value, ex=ttl))

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self._redis.call(command)
        except RedisUnavailable as exc:
            raise CacheUnavailable(str(exc)) from exc

    async def aclose(self) -> None:
        await self._redis.aclose()

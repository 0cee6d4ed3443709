"""A Redis client for layers that must never wait on a broken Redis (rate limits, the cache).

Short socket timeouts, a bounded pool that makes a burst queue for a connection (at most the
socket timeout) rather than fail with "Too many connections", and no retries: an unreachable
Redis raises :class:`RedisUnavailable` at once, and for ``reconnect_after`` seconds after a
failure calls fail fast without trying, so a dead Redis costs nothing per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .._urls import redact_url

try:
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the install
    raise RuntimeError("a redis:// backend needs the 'redis' package (pip install redis)") from exc

T = TypeVar("T")


class RedisUnavailable(Exception):
    """Redis did not answer (or failed less than ``reconnect_after`` seconds ago)."""


class GuardedRedis:
    def __init__(
        self, url: str, *, socket_timeout: float = 0.5, reconnect_after: float = 1.0, max_connections: int = 64
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
        self.client = aioredis.Redis.from_pool(pool)

    def __repr__(self) -> str:
        return f"GuardedRedis({redact_url(self.url)!r})"

    async def call(self, command: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until:
            raise RedisUnavailable(f"{redact_url(self.url)} failed less than {self._reconnect_after:g} s ago")
        try:
            return await command()
        except (RedisError, OSError) as exc:
            self._down_until = loop.time() + self._reconnect_after
            raise RedisUnavailable(f"{redact_url(self.url)}: {exc or type(exc).__name__}") from exc

    async def aclose(self) -> None:
        await self.client.aclose()

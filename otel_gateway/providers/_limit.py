"""Each provider account's cap on concurrent requests: a transport that holds a slot from the
request until its answer is closed, waiting a bounded time for one.

A slot is taken before the request is sent and given back when the answer's stream closes
(read to its end, abandoned, or failed) or when sending fails, whatever the failure or
cancellation: every caller closes the answers it gets, as it must to free the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable

import httpx

from ..errors import OverloadedError

__all__ = ["LimitedTransport", "Slots"]

RETRY_AFTER = 1
"""Seconds a client is asked to wait after a provider's cap turned it away."""


class Slots:
    """A counting semaphore whose ``capacity`` may change (a reload), with a bounded wait.

    A freed slot goes straight to the longest waiter, so no newcomer overtakes those waiting."""

    __slots__ = ("_waiters", "capacity", "in_use")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    def try_acquire(self) -> bool:
        """Takes a slot if one is free, without waiting."""
        if self.in_use < self.capacity and not self._waiters:
            self.in_use += 1
            return True
        return False

    async def acquire(self, wait: float) -> bool:
        """Takes a slot; ``False`` when none came free within ``wait`` seconds."""
        if self.try_acquire():
            return True
        if wait <= 0:
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(wait):
                await waiter
        except TimeoutError:
            return self._handed(waiter)  # a slot handed over as the time ran out is kept
        except BaseException:
            if self._handed(waiter):
                self.release()
            raise
        return True

    def _handed(self, waiter: asyncio.Future[None]) -> bool:
        """Whether ``waiter`` was given a slot; a waiter that was not leaves the queue."""
        if waiter.done() and not waiter.cancelled():
            return True
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        return False

    def release(self) -> None:
        while self._waiters and self.in_use <= self.capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: ``in_use`` stays
                return
        self.in_use -= 1

    def resize(self, capacity: int) -> None:
        """Sets a new capacity; waiters that now fit get their slots."""
        self.capacity = capacity
        while self._waiters and self.in_use < self.capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)


class LimitedTransport(httpx.AsyncBaseTransport):
    """``inner`` with at most ``slots.capacity`` requests in flight; a request that finds no slot
    within ``wait`` seconds fails with :class:`~otel_gateway.errors.OverloadedError` naming ``provider``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, slots: Slots, *, wait: float, provider: str) -> None:
        self._inner = inner
        self._slots = slots
        self._wait = wait
        self._provider = provider

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        slots = self._slots
        if not slots.try_acquire() and not await slots.acquire(self._wait):
            raise OverloadedError(
                f"{self._provider}: the provider account has {slots.capacity} requests in flight, its "
                f"max_concurrent_requests, and none ended within its queue_timeout_ms "
                f"({self._wait * 1000:g} ms); retry after {RETRY_AFTER} s.",
                provider=self._provider, retry_after=RETRY_AFTER,
            )
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            slots.release()
            raise
        if response.is_closed:  # answered with its body read (an in-process transport)
            slots.release()
        else:
            stream = response.stream
            assert isinstance(stream, httpx.AsyncByteStream)
            response.stream = _Releasing(stream, slots.release)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Releasing(httpx.AsyncByteStream):
    """An answer's stream that gives its slot back when it is closed (once)."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # the stream's own iterator: nothing added per chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()

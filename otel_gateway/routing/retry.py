"""Retries of one target, per a ``retry_config``.

Up to ``attempts`` tries in all. A try is repeated when it failed with an upstream status in
``on_status_codes`` (the time-to-first-token timeout counts as 408, the provider account's own
cap on concurrent requests, 503 ``overloaded``, as 503), or without an answer at all (timeout,
connection refused or reset, stream ended before its first chunk). Before try ``n + 1``
it waits a random time between 0 and ``delay * 2**(n-1)`` ms ("full jitter"), capped at
:data:`MAX_BACKOFF`, and at least as long as the upstream's ``Retry-After`` (in seconds); an
upstream asking for more than :data:`MAX_BACKOFF` is not retried. A wait that would end past the
request deadline is not started: the request fails with 504 at once. Only raised errors are
retried: once ``send`` returns, the first chunk of a stream has arrived and belongs to the client.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from opentelemetry import trace

from ..calls import ChatCall, ChunkStream, Completion, Send
from ..config import RetryConfig
from ..errors import GatewayError, OverloadedError
from ._attempts import is_transport_failure, out_of_time, status_of, time_left

__all__ = ["MAX_BACKOFF", "Retry", "RetryLayer"]

MAX_BACKOFF = 30.0
"""Seconds: the longest wait between two tries."""


class Retry:
    def __init__(
        self,
        send: Send,
        config: RetryConfig,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._send = send
        self._attempts = config.attempts
        self._delay = config.delay / 1000
        self._statuses = frozenset(config.on_status_codes)
        self._rng = rng or random.Random()
        self._sleep = sleep

    def retryable(self, error: GatewayError) -> bool:
        if isinstance(error, OverloadedError):
            return error.status in self._statuses
        return is_transport_failure(error) or status_of(error) in self._statuses

    def backoff(self, tries: int) -> float:
        """Seconds to wait after ``tries`` failed tries."""
        return self._rng.uniform(0, min(self._delay * 2 ** (tries - 1), MAX_BACKOFF))

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        tries = 0
        while True:
            tries += 1
            try:
                return await self._send(call)
            except GatewayError as exc:
                if tries >= self._attempts or not self.retryable(exc):
                    raise
                wait = max(self.backoff(tries), _retry_after(exc))
                if wait > MAX_BACKOFF:
                    raise
                left = time_left(call)
                if left is not None and wait >= left:
                    raise out_of_time(exc) from exc
                _note_retry(call, tries, wait, exc)
            await self._sleep(wait)


class RetryLayer:
    """Retries each call as its own ``call.retry`` says (load balancing sets it per target), just
    above the provider attempt: a fallback chain above never runs again for a retry."""

    def __init__(
        self,
        send: Send,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._send = send
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._retries: dict[RetryConfig, Retry] = {}

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        config = call.retry
        if config is None or config.attempts <= 1:
            return await self._send(call)
        retry = self._retries.get(config)
        if retry is None:
            retry = self._retries[config] = Retry(self._send, config, rng=self._rng, sleep=self._sleep)
        return await retry(call)


def _retry_after(error: GatewayError) -> float:
    """Seconds the upstream asked to wait (``Retry-After`` as a number of seconds), else 0."""
    value = error.headers.get("retry-after", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return 0.0


def _note_retry(call: ChatCall, tries: int, wait: float, error: GatewayError) -> None:
    """A ``retry`` event on the current span (the load balancer's), when it is recorded."""
    span = trace.get_current_span()
    if span.is_recording():
        status = status_of(error)
        span.add_event("retry", {
            "retry.attempt": tries + 1,
            "retry.delay_ms": round(wait * 1000),
            "retry.model": call.model,
            "error.type": str(status) if status is not None else error.code or type(error).__name__,
        })

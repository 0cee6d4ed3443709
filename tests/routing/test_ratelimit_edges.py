"""The reproductions of issue 9, item 8 ("limits exact over any window"), on a clock the test sets:
50 requests per minute, in this process (memory), through Redis, and across three gateway processes
sharing one Redis. The old sliding-window counter admitted 96 in 57 s after a burst at :58.5, and 53
of 150 requests spread over 6 s across a minute's edge."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis
from ratelimit_gateways import REDIS_URL, FileClock, three_gateways
from ratelimit_helpers import Clock, Next, chat_call, rules_doc
from services import require_service

from otel_gateway.errors import RateLimitError
from otel_gateway.routing.ratelimit import Backend, MemoryBackend, RateLimiter
from otel_gateway.routing.ratelimit._redis import RedisBackend

BASE = 1_800_000_000.0
"""Seconds, a whole number of minutes: ``BASE + 58`` is :58 of a minute."""
RPM50 = {"id": "rpm", "limit_to": 50, "unit": "requests_per_minute"}

def most_in_any_minute(admitted: list[float]) -> int:
    """The most admitted times (seconds) in any window [t, t + 60 s); the fullest starts at one of them."""
    return max((sum(start <= t < start + 60 for t in admitted) for start in admitted), default=0)


def burst_then_one_a_second() -> tuple[list[float], list[float]]:
    """90 requests at :58.5, then one a second from :59.5 to :55.5 of the next minute (57 s), and on
    to :05.5 of the one after: the times of the burst and of the trickle."""
    return [BASE + 58.5] * 90, [BASE + 58.5 + s for s in range(1, 68)]


def spread_over_six_seconds() -> list[float]:
    """150 requests, one every 40 ms from :58.00 to :03.96 of the next minute."""
    return [BASE + 58 + i * 0.04 for i in range(150)]


# -- in one process: the limiter over the memory backend, or over Redis -----------------------------------------


@contextlib.asynccontextmanager
async def limiter_on(kind: str, clock: Clock) -> AsyncIterator[RateLimiter]:
    backend: Backend
    if kind == "memory":
        backend = MemoryBackend(clock)
        yield RateLimiter(Next(), rules_doc(RPM50), backend, tracer=None)
        return
    with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5) as client:
        try:
            client.ping()
        except (redis.RedisError, OSError):
            require_service("Redis at 127.0.0.1:6379 is unreachable")
        prefix = f"test:ratelimit:{uuid.uuid4().hex}:"
        backend = RedisBackend(REDIS_URL, prefix=prefix, clock=clock)
        try:
            yield RateLimiter(Next(), rules_doc(RPM50), backend, tracer=None)
        finally:
            await backend.aclose()
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)


async def admitted_at(rl: RateLimiter, clock: Clock, times: list[float]) -> list[float]:
    admitted = []
    for t in times:
        clock.now = t
        with contextlib.suppress(RateLimitError):
            await rl(chat_call())
            admitted.append(t)
    return admitted


BACKENDS = pytest.mark.parametrize("kind", ["memory", "redis"])


@BACKENDS
async def test_a_burst_at_58_then_one_a_second(kind: str) -> None:
    burst, trickle = burst_then_one_a_second()
    clock = Clock()
    async with limiter_on(kind, clock) as rl:
        admitted = await admitted_at(rl, clock, burst + trickle)
    assert sum(t <= BASE + 58.5 + 57 for t in admitted) == 50  # was 96 within the 57 s
    # The burst's slot [:58, :59) counts until :59 of the next minute: then one a second again.
    assert admitted == [BASE + 58.5] * 50 + [BASE + 60 + 59.5 + s for s in range(7)]
    assert most_in_any_minute(admitted) == 50


@BACKENDS
async def test_150_over_six_seconds_across_a_minute_edge(kind: str) -> None:
    clock = Clock()
    async with limiter_on(kind, clock) as rl:
        admitted = await admitted_at(rl, clock, spread_over_six_seconds())
    assert admitted == spread_over_six_seconds()[:50]  # was 53


# -- three gateway processes, one Redis, one clock ---------------------------------------------------------------


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], str, FileClock]]:
    """Three gateways with ``{model}-rpm`` at 50 a minute in Redis, on one clock the test sets."""
    with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5) as client:
        try:
            client.ping()
        except (redis.RedisError, OSError):
            require_service("Redis at 127.0.0.1:6379 is unreachable")
    workdir = tmp_path_factory.mktemp("trio")
    clock = FileClock(workdir / "clock", BASE)
    with three_gateways(workdir, "edges", "limit_to: 50, unit: requests_per_minute",
                        models="edge, boundary", clock=clock) as (urls, rule):
        yield urls, rule, clock


async def post(client: httpx.AsyncClient, url: str, model: str) -> int:
    body = {"model": f"demo/{model}", "messages": [{"role": "user", "content": "hi"}]}
    return (await client.post(url + "/v1/chat/completions", json=body)).status_code


async def test_three_gateways_a_burst_at_the_edge_then_one_a_second(trio: tuple[list[str], str, FileClock]) -> None:
    urls, _, clock = trio
    burst, trickle = burst_then_one_a_second()
    limits = httpx.Limits(max_connections=90, max_keepalive_connections=90)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        clock.set(burst[0])
        statuses = await asyncio.gather(*(post(client, urls[i % 3], "edge") for i in range(len(burst))))
        assert (statuses.count(200), statuses.count(429)) == (50, 40)
        admitted = [burst[0]] * 50
        for i, t in enumerate(trickle):
            clock.set(t)
            if await post(client, urls[i % 3], "edge") == 200:
                admitted.append(t)
    assert sum(t <= BASE + 58.5 + 57 for t in admitted) == 50  # was 96 within the 57 s
    assert admitted[50:] == [BASE + 60 + 59.5 + s for s in range(7)]
    assert most_in_any_minute(admitted) == 50


async def test_three_gateways_150_over_six_seconds_across_a_minute_edge(
    trio: tuple[list[str], str, FileClock],
) -> None:
    urls, _, clock = trio
    admitted = []
    async with httpx.AsyncClient(timeout=30) as client:
        for i, t in enumerate(spread_over_six_seconds()):
            clock.set(t)
            if await post(client, urls[i % 3], "boundary") == 200:
                admitted.append(t)
    assert admitted == spread_over_six_seconds()[:50]  # was 53

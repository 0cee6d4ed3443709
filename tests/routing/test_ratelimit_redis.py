"""The Redis backend against the real Redis at 127.0.0.1:6379 (skipped when it is unreachable, failed
under ``GATEWAY_REQUIRE_SERVICES=1``): the Lua script's all-or-nothing check, its expiries, settling,
and three gateway processes sharing one limit. Also what an unreachable Redis does (no service needed)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from ratelimit_gateways import REDIS_URL, three_gateways
from ratelimit_helpers import Clock, Next, chat_call, completion, rules_doc
from services import require_service

from otel_gateway._urls import redact_url as redact
from otel_gateway.routing.ratelimit import BackendUnavailable, Demand, RateLimiter
from otel_gateway.routing.ratelimit._redis import CONSUME, DEFAULT_PREFIX, RedisBackend

MINUTE = 60_000
DAY = 86_400_000


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        await client.ping()
    except (aioredis.RedisError, OSError):
        await client.aclose()
        require_service("Redis at 127.0.0.1:6379 is unreachable")
    yield client
    await client.aclose()


async def delete_keys(client: aioredis.Redis, pattern: str) -> None:
    keys = [key async for key in client.scan_iter(match=pattern)]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test:ratelimit:{uuid.uuid4().hex}:"
    yield prefix
    await delete_keys(redis_client, prefix + "*")


@pytest.fixture
async def backend(prefix: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(REDIS_URL, prefix=prefix)
    yield backend
    await backend.aclose()


async def counts(client: aioredis.Redis, key: str) -> dict[bytes, bytes]:
    return await client.hgetall(key)  # type: ignore[no-any-return,misc]


# -- the script -------------------------------------------------------------------------------------------------


async def test_all_buckets_or_none(backend: RedisBackend, redis_client: aioredis.Redis, prefix: str) -> None:
    roomy, tight = Demand("roomy", 10, DAY, 1), Demand("tight", 2, DAY, 1)
    for _ in range(2):
        assert (await backend.consume([roomy, tight])).admitted
    before = await counts(redis_client, prefix + "roomy")
    outcome = await backend.consume([roomy, tight])
    assert not outcome.admitted
    assert [(s.used, s.remaining) for s in outcome.states] == [(2, 8), (2, 0)]
    assert await counts(redis_client, prefix + "roomy") == before  # the refusal took nothing
    assert before[b"t"] == b"2"
    assert int(before[b"n"]) in (outcome.states[0].slot, outcome.states[0].slot - 1)  # a slot is 24 min
    assert (await backend.consume([roomy])).admitted


async def test_concurrent_checks_never_overshoot(prefix: str) -> None:
    """Five clients with their own connection pools race 60 checks for 10 units."""
    backends = [RedisBackend(REDIS_URL, prefix=prefix) for _ in range(5)]
    try:
        outcomes = await asyncio.gather(*(backends[i % 5].consume([Demand("race", 10, DAY, 1)]) for i in range(60)))
    finally:
        for b in backends:
            await b.aclose()
    assert sum(o.admitted for o in outcomes) == 10


async def test_every_key_expires_when_it_would_count_nothing(
    backend: RedisBackend, redis_client: aioredis.Redis, prefix: str
) -> None:
    """A window and a slot after the last charge (61 s for a minute, 24 h 24 min for a day)."""
    await backend.consume([Demand("m", 5, MINUTE, 1), Demand("d", 5, DAY, 1)])
    assert 61_000 - 1000 < await redis_client.pttl(prefix + "m") <= 61_000
    assert DAY + DAY // 60 - 1000 < await redis_client.pttl(prefix + "d") <= DAY + DAY // 60
    refused = await backend.consume([Demand("m2", 5, MINUTE, 9)])  # a refused check writes nothing
    assert not refused.admitted
    assert await redis_client.exists(prefix + "m2") == 0


async def test_time_comes_from_redis(backend: RedisBackend, redis_client: aioredis.Redis) -> None:
    seconds, micros = await redis_client.time()
    first = await backend.consume([Demand("k", 100, MINUTE, 1)])
    assert 0 <= first.now_ms - (seconds * 1000 + micros // 1000) < 1000
    assert first.states[0].slot in (first.now_ms // 1000, first.now_ms // 1000 - 1)


async def test_slots_slide_out_one_by_one(redis_client: aioredis.Redis, prefix: str) -> None:
    """On a clock the test sets: 4 at second 0 and 6 at second 30 of 10 per minute; the 4 stop counting
    at 61 s, the 6 at 91 s, and the hash keeps only the slots that hold something (``o``: the oldest)."""
    clock = Clock(1_800_000_000.0)
    backend = RedisBackend(REDIS_URL, prefix=prefix, clock=clock)
    try:
        assert (await backend.consume([Demand("k", 10, MINUTE, 4)])).admitted
        clock.now += 30
        assert (await backend.consume([Demand("k", 10, MINUTE, 6)])).admitted
        clock.now += 30.999
        outcome = await backend.consume([Demand("k", 10, MINUTE, 1)])
        assert not outcome.admitted
        assert outcome.states[0].wait_ms == 1 and outcome.states[0].reset_ms == 30_001
        clock.now += 0.001  # 61 s on
        outcome = await backend.consume([Demand("k", 10, MINUTE, 4)])
        assert outcome.admitted and outcome.states[0].used == 10
        slot = 1_800_000_061
        assert await counts(redis_client, prefix + "k") == {
            b"t": b"10", b"o": str(slot - 31).encode(), b"n": str(slot).encode(),
            str(slot - 31).encode(): b"6", str(slot).encode(): b"4"}
    finally:
        await backend.aclose()


async def test_adjust_corrects_the_charged_slot_never_below_zero(redis_client: aioredis.Redis, prefix: str) -> None:
    from otel_gateway.routing.ratelimit import Adjustment

    clock = Clock(1_800_000_000.0)
    backend = RedisBackend(REDIS_URL, prefix=prefix, clock=clock)
    try:
        outcome = await backend.consume([Demand("t", 1000, MINUTE, 500)])
        slot = outcome.states[0].slot
        assert slot == 1_800_000_000
        clock.now += 5
        await backend.consume([Demand("t", 1000, MINUTE, 100)])
        await backend.adjust([Adjustment("t", slot, -490)])
        assert (await counts(redis_client, prefix + "t"))[str(slot).encode()] == b"10"
        await backend.adjust([Adjustment("t", slot, -50)])  # a slot holding nothing is no field
        stored = await counts(redis_client, prefix + "t")
        assert stored == {b"t": b"100", b"o": str(slot).encode(), b"n": str(slot + 5).encode(),
                          str(slot + 5).encode(): b"100"}
        await backend.adjust([Adjustment("t", slot - 61, 300)])  # a slot long gone: ignored
        await backend.adjust([Adjustment("t", slot + 6, 300)])  # a slot never charged: ignored
        assert await counts(redis_client, prefix + "t") == stored
        await backend.adjust([Adjustment("nothing-here", slot, 5)])  # creates no key
        assert await redis_client.exists(prefix + "nothing-here") == 0
        assert 0 < await redis_client.pttl(prefix + "t") <= 61_000  # adjusting keeps the expiry
    finally:
        await backend.aclose()


async def test_the_script_is_cached_and_called_by_sha(backend: RedisBackend, redis_client: aioredis.Redis) -> None:
    await backend.consume([Demand("s", 5, MINUTE, 1)])
    sha = redis_client.register_script(CONSUME).sha
    assert await redis_client.script_exists(sha) == [True]


async def test_the_limiter_settles_tokens_in_redis(backend: RedisBackend, redis_client: aioredis.Redis,
                                                   prefix: str) -> None:
    doc = rules_doc({"id": "tpd", "limit_to": 1000, "unit": "tokens_per_day"})
    rl = RateLimiter(Next(result=lambda: completion(total_tokens=10)), doc, backend, tracer=None)
    call = chat_call(max_tokens=495)
    await rl(call)
    assert call.context.response_headers["x-ratelimit-remaining"] == "500"
    assert (await counts(redis_client, prefix + "acme:tpd:tokens_per_day"))[b"t"] == b"10"


# -- Redis unreachable (no service needed) ----------------------------------------------------------------------


async def test_a_refused_connection_is_unavailable_and_then_fails_fast() -> None:
    backend = RedisBackend("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(BackendUnavailable, match=r"^redis://127.0.0.1:1/0: .*Connect"):
            await backend.consume([Demand("k", 1, MINUTE, 1)])
        with pytest.raises(BackendUnavailable, match=r"^redis://127.0.0.1:1/0 failed less than 1 s ago$"):
            await backend.consume([Demand("k", 1, MINUTE, 1)])
    finally:
        await backend.aclose()


async def test_a_silent_server_times_out() -> None:
    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = RedisBackend(f"redis://127.0.0.1:{port}/0", socket_timeout=0.1)
    try:
        with pytest.raises(BackendUnavailable, match=r"[Tt]imeout"):
            await backend.consume([Demand("k", 1, MINUTE, 1)])
    finally:
        await backend.aclose()
        server.close()


def test_passwords_never_reach_logs() -> None:
    assert redact("redis://user:s3cret@cache:6380/1") == "redis://user:***@cache:6380/1"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert repr(RedisBackend("redis://:pw@127.0.0.1:6379/0")) == "RedisBackend('redis://:***@127.0.0.1:6379/0')"


# -- three gateways, one limit ----------------------------------------------------------------------------------


@pytest.fixture
def gateways(tmp_path: Path, redis_client: aioredis.Redis) -> Iterator[tuple[list[str], str]]:
    """Three ``otel-gateway serve`` processes sharing the Redis backend; yields their URLs and the rule id."""
    with three_gateways(tmp_path, "acceptance", "limit_to: 100, unit: requests_per_minute") as served:
        yield served


@pytest.fixture
def token_gateways(tmp_path: Path, redis_client: aioredis.Redis) -> Iterator[tuple[list[str], str]]:
    """As ``gateways``, with a limit of 1000 tokens per minute."""
    with three_gateways(tmp_path, "tokens", "limit_to: 1000, unit: tokens_per_minute") as served:
        yield served


async def test_three_gateways_share_one_limit(gateways: tuple[list[str], str]) -> None:
    urls, rule = gateways
    body = {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]}
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post(urls[i % 3] + "/v1/chat/completions", json=body) for i in range(300))
        )
    statuses = [r.status_code for r in responses]
    assert (statuses.count(200), statuses.count(429)) == (100, 200)
    message = next(r for r in responses if r.status_code == 429).json()["error"]["message"]
    assert message.startswith(f"Rate limit exceeded: rule '{rule}' allows 100 requests per minute.")


async def test_three_gateways_hold_a_token_limit_within_one_reservation(
    token_gateways: tuple[list[str], str], redis_client: aioredis.Redis
) -> None:
    """60 streams opened across three processes, each reserving 60 tokens (10 estimated for the
    prompt, 50 for ``max_tokens``). The mock waits 30 s between chunks, so every admitted stream
    holds its whole reservation while the others are checked: 16 fit in 1000 tokens, a 17th would
    not, whichever process it reached."""
    urls, rule = token_gateways
    body = {"model": "demo/echo", "messages": [{"role": "user", "content": "one two three four five"}],
            "max_tokens": 50, "stream": True}
    slow = {"x-mock-chunk-delay-ms": "30000"}
    limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client, contextlib.AsyncExitStack() as streams:

        async def open_stream(url: str) -> httpx.Response:
            request = client.build_request("POST", url + "/v1/chat/completions", json=body, headers=slow)
            response = await client.send(request, stream=True)
            streams.push_async_callback(response.aclose)
            return response

        responses = await asyncio.gather(*(open_stream(urls[i % 3]) for i in range(60)))
        statuses = [r.status_code for r in responses]
        admitted = statuses.count(200)
        assert admitted * 60 <= 1000 < (admitted + 1) * 60  # within one request's reservation of the limit
        assert (admitted, statuses.count(429)) == (16, 44)
        stored = await counts(redis_client, f"{DEFAULT_PREFIX}default:{rule}:tokens_per_minute")
        assert int(stored[b"t"]) == 16 * 60
        refusal = next(r for r in responses if r.status_code == 429)
        await refusal.aread()
        assert refusal.json()["error"]["message"].startswith(
            f"Rate limit exceeded: rule '{rule}' allows 1000 tokens per minute.")
        remaining = sorted(int(r.headers["x-ratelimit-remaining"]) for r in responses if r.status_code == 200)
        assert remaining == list(range(40, 1000, 60))  # 940, 880, ..., 40: nothing slides out within 60 s

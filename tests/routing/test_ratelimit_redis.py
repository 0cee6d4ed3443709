"""The Redis backend against the real Redis at 127.0.0.1:6379 (skipped when it is unreachable, failed
under ``GATEWAY_REQUIRE_SERVICES=1``): the Lua script's all-or-nothing check, its expiries, settling,
and three gateway processes sharing one limit. Also what an unreachable Redis does (no service needed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from ratelimit_helpers import Next, chat_call, completion, rules_doc
from servers import free_port
from services import require_service

from otel_gateway._urls import redact_url as redact
from otel_gateway.routing.ratelimit import BackendUnavailable, Demand, RateLimiter
from otel_gateway.routing.ratelimit._redis import CONSUME, DEFAULT_PREFIX, RedisBackend

REDIS_URL = "redis://127.0.0.1:6379/0"
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
    assert [(s.previous, s.current) for s in outcome.states] == [(0, 2), (0, 2)]
    assert await counts(redis_client, prefix + "roomy") == before  # the refusal took nothing
    assert before[b"c"] == b"2" and before[b"w"] == str(outcome.now_ms // DAY).encode()
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


async def test_every_key_expires_after_two_windows(
    backend: RedisBackend, redis_client: aioredis.Redis, prefix: str
) -> None:
    await backend.consume([Demand("m", 5, MINUTE, 1), Demand("d", 5, DAY, 1)])
    assert 2 * MINUTE - 1000 < await redis_client.pttl(prefix + "m") <= 2 * MINUTE
    assert 2 * DAY - 1000 < await redis_client.pttl(prefix + "d") <= 2 * DAY
    refused = await backend.consume([Demand("m2", 5, MINUTE, 9)])  # a refused check writes nothing
    assert not refused.admitted
    assert await redis_client.exists(prefix + "m2") == 0


async def test_the_previous_window_counts_and_time_comes_from_redis(
    backend: RedisBackend, redis_client: aioredis.Redis, prefix: str
) -> None:
    seconds, micros = await redis_client.time()
    first = await backend.consume([Demand("k", 100, DAY, 1)])
    assert 0 <= first.now_ms - (seconds * 1000 + micros // 1000) < 1000
    index = first.now_ms // DAY
    await redis_client.hset(prefix + "k", mapping={"w": index - 1, "c": 40, "p": 0})  # yesterday: 40
    outcome = await backend.consume([Demand("k", 100, DAY, 1)])
    (state,) = outcome.states
    assert (state.previous, state.current) == (40, 1)
    assert state.elapsed_ms == outcome.now_ms % DAY
    await redis_client.hset(prefix + "k", mapping={"w": index - 2})  # two days ago: nothing counts
    assert [(s.previous, s.current) for s in (await backend.consume([Demand("k", 100, DAY, 1)])).states] == [(0, 1)]


async def test_adjust_corrects_the_charged_window_never_below_zero(
    backend: RedisBackend, redis_client: aioredis.Redis, prefix: str
) -> None:
    from otel_gateway.routing.ratelimit import Adjustment

    outcome = await backend.consume([Demand("t", 1000, DAY, 500)])
    index = outcome.now_ms // DAY
    await backend.adjust([Adjustment("t", index, -490)])
    assert (await counts(redis_client, prefix + "t"))[b"c"] == b"10"
    await backend.adjust([Adjustment("t", index, -50)])
    assert (await counts(redis_client, prefix + "t"))[b"c"] == b"0"
    await backend.adjust([Adjustment("t", index - 5, 300)])  # a window long gone: ignored
    assert (await counts(redis_client, prefix + "t"))[b"c"] == b"0"
    await redis_client.hset(prefix + "t", mapping={"w": index + 1, "p": 20, "c": 3})  # it rolled over since
    await backend.adjust([Adjustment("t", index, 5)])
    assert await counts(redis_client, prefix + "t") == {b"w": str(index + 1).encode(), b"p": b"25", b"c": b"3"}
    assert 0 < await redis_client.pttl(prefix + "t") <= 2 * DAY  # adjusting keeps the expiry


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
    assert (await counts(redis_client, prefix + "acme:tpd:tokens_per_day"))[b"c"] == b"10"


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


@contextlib.contextmanager
def three_gateways(tmp_path: Path, name: str, limit: str) -> Iterator[tuple[list[str], str]]:
    """Three ``otel-gateway serve`` processes with one rate rule (``limit``, its id ``name`` and a
    random suffix) in the shared Redis backend; yields their URLs and the rule id, whose keys are
    deleted afterwards."""
    rule = f"{name}-{uuid.uuid4().hex}"
    (tmp_path / "gateway.yaml").write_text(f"""\
type: gateway-providers-config
providers:
  - {{name: demo, type: mock, models: [echo]}}
---
type: gateway-rate-limiting-config
backend: {REDIS_URL}
rules:
  - {{id: {rule}, {limit}}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENABLE_OTEL", "OTEL_"))}
    ports = [free_port() for _ in range(3)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "otel_gateway", "serve", "--config", str(tmp_path), "--port", str(port),
             "--log-level", "warning"],
            env=env, cwd=tmp_path,
        )
        for port in ports
    ]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, process in zip(urls, processes, strict=True):
            wait_until_healthy(url, process)
        yield urls, rule
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    delete_rule_keys(rule)


def wait_until_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"the gateway at {url} exited with {process.returncode}"
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the gateway at {url} did not become healthy"
        time.sleep(0.05)


def delete_rule_keys(rule: str) -> None:
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=f"{DEFAULT_PREFIX}*{rule}*"))
        if keys:
            client.delete(*keys)


async def test_three_gateways_share_one_limit(gateways: tuple[list[str], str]) -> None:
    urls, rule = gateways
    body = {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]}
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post(urls[i % 3] + "/v1/chat/completions", json=body) for i in range(300))
        )
    statuses = [r.status_code for r in responses]
    admitted, refused = statuses.count(200), statuses.count(429)
    assert 100 <= admitted <= 102
    assert admitted + refused == 300
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
        assert int(stored[b"c"]) + int(stored[b"p"]) == 16 * 60
        refusal = next(r for r in responses if r.status_code == 429)
        await refusal.aread()
        assert refusal.json()["error"]["message"].startswith(
            f"Rate limit exceeded: rule '{rule}' allows 1000 tokens per minute.")
        remaining = sorted(int(r.headers["x-ratelimit-remaining"]) for r in responses if r.status_code == 200)
        # 940, 880, ..., 40; one more if a minute (the fixed window) began meanwhile
        assert all(0 <= got - want <= 1 for got, want in zip(remaining, range(40, 1000, 60), strict=True))

"""The Redis cache backend against the real Redis at 127.0.0.1:6379 (skipped when it is unreachable, failed
under ``GATEWAY_REQUIRE_SERVICES=1``): entries under their tenant's key with Redis's own expiry, shared by two
gateways. And what an unreachable Redis does (no service needed): every request a miss, nothing stored,
the failures counted and logged once."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import orjson
import pytest
import redis.asyncio as aioredis
from fakes import FakeUpstream, Reply, openai_completion
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from servers import serve
from services import require_service

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text
from otel_gateway.routing.cache import CacheStats, CacheUnavailable, ResponseCache
from otel_gateway.routing.cache._redis import RedisCache

REDIS_URL = "redis://127.0.0.1:6379/0"
CLOSED_PORT = "redis://127.0.0.1:1/0"
MODEL = "up/gpt-4o"
MESSAGES: list[Any] = [{"role": "user", "content": "hello redis"}]
DIGEST = hashlib.sha256(orjson.dumps({"model": MODEL, "messages": MESSAGES}, option=orjson.OPT_SORT_KEYS)).hexdigest()


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


@pytest.fixture
async def prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test:cache:{uuid.uuid4().hex}:"
    yield prefix
    keys = [key async for key in redis_client.scan_iter(match=prefix + "*")]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
def fake(fake: FakeUpstream) -> FakeUpstream:
    return fake.reset(Reply(json=openai_completion()))


@pytest.fixture
def serve_gateway(served_fake: tuple[FakeUpstream, str], fake: FakeUpstream, tracer_provider: TracerProvider
                  ) -> Iterator[Any]:
    """``serve_gateway(backend, prefix)`` -> (its cache layer, an SDK client)."""
    with contextlib.ExitStack() as stack:

        def run(backend: str, prefix: str = "gw:") -> tuple[ResponseCache, openai.OpenAI]:
            text = f"""\
type: gateway-providers-config
providers:
  - {{name: up, type: openai-compatible, base_url: "{served_fake[1]}/v1", models: [gpt-4o]}}
---
type: gateway-cache-config
backend: "{backend}"
ttl_seconds: 120
key_prefix: "{prefix}"
"""
            app = create_app(load_config_text(text, environ={}), tracer_provider=tracer_provider)
            layer = app.state.gateway.current.send
            assert isinstance(layer, ResponseCache)
            url = stack.enter_context(serve(app))
            client = stack.enter_context(openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=10))
            return layer, client

        yield run


def status(client: openai.OpenAI) -> str | None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    raw.parse()
    return raw.http_response.headers.get("x-gateway-cache-status")


# -- the backend ------------------------------------------------------------------------------------------------


async def test_set_with_expiry_and_get(redis_client: aioredis.Redis, prefix: str) -> None:
    cache = RedisCache(REDIS_URL)
    try:
        assert await cache.get(prefix + "k") is None
        await cache.set(prefix + "k", b"\x00value", 30)
        assert await cache.get(prefix + "k") == b"\x00value"
        assert 29 <= await redis_client.ttl(prefix + "k") <= 30
    finally:
        await cache.aclose()


async def test_an_unreachable_redis_fails_fast() -> None:
    cache = RedisCache(CLOSED_PORT, reconnect_after=60)
    try:
        with pytest.raises(CacheUnavailable, match=r"^redis://127.0.0.1:1/0: "):
            await cache.get("k")
        started = time.monotonic()
        with pytest.raises(CacheUnavailable, match=r"failed less than 60 s ago"):
            await cache.set("k", b"v", 5)
        assert time.monotonic() - started < 0.05
    finally:
        await cache.aclose()


def test_the_url_password_never_shows() -> None:
    assert repr(RedisCache("redis://user:s3cret@127.0.0.1:6379/0")) == "RedisCache('redis://user:***@127.0.0.1:6379/0')"


# -- through the gateway ----------------------------------------------------------------------------------------


async def test_two_gateways_share_answers_through_redis(
    serve_gateway: Any, fake: FakeUpstream, redis_client: aioredis.Redis, prefix: str
) -> None:
    first_layer, first = serve_gateway(REDIS_URL, prefix)
    second_layer, second = serve_gateway(REDIS_URL, prefix)
    assert status(first) == "MISS"
    key = f"{prefix}default:{DIGEST}"
    stored = orjson.loads(await redis_client.get(key) or b"null")
    assert stored == {"v": 1, "completion": openai_completion(), "provider": "up", "provider_type": "openai",
                      "upstream_model": "gpt-4o", "model_id": "up/gpt-4o"}
    assert 115 <= await redis_client.ttl(key) <= 120
    assert status(second) == "HIT"
    assert status(first) == "HIT"
    assert len(fake.requests) == 1
    assert (first_layer.stats, second_layer.stats) == (CacheStats(hits=1, misses=1, stores=1), CacheStats(hits=1))


def test_an_unreachable_redis_means_misses_and_no_stores(
    serve_gateway: Any, fake: FakeUpstream, caplog: pytest.LogCaptureFixture, span_exporter: InMemorySpanExporter
) -> None:
    layer, client = serve_gateway(CLOSED_PORT)
    with caplog.at_level(logging.WARNING, logger="otel_gateway.cache"):
        assert [status(client) for _ in range(3)] == ["MISS", "MISS", "MISS"]
    assert len(fake.requests) == 3
    assert layer.stats == CacheStats(misses=3, backend_failures=3)  # each lookup; no store is tried after it
    warnings = [r.getMessage() for r in caplog.records if r.name == "otel_gateway.cache"]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "cache backend unavailable while looking up (redis://127.0.0.1:1/0: ") and warnings[0].endswith(
        "); serving without the cache")
    deadline = time.monotonic() + 5
    while sum(s.kind is SpanKind.SERVER for s in span_exporter.get_finished_spans()) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    lookups = [s for s in span_exporter.get_finished_spans() if s.name == "cacheLookup"]
    assert [dict(s.attributes or {}) for s in lookups] == [
        {"cache.backend": "redis", "cache.key": DIGEST, "error.type": "cache_backend_unavailable",
         "cache.status": "MISS"}] * 3
    assert [s.status.status_code for s in lookups] == [StatusCode.ERROR] * 3

"""The response cache's parts on their own: the key and what it leaves out, the ``x-gateway-cache``
directives, the replayed chunks, the memory LRU and its clock, stored entries, the config document,
and the backends kept across reloads."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from ratelimit_helpers import Clock, Next, Stream, chat_call, stream_chunks

from otel_gateway.calls import Completion
from otel_gateway.chat._assemble import CompletionAssembler
from otel_gateway.config import ConfigError, load_config_text
from otel_gateway.config._cache import CacheDocument
from otel_gateway.errors import InvalidRequestError
from otel_gateway.identity import Identity
from otel_gateway.routing import ChainServices, build_chain
from otel_gateway.routing.cache import (
    CacheBackends,
    CacheStats,
    CacheUnavailable,
    Entry,
    MemoryCache,
    ReplayStream,
    ResponseCache,
    cache_key,
    directives,
    replay_chunks,
    request_digest,
)

MESSAGES = [{"role": "user", "content": "hi"}]
PROVIDERS = "type: gateway-providers-config\nproviders:\n  - {name: demo, type: mock, models: [echo]}\n---\n"


def sha256_of(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


# -- the key ----------------------------------------------------------------------------------------------------


def test_the_key_is_the_sha256_of_the_sorted_canonical_request_under_the_tenant() -> None:
    call = chat_call(content="hi", temperature=0.5, tools=[{"type": "function", "function": {"name": "f"}}])
    digest = sha256_of({"model": "demo/echo", "messages": MESSAGES, "temperature": 0.5,
                        "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert cache_key(call, "p:") == (f"p:acme:{digest}", digest)


def test_tenants_are_escaped_so_they_cannot_forge_each_others_namespace() -> None:
    call = chat_call(identity=Identity("user:x", "a:b%c"))
    key, digest = cache_key(call, "p:") or ("", "")
    assert key == f"p:a%3Ab%25c:{digest}"


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"stream": True, "stream_options": {"include_usage": True}}, id="stream"),
        pytest.param({"user": "end-user-7", "safety_identifier": "s"}, id="user"),
        pytest.param({"metadata": {"a": "b"}, "store": True, "service_tier": "auto"}, id="bookkeeping"),
        pytest.param({"prompt_cache_key": "k"}, id="prompt_cache_key"),
        pytest.param({"temperature": None, "seed": None}, id="nulls"),
    ],
)
def test_fields_that_do_not_change_the_answer_share_the_key(extra: dict[str, Any]) -> None:
    assert request_digest("m", {"model": "m", "messages": MESSAGES, **extra}) == request_digest(
        "m", {"messages": MESSAGES})


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"temperature": 0.2}, id="temperature"),
        pytest.param({"top_k": 5}, id="unknown-parameter"),
        pytest.param({"messages": [{"role": "user", "content": "hi "}]}, id="messages"),
        pytest.param({"max_tokens": 5}, id="max_tokens"),
        pytest.param({"max_completion_tokens": 5}, id="max_completion_tokens"),
        pytest.param({"n": 2}, id="n"),
    ],
)
def test_fields_that_may_change_the_answer_change_the_key(extra: dict[str, Any]) -> None:
    assert request_digest("m", {"messages": MESSAGES, **extra}) != request_digest("m", {"messages": MESSAGES})


def test_the_model_is_the_one_the_layer_sees_not_the_body() -> None:
    assert request_digest("a", {"model": "b", "messages": MESSAGES}) == sha256_of({"model": "a", "messages": MESSAGES})


def test_a_body_that_cannot_be_canonical_is_not_cached() -> None:
    assert cache_key(chat_call(logit_bias={"1": 2**70}), "p:") is None


# -- directives -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, set(), id="absent"),
        pytest.param("", set(), id="empty"),
        pytest.param("no-cache", {"no-cache"}, id="no-cache"),
        pytest.param("No-Store", {"no-store"}, id="case"),
        pytest.param(" no-cache ,no-store, ", {"no-cache", "no-store"}, id="both"),
    ],
)
def test_directives(value: str | None, expected: set[str]) -> None:
    assert directives({} if value is None else {"x-gateway-cache": value}) == expected


def test_an_unknown_directive_is_a_400_naming_it() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        directives({"x-gateway-cache": "no-cache, nostore"})
    assert caught.value.body() == {"error": {
        "message": "x-gateway-cache: unknown directive 'nostore'; expected no-cache and/or no-store, comma-separated.",
        "type": "invalid_request_error", "code": "invalid_header", "param": "x-gateway-cache"}}


# -- replay -----------------------------------------------------------------------------------------------------

HEAD = {"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m", "system_fingerprint": "fp"}
USAGE = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}


def completion_with(*choices: dict[str, Any]) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "created": 7, "model": "m", "system_fingerprint": "fp",
            "choices": list(choices), "usage": USAGE}


def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {**HEAD, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def test_replay_of_two_choices_text_refusal_and_tool_calls() -> None:
    data = completion_with(
        {"index": 0, "message": {"role": "assistant", "content": "abcdefghi"}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": None, "refusal": "no",
                                 "tool_calls": [TOOL_CALL, {**TOOL_CALL, "id": "call_2"}]},
         "finish_reason": "tool_calls"},
    )
    assert replay_chunks(data) == [
        chunk(0, {"role": "assistant", "content": ""}),
        chunk(0, {"content": "abc"}),
        chunk(0, {"content": "def"}),
        chunk(0, {"content": "ghi"}),
        chunk(0, {}, "stop"),
        chunk(1, {"role": "assistant", "content": None}),
        chunk(1, {"refusal": "no"}),
        chunk(1, {"tool_calls": [{"index": 0, **TOOL_CALL}]}),
        chunk(1, {"tool_calls": [{"index": 1, **TOOL_CALL, "id": "call_2"}]}),
        chunk(1, {}, "tool_calls"),
        {**HEAD, "choices": [], "usage": USAGE},
    ]


@pytest.mark.parametrize(
    ("text", "pieces"),
    [("", []), ("a", ["a"]), ("abcd", ["a", "b", "c", "d"]), ("abcdefghij", ["abc", "def", "ghi", "j"])],
)
def test_content_is_told_in_at_most_four_pieces(text: str, pieces: list[str]) -> None:
    data = completion_with({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})
    assert [c["choices"][0]["delta"].get("content") for c in replay_chunks(data)[1:-2]] == pieces


@pytest.mark.parametrize("include_usage", [True, False])
async def test_a_replay_stream_reassembles_to_the_cached_answer(include_usage: bool) -> None:
    data = completion_with(
        {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
         "finish_reason": "tool_calls"})
    stream = ReplayStream(data, include_usage=include_usage)
    chunks = [c async for c in stream]
    assert ("usage" in chunks[-1]) is include_usage
    client_side = CompletionAssembler()
    for c in chunks:
        client_side.add(c)
    for assembler in (stream.assembler, client_side):
        assert assembler.complete
    expected = {**data, "choices": [{**data["choices"][0]}]}
    assert stream.assembler.result() == expected  # the held-back usage chunk included
    assert client_side.result() == (expected if include_usage else {k: v for k, v in expected.items() if k != "usage"})


async def test_a_closed_replay_stream_ends() -> None:
    stream = ReplayStream(completion_with(), include_usage=True)
    await stream.aclose()
    assert [c async for c in stream] == []


# -- the memory backend -----------------------------------------------------------------------------------------


async def test_memory_entries_expire_after_their_ttl() -> None:
    clock = Clock(100.0)
    cache = MemoryCache(10, clock)
    await cache.set("k", b"v", 60)
    clock.now = 159.999
    assert await cache.get("k") == b"v"
    clock.now = 160.0
    assert await cache.get("k") is None
    assert len(cache) == 0


async def test_memory_drops_the_least_recently_used_beyond_its_bound() -> None:
    cache = MemoryCache(2, Clock())
    await cache.set("a", b"1", 60)
    await cache.set("b", b"2", 60)
    assert await cache.get("a") == b"1"  # now b is the least recently used
    await cache.set("c", b"3", 60)
    assert ["a" in cache, "b" in cache, "c" in cache] == [True, False, True]
    await cache.set("a", b"4", 60)  # replacing refreshes: c is the oldest now
    await cache.set("d", b"5", 60)
    assert [await cache.get(k) for k in "abcd"] == [b"4", None, None, b"5"]


async def test_memory_evicts_expired_entries_first_and_resizes() -> None:
    clock = Clock()
    cache = MemoryCache(3, clock)
    await cache.set("short", b"1", 1)
    await cache.set("long1", b"2", 60)
    clock.now = 5.0
    await cache.set("long2", b"3", 60)
    assert len(cache) == 2  # the expired one went as soon as something was stored
    cache.resize(1)
    assert ["long1" in cache, "long2" in cache] == [False, True]


# -- entries ----------------------------------------------------------------------------------------------------


def test_entries_round_trip_and_foreign_bytes_are_ignored() -> None:
    entry = Entry({"choices": []}, "up", "openai", "gpt-4o-2024-08-06", "up/gpt-4o")
    assert orjson.loads(entry.encode()) == {"v": 1, "completion": {"choices": []}, "provider": "up",
                                            "provider_type": "openai", "upstream_model": "gpt-4o-2024-08-06",
                                            "model_id": "up/gpt-4o"}
    assert Entry.decode(entry.encode()) == entry
    for raw in (b"not json", b"[]", b'{"v": 2, "completion": {}}', b'{"v": 1, "completion": "x"}'):
        assert Entry.decode(raw) is None


# -- the config document ----------------------------------------------------------------------------------------


def test_a_cache_document_with_its_defaults() -> None:
    config = load_config_text(PROVIDERS + "type: gateway-cache-config\n", environ={})
    assert config.cache == CacheDocument(type="gateway-cache-config")
    assert (config.cache.backend, config.cache.ttl_seconds, config.cache.max_entries, config.cache.max_entry_bytes,
            config.cache.key_prefix) == ("memory", 3600, 1000, 262144, "otel_gateway:cache:")
    assert load_config_text(PROVIDERS, environ={}).cache is None


def test_a_full_cache_document() -> None:
    config = load_config_text(PROVIDERS + """\
type: gateway-cache-config
backend: ${REDIS:-redis://127.0.0.1:6379/2}
ttl_seconds: 600
max_entries: 50
max_entry_bytes: 4096
key_prefix: "gw-staging:"
when: {models: [demo/echo], subjects: ["team:ml"], metadata: {env: prod}}
""", environ={})
    assert config.cache is not None
    assert config.cache.model_dump() == {
        "type": "gateway-cache-config", "backend": "redis://127.0.0.1:6379/2", "ttl_seconds": 600,
        "max_entries": 50, "max_entry_bytes": 4096, "key_prefix": "gw-staging:",
        "when": {"subjects": ("team:ml",), "models": ("demo/echo",), "metadata": {"env": "prod"}}}


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param("ttl_seconds: 0", ["ttl_seconds: Input should be greater than 0"], id="ttl-zero"),
        pytest.param("ttl_seconds: 31536001", ["ttl_seconds: Input should be less than or equal to 31536000"],
                     id="ttl-too-long"),
        pytest.param("ttl_seconds: soon", ["ttl_seconds: Input should be a valid integer, unable to parse string "
                                           "as an integer"], id="ttl-text"),
        pytest.param("max_entries: -1", ["max_entries: Input should be greater than 0"], id="max-entries"),
        pytest.param("max_entry_bytes: 0", ["max_entry_bytes: Input should be greater than 0"], id="max-bytes"),
        pytest.param("backend: memcached://x", ["backend: must be 'memory' or a redis:// URL"], id="backend"),
        pytest.param('key_prefix: ""', ["key_prefix: String should have at least 1 character"], id="prefix"),
        pytest.param("when: {model: [demo/echo]}", ["when.model: unknown key"], id="when-typo"),
        pytest.param('when: {subjects: ["alice"]}',
                     ["when.subjects: subject 'alice' must look like user:..., team:... or virtualaccount:..."],
                     id="subject"),
        pytest.param("ttl: 5", ["ttl: unknown key"], id="unknown-key"),
    ],
)
def test_bad_values_are_refused_at_load_with_their_key_path(lines: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(PROVIDERS + "type: gateway-cache-config\n" + lines + "\n", source="gw.yaml", environ={})
    assert [str(issue) for issue in caught.value.issues] == [f"gw.yaml (document 2): {e}" for e in expected]


def test_a_second_cache_document_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(PROVIDERS + "type: gateway-cache-config\n---\ntype: gateway-cache-config\n",
                         source="gw.yaml", environ={})
    assert [str(issue) for issue in caught.value.issues] == [
        "gw.yaml (document 3): type: a second gateway-cache-config document; merge them into one"]


# -- across reloads ---------------------------------------------------------------------------------------------


async def test_the_memory_cache_survives_a_rebuilt_chain_and_takes_the_new_bound() -> None:
    services = ChainServices(tracer=None)

    async def provider_send(call: Any) -> Any:
        raise AssertionError("not called")

    def chain(max_entries: int) -> ResponseCache:
        text = PROVIDERS + f"type: gateway-cache-config\nmax_entries: {max_entries}\n"
        layer = build_chain(load_config_text(text, environ={}), provider_send, services)
        assert isinstance(layer, ResponseCache)
        return layer

    first, second = chain(5), chain(1)
    assert first.backend is second.backend
    assert isinstance(second.backend, MemoryCache)
    assert second.backend.max_entries == 1
    await services.aclose()


async def test_backends_are_made_once_per_name_and_closed() -> None:
    made: list[str] = []

    def factory(doc: CacheDocument) -> MemoryCache:
        made.append(doc.backend)
        return MemoryCache(doc.max_entries)

    backends = CacheBackends(factory)
    doc = CacheDocument(type="gateway-cache-config")
    backend = backends.get(doc)
    await backend.set("k", b"v", 60)
    assert backends.get(doc) is backend
    assert made == ["memory"]
    await backends.aclose()
    assert len(backend) == 0  # type: ignore[arg-type]


# -- the layer on its own ---------------------------------------------------------------------------------------


class FailingSets(MemoryCache):
    async def set(self, key: str, value: bytes, ttl: int) -> None:
        raise CacheUnavailable("redis://x: gone")


def layer(next: Next, backend: MemoryCache) -> ResponseCache:
    return ResponseCache(next, CacheDocument(type="gateway-cache-config"), backend, tracer=None)


def answer() -> Completion:
    return Completion({"id": "c1", "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}]})


async def test_a_failing_store_is_counted_and_the_answer_still_goes_out(caplog: pytest.LogCaptureFixture) -> None:
    cache = layer(Next(answer), FailingSets(10))
    result = await cache(chat_call())
    assert isinstance(result, Completion)
    assert result.data["id"] == "c1"
    assert cache.stats == CacheStats(misses=1, backend_failures=1)
    assert [r.getMessage() for r in caplog.records if r.name == "otel_gateway.cache"] == [
        "cache backend unavailable while storing (redis://x: gone); serving without the cache"]


async def test_a_stream_without_an_assembler_is_stored_from_its_chunks() -> None:
    backend = MemoryCache(10)
    cache = layer(Next(lambda: Stream(stream_chunks(7))), backend)
    call = chat_call(stream=True)
    result = await cache(call)
    assert not isinstance(result, Completion)
    assert len([c async for c in result]) == 3
    key, _ = cache_key(call, "otel_gateway:cache:") or ("", "")
    entry = Entry.decode(await backend.get(key) or b"")
    assert entry is not None
    assert entry.completion == {
        "object": "chat.completion", "id": "s1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7}}


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "completion"])
async def test_unfinished_answers_are_not_stored(streamed: bool) -> None:
    backend = MemoryCache(10)
    unfinished = [{"id": "s1", "choices": [{"index": 0, "delta": {"content": "hel"}, "finish_reason": None}]}]
    answer = Completion({"id": "c", "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": None}]})
    cache = layer(Next(lambda: Stream(unfinished) if streamed else answer), backend)
    result = await cache(chat_call(stream=streamed))
    if not isinstance(result, Completion):
        assert [c async for c in result] == unfinished
    assert (len(backend), cache.stats.stores) == (0, 0)


async def test_a_stream_closed_before_its_end_is_not_stored() -> None:
    backend = MemoryCache(10)
    inner = Stream(stream_chunks(7))
    cache = layer(Next(lambda: inner), backend)
    result = await cache(chat_call(stream=True))
    assert not isinstance(result, Completion)
    await anext(aiter(result))
    await result.aclose()
    assert inner.closed
    assert [c async for c in result] == stream_chunks(7)[1:]  # a closed stream may still be read; not stored
    assert len(backend) == 0


async def test_unsampled_lookups_export_nothing_and_still_say_hit_or_miss(
    span_exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    cache = ResponseCache(Next(answer), CacheDocument(type="gateway-cache-config"), MemoryCache(10),
                          tracer=provider.get_tracer("test"))
    calls = [chat_call(), chat_call()]
    for call in calls:
        await cache(call)
    assert [c.context.outcome.cache_status for c in calls] == ["MISS", "HIT"]
    assert [c.context.response_headers for c in calls] == [{"x-gateway-cache-status": "MISS"},
                                                           {"x-gateway-cache-status": "HIT"}]
    assert span_exporter.get_finished_spans() == ()

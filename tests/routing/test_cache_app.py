"""The response cache through the whole gateway: the real ``openai`` SDK against ``create_app`` served over
HTTP, a scripted fake upstream behind it whose recorded requests count the upstream calls. Streams replayed
chunk by chunk, directives, expiry on an injected clock, the LRU bound, tenants, spans asserted exactly."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import orjson
import pytest
from fakes import FakeUpstream, Reply, openai_completion, openai_stream
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from ratelimit_helpers import Clock
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.calls import ChatCall, ChunkStream, Completion, Outcome, Send
from otel_gateway.config import load_config_text
from otel_gateway.routing.cache import CacheStats, MemoryCache, ResponseCache
from otel_gateway.routing.ratelimit import RateLimiter

ALICE_KEY = "sk-alice-0123456789abcdef"
BOB_KEY = "sk-bob-0123456789abcdef"
CAROL_KEY = "sk-carol-0123456789abcdef"
MODEL = "up/gpt-4o"
MESSAGES: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]
HEAD = {"id": "chatcmpl-fake1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-2024-08-06"}
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}

PROVIDERS = """\
type: gateway-providers-config
providers:
  - {{name: up, type: openai-compatible, base_url: "{url}/v1", models: [gpt-4o, gpt-4o-mini], timeout_ms: 2000}}
---
type: gateway-auth-config
keys:
  - {{name: alice, key: {alice}, subject: "user:alice", tenant: acme}}
  - {{name: bob, key: {bob}, subject: "user:bob", tenant: acme}}
  - {{name: carol, key: {carol}, subject: "user:carol", tenant: globex}}
---
type: gateway-cache-config
"""


@pytest.fixture
def fake(fake: FakeUpstream) -> FakeUpstream:
    return fake.reset(Reply(json=openai_completion()))


@dataclass
class Recorder:
    """Outermost ``send``: keeps each call's outcome, as the request log will see it."""

    next: Send
    outcomes: list[Outcome] = field(default_factory=list)

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        self.outcomes.append(call.context.outcome)
        return await self.next(call)

    @property
    def statuses(self) -> list[str | None]:
        return [o.cache_status for o in self.outcomes]


@dataclass
class Served:
    layer: ResponseCache
    recorder: Recorder
    url: str
    client: Callable[..., openai.OpenAI]


Start = Callable[..., Served]


@pytest.fixture
def start(served_fake: tuple[FakeUpstream, str], fake: FakeUpstream, tracer_provider: TracerProvider
          ) -> Iterator[Start]:
    """``start(cache_yaml, extra_documents)`` serves a gateway over the fake upstream."""
    with contextlib.ExitStack() as stack:

        def run(cache: str = "", extra: str = "", *, clock: Clock | None = None) -> Served:
            text = PROVIDERS.format(url=served_fake[1], alice=ALICE_KEY, bob=BOB_KEY, carol=CAROL_KEY) + cache + extra
            app = create_app(load_config_text(text, environ={}), tracer_provider=tracer_provider)
            gateway = app.state.gateway
            layer = gateway.current.send
            if isinstance(layer, RateLimiter):
                layer = layer._next
            assert isinstance(layer, ResponseCache)
            if clock is not None:
                layer.backend = MemoryCache(gateway.current.config.cache.max_entries, clock)
            recorder = Recorder(gateway.current.send)
            gateway.current = dataclasses.replace(gateway.current, send=recorder)
            url = stack.enter_context(serve(app))

            def client(key: str = ALICE_KEY) -> openai.OpenAI:
                return stack.enter_context(openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=10))

            return Served(layer, recorder, url, client)

        yield run


def chat(client: openai.OpenAI, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("messages", MESSAGES)
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    return raw.http_response, raw.parse().to_dict()


def stream(client: openai.OpenAI, **kwargs: Any) -> tuple[Any, list[dict[str, Any]]]:
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("messages", MESSAGES)
    raw = client.chat.completions.with_raw_response.create(stream=True, **kwargs)
    return raw.http_response, [chunk.to_dict() for chunk in raw.parse()]


def status(response: Any) -> str | None:
    return response.headers.get("x-gateway-cache-status")


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {**HEAD, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


# -- hits and misses --------------------------------------------------------------------------------------------


def test_a_repeated_request_is_answered_from_the_cache(start: Start, fake: FakeUpstream) -> None:
    served = start()
    alice = served.client()
    first, answer = chat(alice)
    assert status(first) == "MISS"
    fake.reply = Reply(json=openai_completion("Something else"))
    second, again = chat(alice)
    assert status(second) == "HIT"
    assert again == answer == openai_completion()
    assert len(fake.requests) == 1
    assert served.recorder.statuses == ["MISS", "HIT"]
    assert served.layer.stats == CacheStats(hits=1, misses=1, stores=1)
    hit = served.recorder.outcomes[1]
    assert (hit.provider, hit.provider_type, hit.upstream_model, hit.attempts) == ("up", "openai", "gpt-4o", 0)


@pytest.mark.parametrize("include_usage", [True, False], ids=["with-usage", "without-usage"])
def test_a_streamed_request_after_a_non_streamed_one_is_replayed(
    start: Start, fake: FakeUpstream, include_usage: bool
) -> None:
    served = start()
    alice = served.client()
    chat(alice)
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    response, chunks = stream(alice, **options)
    assert status(response) == "HIT"
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    expected = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo "}),
        chunk({"content": "the"}),
        chunk({"content": "re"}),
        chunk({}, "stop"),
    ]
    if include_usage:
        expected.append({**HEAD, "choices": [], "usage": USAGE})
    assert chunks == expected
    assert len(fake.requests) == 1
    assert served.recorder.statuses == ["MISS", "HIT"]


def test_tool_calls_are_replayed(start: Start, fake: FakeUpstream) -> None:
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
    fake.reply = Reply(json=openai_completion(None, tool_calls=[tool_call], finish_reason="tool_calls"))
    alice = start().client()
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    chat(alice, tools=tools)
    response, chunks = stream(alice, tools=tools)
    assert status(response) == "HIT"
    assert chunks == [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{"index": 0, **tool_call}]}),
        chunk({}, "tool_calls"),
    ]


def test_a_streamed_miss_is_stored_once_complete(start: Start, fake: FakeUpstream) -> None:
    served = start()
    alice = served.client()
    fake.reply = Reply(events=openai_stream(["Hel", "lo"]))
    response, chunks = stream(alice)  # no usage asked: the gateway still keeps the upstream's
    assert status(response) == "MISS"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello"
    response, answer = chat(alice)
    assert status(response) == "HIT"
    assert answer == {
        "id": "chatcmpl-fake2", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
    }
    assert len(fake.requests) == 1
    assert served.layer.stats == CacheStats(hits=1, misses=1, stores=1)


def test_a_stream_cut_midway_is_not_stored(start: Start, fake: FakeUpstream) -> None:
    served = start()
    alice = served.client()
    fake.reply = Reply(events=openai_stream(["Hel", "lo"]), cut_after=2)
    with pytest.raises(openai.APIError, match="cut mid-stream"):
        stream(alice)
    fake.reply = Reply(json=openai_completion())
    response, _ = chat(alice)
    assert status(response) == "MISS"
    assert len(fake.requests) == 2
    assert served.layer.stats == CacheStats(hits=0, misses=2, stores=1)


def test_a_stream_the_client_leaves_is_not_stored(start: Start, fake: FakeUpstream) -> None:
    served = start()
    alice = served.client()
    fake.reply = Reply(events=openai_stream(["a", "b", "c", "d", "e"]), event_delay=0.2)
    chunks = alice.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    with chunks:
        next(iter(chunks))
    assert fake.stream_abandoned.wait(5)
    fake.reply = Reply(json=openai_completion())
    response, _ = chat(alice)
    assert status(response) == "MISS"
    assert served.layer.stats == CacheStats(hits=0, misses=2, stores=1)


def test_upstream_errors_are_misses_and_not_stored(start: Start, fake: FakeUpstream) -> None:
    served = start()
    alice = served.client()
    fake.reply = Reply(status=500, json={"error": {"message": "boom", "type": "server_error"}})
    with pytest.raises(openai.InternalServerError) as caught:
        chat(alice)
    assert status(caught.value.response) == "MISS"
    fake.reply = Reply(json=openai_completion())
    assert status(chat(alice)[0]) == "MISS"
    assert status(chat(alice)[0]) == "HIT"
    assert len(fake.requests) == 2


# -- what is the same question ----------------------------------------------------------------------------------


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param({"model": "up/gpt-4o-mini"}, id="model"),
        pytest.param({"messages": [{"role": "user", "content": "What is the capital of Spain?"}]}, id="messages"),
        pytest.param({"messages": [{"role": "system", "content": "Be brief."}, *MESSAGES]}, id="system"),
        pytest.param({"temperature": 0.7}, id="temperature"),
        pytest.param({"top_p": 0.5}, id="top_p"),
        pytest.param({"max_tokens": 10}, id="max_tokens"),
        pytest.param({"max_completion_tokens": 10}, id="max_completion_tokens"),
        pytest.param({"tools": TOOLS}, id="tools"),
        pytest.param({"response_format": {"type": "json_object"}}, id="response_format"),
        pytest.param({"stop": ["."]}, id="stop"),
        pytest.param({"seed": 7}, id="seed"),
        pytest.param({"n": 2}, id="n"),
        pytest.param({"frequency_penalty": 0.5}, id="frequency_penalty"),
        pytest.param({"presence_penalty": 0.5}, id="presence_penalty"),
        pytest.param({"logit_bias": {"1": 5}}, id="logit_bias"),
        pytest.param({"extra_body": {"top_k": 3}}, id="unknown-parameter"),
    ],
)
def test_a_different_question_misses(start: Start, fake: FakeUpstream, variant: dict[str, Any]) -> None:
    alice = start().client()
    chat(alice)
    assert status(chat(alice, **variant)[0]) == "MISS"
    assert len(fake.requests) == 2


def test_tool_choice_differs_from_no_tool_choice(start: Start, fake: FakeUpstream) -> None:
    alice = start().client()
    chat(alice, tools=TOOLS)
    assert status(chat(alice, tools=TOOLS, tool_choice="required")[0]) == "MISS"
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param({"user": "end-user-42"}, id="user"),
        pytest.param({"temperature": None}, id="null"),
        pytest.param({"metadata": {"purpose": "test"}, "store": False}, id="bookkeeping"),
        pytest.param({"extra_headers": {"x-gateway-metadata": '{"env":"prod"}'}}, id="gateway-metadata"),
    ],
)
def test_the_same_question_asked_differently_hits(start: Start, fake: FakeUpstream, variant: dict[str, Any]) -> None:
    alice = start().client()
    chat(alice)
    assert status(chat(alice, **variant)[0]) == "HIT"
    assert len(fake.requests) == 1


def test_tenants_never_share_answers(start: Start, fake: FakeUpstream) -> None:
    served = start()
    assert status(chat(served.client(ALICE_KEY))[0]) == "MISS"
    assert status(chat(served.client(BOB_KEY))[0]) == "HIT"  # same tenant
    fake.reply = Reply(json=openai_completion("Bonjour"))
    response, answer = chat(served.client(CAROL_KEY))
    assert (status(response), answer["choices"][0]["message"]["content"]) == ("MISS", "Bonjour")
    response, answer = chat(served.client(CAROL_KEY))
    assert (status(response), answer["choices"][0]["message"]["content"]) == ("HIT", "Bonjour")
    assert chat(served.client(ALICE_KEY))[1]["choices"][0]["message"]["content"] == "Hello there"
    assert len(fake.requests) == 2


def test_requests_when_does_not_match_are_not_cached(start: Start, fake: FakeUpstream) -> None:
    served = start("when: {models: [up/gpt-4o], metadata: {cache: 'yes'}}\n")
    alice = served.client()
    for _ in range(2):
        response, _ = chat(alice)
        assert "x-gateway-cache-status" not in response.headers
    opted_in = {"extra_headers": {"x-gateway-metadata": '{"cache":"yes"}'}}
    assert [status(chat(alice, **opted_in)[0]) for _ in range(2)] == ["MISS", "HIT"]
    assert served.recorder.statuses == [None, None, "MISS", "HIT"]
    assert len(fake.requests) == 3


# -- directives -------------------------------------------------------------------------------------------------


def cache_header(value: str) -> dict[str, Any]:
    return {"extra_headers": {"x-gateway-cache": value}}


def test_no_cache_skips_the_lookup_and_stores_the_fresh_answer(start: Start, fake: FakeUpstream) -> None:
    served = start()
    alice = served.client()
    chat(alice)
    fake.reply = Reply(json=openai_completion("Fresh"))
    response, answer = chat(alice, **cache_header("no-cache"))
    assert (status(response), answer["choices"][0]["message"]["content"]) == ("MISS", "Fresh")
    response, answer = chat(alice)
    assert (status(response), answer["choices"][0]["message"]["content"]) == ("HIT", "Fresh")
    assert len(fake.requests) == 2
    assert served.layer.stats == CacheStats(hits=1, misses=2, stores=2)


def test_no_store_does_not_store(start: Start, fake: FakeUpstream) -> None:
    served = start()
    alice = served.client()
    assert status(chat(alice, **cache_header("no-store"))[0]) == "MISS"
    fake.reply = Reply(events=openai_stream(["Hel", "lo"]))
    assert status(stream(alice, **cache_header("no-store"))[0]) == "MISS"
    fake.reply = Reply(json=openai_completion())
    assert status(chat(alice)[0]) == "MISS"
    assert status(chat(alice, **cache_header("no-store"))[0]) == "HIT"  # no-store still reads
    assert len(fake.requests) == 3
    assert served.layer.stats == CacheStats(hits=1, misses=3, stores=1)


def test_no_cache_and_no_store_together_leave_the_cache_alone(start: Start, fake: FakeUpstream) -> None:
    alice = start().client()
    chat(alice)
    fake.reply = Reply(json=openai_completion("Other"))
    response, answer = chat(alice, **cache_header("no-store, no-cache"))
    assert (status(response), answer["choices"][0]["message"]["content"]) == ("MISS", "Other")
    assert chat(alice)[1]["choices"][0]["message"]["content"] == "Hello there"
    assert len(fake.requests) == 2


def test_an_unknown_directive_is_refused(start: Start, fake: FakeUpstream) -> None:
    alice = start().client()
    with pytest.raises(openai.BadRequestError) as caught:
        chat(alice, **cache_header("no-stor"))
    assert caught.value.response.json() == {"error": {
        "message": "x-gateway-cache: unknown directive 'no-stor'; expected no-cache and/or no-store, comma-separated.",
        "type": "invalid_request_error", "code": "invalid_header", "param": "x-gateway-cache"}}
    assert fake.requests == []


# -- expiry, bounds ---------------------------------------------------------------------------------------------


def test_entries_expire_after_ttl_seconds(start: Start, fake: FakeUpstream) -> None:
    clock = Clock(1000.0)
    alice = start("ttl_seconds: 60\n", clock=clock).client()
    assert status(chat(alice)[0]) == "MISS"
    clock.now = 1059.5
    assert status(chat(alice)[0]) == "HIT"
    clock.now = 1060.0
    assert status(chat(alice)[0]) == "MISS"
    assert status(chat(alice)[0]) == "HIT"
    assert len(fake.requests) == 2


def test_the_least_recently_used_answer_goes_beyond_max_entries(start: Start, fake: FakeUpstream) -> None:
    served = start("max_entries: 2\n")
    alice = served.client()

    def ask(question: str) -> str | None:
        return status(chat(alice, messages=[{"role": "user", "content": question}])[0])

    assert [ask(q) for q in ("a", "b", "a", "c", "a", "b")] == ["MISS", "MISS", "HIT", "MISS", "HIT", "MISS"]
    assert len(served.layer.backend) == 2  # type: ignore[arg-type]
    assert len(fake.requests) == 4


def test_answers_over_max_entry_bytes_are_not_stored(start: Start, fake: FakeUpstream) -> None:
    served = start("max_entry_bytes: 600\n")
    alice = served.client()
    assert [status(chat(alice)[0]) for _ in range(2)] == ["MISS", "HIT"]
    fake.reply = Reply(json=openai_completion("x" * 600))
    long = [{"role": "user", "content": "Say many x"}]
    assert [status(chat(alice, messages=long)[0]) for _ in range(2)] == ["MISS", "MISS"]
    assert served.layer.stats == CacheStats(hits=1, misses=3, stores=1, too_large=2)


# -- its place in the chain -------------------------------------------------------------------------------------

RATE_AND_BALANCE = """\
---
type: gateway-rate-limiting-config
rules:
  - {id: "{user}-rpm", limit_to: 3, unit: requests_per_minute}
---
type: gateway-load-balancing-config
rules:
  - id: virtual
    type: priority-based-routing
    when: {models: [gpt-4o]}
    load_balance_targets: [{target: up/gpt-4o, priority: 0}]
"""


def test_hits_count_against_rate_limits(start: Start, fake: FakeUpstream) -> None:
    alice = start(extra=RATE_AND_BALANCE).client()
    statuses = [status(chat(alice, model="gpt-4o")[0]) for _ in range(3)]
    assert statuses == ["MISS", "HIT", "HIT"]
    with pytest.raises(openai.RateLimitError):
        chat(alice, model="gpt-4o")
    assert len(fake.requests) == 1


# -- spans ------------------------------------------------------------------------------------------------------


def finished(exporter: InMemorySpanExporter, servers: int) -> list[ReadableSpan]:
    """Every finished span once ``servers`` SERVER spans have ended (they end in the server thread)."""
    deadline = time.monotonic() + 5
    while sum(s.kind is SpanKind.SERVER for s in exporter.get_finished_spans()) < servers:
        assert time.monotonic() < deadline, "the server spans did not finish"
        time.sleep(0.01)
    return list(exporter.get_finished_spans())


def names_under_server(spans: list[ReadableSpan]) -> list[list[str]]:
    """Per request, the names of the SERVER span's direct children, in start order."""
    out = []
    for server in sorted((s for s in spans if s.kind is SpanKind.SERVER), key=lambda s: s.start_time or 0):
        children = [s for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id]
        out.append([s.name for s in sorted(children, key=lambda s: s.start_time or 0)])
    return out


def test_the_lookup_span_of_a_miss_and_a_hit(start: Start, span_exporter: InMemorySpanExporter) -> None:
    alice = start(extra=RATE_AND_BALANCE).client()
    chat(alice, model="gpt-4o")
    stream(alice, model="gpt-4o", **cache_header("no-store"))
    spans = finished(span_exporter, 2)
    assert names_under_server(spans) == [
        ["RateLimiterMiddleware", "cacheLookup", "loadBalanceMiddleware"],
        ["RateLimiterMiddleware", "cacheLookup"],
    ]
    lookups = [s for s in spans if s.name == "cacheLookup"]
    key = hashlib.sha256(orjson.dumps({"model": "gpt-4o", "messages": MESSAGES}, option=orjson.OPT_SORT_KEYS))
    assert [dict(s.attributes or {}) for s in lookups] == [
        {"cache.backend": "memory", "cache.key": key.hexdigest(), "cache.status": "MISS"},
        {"cache.backend": "memory", "cache.key": key.hexdigest(), "cache.directives": ("no-store",),
         "cache.status": "HIT"},
    ]
    assert [(s.kind, s.status.status_code) for s in lookups] == [(SpanKind.INTERNAL, StatusCode.UNSET)] * 2


def test_no_lookup_span_when_the_cache_does_not_apply(start: Start, span_exporter: InMemorySpanExporter) -> None:
    alice = start("when: {models: [up/gpt-4o-mini]}\n").client()
    chat(alice)
    assert names_under_server(finished(span_exporter, 1)) == [["chatCompletions"]]


TOKEN_LIMIT = """\
---
type: gateway-rate-limiting-config
default_max_tokens: 10
rules:
  - {id: "{user}-tpm", limit_to: 40, unit: tokens_per_minute}
"""


def test_hits_cost_no_tokens_against_token_limits(start: Start, fake: FakeUpstream) -> None:
    # Each request reserves about 15 tokens and the upstream answer used 15: charged at that price,
    # the second hit would already pass 40. Hits settle to zero, so they keep being admitted.
    alice = start(extra=TOKEN_LIMIT).client()
    statuses = [status(chat(alice)[0]) for _ in range(6)]
    assert statuses == ["MISS", "HIT", "HIT", "HIT", "HIT", "HIT"]
    assert len(fake.requests) == 1

"""Rate limiting through the whole gateway: the real ``openai`` SDK against ``create_app`` served over
HTTP, the built-in mock provider behind it, identities from an auth document, spans asserted exactly."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from ratelimit_helpers import Clock
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config, load_config_text
from otel_gateway.routing.ratelimit import SPAN_NAME, MemoryBackend, RateLimiter

ALICE_KEY = "sk-alice-0123456789abcdef"
OPS_KEY = "sk-ops-0123456789abcdef"
BOB_KEY = "sk-bob-0123456789abcdef"
MODEL = "demo/echo"
HELLO = [{"role": "user", "content": "one two three four five"}]
"""23 characters: estimated at 6 + 4 tokens; the mock counts 5 + 3 prompt and 5 completion tokens."""
CLOSED_PORT = "redis://127.0.0.1:1/0"

BASE = f"""\
type: gateway-providers-config
providers:
  - {{name: demo, type: mock, models: [echo]}}
---
type: gateway-auth-config
keys:
  - {{name: alice, key: {ALICE_KEY}, subject: "user:alice", tenant: acme}}
  - {{name: bob, key: {BOB_KEY}, subject: "user:bob", tenant: acme}}
  - {{name: ops, key: {OPS_KEY}, subject: "user:ops", tenant: acme, admin: true}}
---
type: gateway-rate-limiting-config
"""
USER_RPM2 = """\
rules:
  - {id: "{user}-rpm", limit_to: 2, unit: requests_per_minute}
"""

Start = Callable[..., tuple[RateLimiter, Callable[[str], openai.OpenAI]]]


@pytest.fixture
def start(tracer_provider: TracerProvider) -> Iterator[Start]:
    """``start(rate_limit_yaml, backend=..., clock=True)`` serves a gateway; gives its limiter and
    ``client(key)``. With a clock (the default) the memory counters run on a frozen clock at 0."""
    with contextlib.ExitStack() as stack:

        def run(rules: str = USER_RPM2, *, backend: str = "memory", fail_closed: bool = False,
                clock: bool = True) -> tuple[RateLimiter, Callable[[str], openai.OpenAI]]:
            text = BASE + f"backend: {backend!r}\nfail_closed: {str(fail_closed).lower()}\n" + rules
            app = create_app(load_config_text(text, environ={}), tracer_provider=tracer_provider)
            limiter = app.state.gateway.current.send
            assert isinstance(limiter, RateLimiter)
            if clock:
                limiter.backend = MemoryBackend(Clock(0.0))
            url = stack.enter_context(serve(app))

            def client(key: str) -> openai.OpenAI:
                return stack.enter_context(openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=10))

            return limiter, client

        yield run


def chat(client: openai.OpenAI, **kwargs: Any) -> httpx.Response:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, **kwargs)  # type: ignore[arg-type]
    raw.parse()
    return raw.http_response


def ratelimit_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("x-ratelimit-") or k == "retry-after"}


def limiter_spans(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The first ``count`` finished SERVER spans' trace: waits for them (they end in the server thread)."""
    deadline = time.monotonic() + 5
    while sum(s.kind is SpanKind.SERVER for s in exporter.get_finished_spans()) < count:
        assert time.monotonic() < deadline, "the server spans did not finish"
        time.sleep(0.01)
    return [s for s in exporter.get_finished_spans() if s.name == SPAN_NAME]


def alice_span(status: str, *, rules: tuple[str, ...] = ("user:alice-rpm",), **extra: Any) -> dict[str, Any]:
    return {
        "rate_limiter.model": MODEL,
        "rate_limiter.metadata": "{}",
        "rate_limiter.user.subject_type": "user",
        "rate_limiter.user.subject_slug": "alice",
        "rate_limiter.user.tenant_name": "acme",
        "rate_limiter.rules": rules,
        "rate_limiter.status": status,
        **extra,
    }


# -- answers and headers ----------------------------------------------------------------------------------------


def test_429_after_the_limit_in_openai_shape_with_retry_after(start: Start) -> None:
    _, client = start()
    alice = client(ALICE_KEY)
    # Both in the first 1 s slot, which counts until 61 s.
    assert ratelimit_headers(chat(alice)) == {
        "x-ratelimit-limit": "2", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "61"}
    assert ratelimit_headers(chat(alice)) == {
        "x-ratelimit-limit": "2", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "61"}
    with pytest.raises(openai.RateLimitError) as caught:
        chat(alice)
    response = caught.value.response
    assert response.status_code == 429
    assert response.json() == {"error": {
        "message": "Rate limit exceeded: rule 'user:alice-rpm' allows 2 requests per minute. Retry after 61 s.",
        "type": "rate_limit_error", "code": "rate_limit_exceeded", "param": None}}
    assert ratelimit_headers(response) == {
        "retry-after": "61", "x-ratelimit-limit": "2", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "61"}
    assert ratelimit_headers(chat(client(BOB_KEY)))["x-ratelimit-remaining"] == "1"  # his own bucket


def test_streams_carry_the_headers_too(start: Start) -> None:
    _, client = start()
    raw = client(ALICE_KEY).chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, stream=True)  # type: ignore[arg-type]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    assert text == "one two three four five"
    assert raw.http_response.headers["content-type"].startswith("text/event-stream")
    assert ratelimit_headers(raw.http_response) == {
        "x-ratelimit-limit": "2", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "61"}


def test_upstream_errors_carry_the_headers(start: Start) -> None:
    _, client = start()
    with pytest.raises(openai.InternalServerError) as caught:
        chat(client(ALICE_KEY), extra_headers={"x-mock-status": "500"})
    assert caught.value.response.status_code == 502
    assert ratelimit_headers(caught.value.response) == {
        "x-ratelimit-limit": "2", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "61"}


def test_a_token_limit_settles_each_call_to_its_usage(start: Start) -> None:
    _, client = start("rules:\n  - {id: tpm, limit_to: 300, unit: tokens_per_minute}\n")
    alice = client(ALICE_KEY)
    admitted = 0
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(30):
            chat(alice, max_tokens=50)  # reserves 10 + 50, uses 13
            admitted += 1
    assert admitted == 19  # 18 * 13 = 234 used leaves room for 60 more; 19 * 13 = 247 does not
    assert ratelimit_headers(caught.value.response)["x-ratelimit-remaining"] == "53"


def test_a_token_limit_holds_while_calls_are_in_flight(start: Start) -> None:
    """Open streams hold their whole reservation: 5 * 60 = 300 tokens, and the sixth is refused."""
    _, client = start("rules:\n  - {id: tpm, limit_to: 300, unit: tokens_per_minute}\n")
    alice = client(ALICE_KEY)
    with contextlib.ExitStack() as streams:
        for remaining in (240, 180, 120, 60, 0):
            raw = alice.chat.completions.with_raw_response.create(
                model=MODEL, messages=HELLO, max_tokens=50, stream=True,  # type: ignore[arg-type]
                extra_headers={"x-mock-chunk-delay-ms": "30000"},
            )
            streams.callback(raw.parse().close)
            assert raw.http_response.headers["x-ratelimit-remaining"] == str(remaining)
        with pytest.raises(openai.RateLimitError) as caught:
            chat(alice, max_tokens=50)
    assert caught.value.response.json()["error"]["message"] == (
        "Rate limit exceeded: rule 'tpm' allows 300 tokens per minute. Retry after 61 s.")


# -- spans ------------------------------------------------------------------------------------------------------


def test_spans_of_admitted_and_refused_calls(start: Start, span_exporter: InMemorySpanExporter) -> None:
    _, client = start()
    alice = client(ALICE_KEY)
    chat(alice, extra_headers={"x-gateway-metadata": '{"env":"prod","team":"ml"}'})
    chat(alice)
    with pytest.raises(openai.RateLimitError):
        chat(alice)
    first, second, refused = limiter_spans(span_exporter, 3)
    assert dict(first.attributes or {}) == alice_span(
        "allowed", **{"rate_limiter.metadata": '{"env":"prod","team":"ml"}'},
        **{"rate_limiter.rule.id": "user:alice-rpm", "rate_limiter.remaining": 1})
    assert dict(second.attributes or {}) == alice_span(
        "allowed", **{"rate_limiter.rule.id": "user:alice-rpm", "rate_limiter.remaining": 0})
    assert dict(refused.attributes or {}) == alice_span(
        "rate_limited", **{"rate_limiter.rule.id": "user:alice-rpm", "rate_limiter.remaining": 0})
    assert [s.status.status_code for s in (first, second, refused)] == [StatusCode.UNSET] * 3


def test_the_span_is_the_check_a_child_of_the_server_span(start: Start, span_exporter: InMemorySpanExporter) -> None:
    _, client = start()
    chat(client(ALICE_KEY))
    limiter_spans(span_exporter, 1)
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    server, check, attempt = spans["POST /v1/chat/completions"], spans[SPAN_NAME], spans["chatCompletions"]
    assert server.kind is SpanKind.SERVER and check.kind is SpanKind.INTERNAL
    assert check.parent is not None and check.parent.span_id == server.context.span_id
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id  # not below the check
    assert check.end_time is not None and attempt.start_time is not None and check.end_time <= attempt.start_time


def test_a_call_no_rule_covers_still_gets_the_span(start: Start, span_exporter: InMemorySpanExporter) -> None:
    _, client = start('rules:\n  - {id: ml, when: {subjects: ["team:ml"]}, limit_to: 1, unit: requests_per_day}\n')
    response = chat(client(ALICE_KEY))
    assert ratelimit_headers(response) == {}
    (span,) = limiter_spans(span_exporter, 1)
    assert dict(span.attributes or {}) == alice_span("no_matching_rules", rules=())


# -- an unreachable Redis ---------------------------------------------------------------------------------------


def test_redis_down_fails_open(start: Start, span_exporter: InMemorySpanExporter,
                               caplog: pytest.LogCaptureFixture) -> None:
    limiter, client = start(backend=CLOSED_PORT, clock=False)
    alice = client(ALICE_KEY)
    with caplog.at_level(logging.WARNING, logger="otel_gateway.ratelimit"):
        for _ in range(3):
            assert ratelimit_headers(chat(alice)) == {}
    assert limiter.backend_failures == 3
    warnings = [r for r in caplog.records if r.name == "otel_gateway.ratelimit"]
    assert len(warnings) == 1  # not one per request
    assert warnings[0].getMessage().startswith("rate-limit backend unavailable (redis://127.0.0.1:1/0")
    assert warnings[0].getMessage().endswith("; admitting requests unchecked")
    spans = limiter_spans(span_exporter, 3)
    assert [dict(s.attributes or {}) for s in spans] == [alice_span("backend_unavailable")] * 3
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR] * 3


def test_redis_down_fails_closed_with_503(start: Start, span_exporter: InMemorySpanExporter) -> None:
    limiter, client = start(backend=CLOSED_PORT, fail_closed=True, clock=False)
    with pytest.raises(openai.InternalServerError) as caught:
        chat(client(ALICE_KEY))
    response = caught.value.response
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"error": {
        "message": "Rate limiting is temporarily unavailable and this gateway refuses requests it cannot check "
                   "(fail_closed: true). Retry shortly.",
        "type": "service_unavailable_error", "code": "rate_limit_backend_unavailable", "param": None}}
    assert limiter.backend_failures == 1
    (span,) = limiter_spans(span_exporter, 1)
    assert dict(span.attributes or {}) == alice_span("backend_unavailable_refused")
    assert span.status.status_code is StatusCode.ERROR
    assert not [s for s in span_exporter.get_finished_spans() if s.name == "chatCompletions"]


# -- reloads ----------------------------------------------------------------------------------------------------


def test_counters_survive_a_config_reload(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE + "backend: memory\n" + USER_RPM2)
    app = create_app(load_config(path, environ={}))
    with serve(app) as url, openai.OpenAI(base_url=url + "/v1", api_key=ALICE_KEY, max_retries=0) as alice:
        chat(alice)
        chat(alice)
        path.write_text(BASE + "backend: memory\n" + USER_RPM2.replace("limit_to: 2", "limit_to: 3"))
        reloaded = httpx.post(url + "/admin/reload", headers={"authorization": f"Bearer {OPS_KEY}"})
        assert reloaded.status_code == 200
        # The new limit over the old counts: one more, then no more. (Nothing counted slides out
        # within 60 s, so the real clock cannot make this flaky.)
        assert ratelimit_headers(chat(alice))["x-ratelimit-limit"] == "3"
        with pytest.raises(openai.RateLimitError):
            chat(alice)

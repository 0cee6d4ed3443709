"""Fallback through the app, driven by the real ``openai`` SDK over HTTP: a scripted fake upstream
as the primary, the built-in mock provider as the fallback. Exact ``fallbackRequest`` spans and
the span tree; streams before and after their first chunk."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from fakes import FakeUpstream, Reply, openai_completion, openai_stream
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import finished_spans, serve

from otel_gateway.app import create_app
from otel_gateway.config import GatewayConfig, load_config_text

MESSAGES = [{"role": "user", "content": "hi there"}]  # type: ignore[var-annotated]
UPSTREAM_ERROR = {"error": {"message": "boom", "type": "server_error", "code": None, "param": None}}
FALLBACK_SPAN = {
    "fallback.http.url": "/v1/chat/completions",
    "fallback.http.method": "POST",
    "fallback.requested_model": "oai/gpt-4o",
    "fallback.resolved_model": "backup/echo",
    "fallback.config_id": "gpt4o-to-backup",
    "fallback.temperature": 0.2,
}
FELL_BACK = [  # the span tree of a request whose primary failed and which went on to its fallback
    "POST /v1/chat/completions",
    "  chatCompletions",
    "  fallbackRequest",
    "    chatCompletions",
]


@pytest.fixture
def fake(fake: FakeUpstream) -> FakeUpstream:
    return fake.reset(Reply(json=openai_completion()))


def gateway_config(fake_url: str, *, balancing: bool = False) -> GatewayConfig:
    text = f"""\
type: gateway-providers-config
providers:
  - {{name: oai, type: openai-compatible, base_url: "{fake_url}/v1", models: [gpt-4o], timeout_ms: 300}}
  - {{name: backup, type: mock, models: [echo]}}
---
type: gateway-fallback-config
rules:
  - id: gpt4o-to-backup
    when: {{models: [oai/gpt-4o]}}
    fallback_models:
      - {{target: backup/echo, override_params: {{temperature: 0.2}}}}
"""
    if balancing:
        text += """\
---
type: gateway-load-balancing-config
rules:
  - id: virtual
    type: priority-based-routing
    when: {models: [gpt-4o]}
    load_balance_targets: [{target: oai/gpt-4o, priority: 0}]
"""
    return load_config_text(text, environ={})


Client = Callable[..., openai.OpenAI]


@pytest.fixture
def client(served_fake: tuple[FakeUpstream, str], fake: FakeUpstream, tracer_provider: TracerProvider
           ) -> Iterator[Client]:
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> openai.OpenAI:
            url = stack.enter_context(serve(create_app(gateway_config(served_fake[1], **options),
                                                       tracer_provider=tracer_provider)))
            return stack.enter_context(openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=10))

        yield start


def spans_when_done(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The finished spans, once the SERVER span is among them."""
    return finished_spans(exporter, "POST /v1/chat/completions")


def tree(spans: list[ReadableSpan]) -> list[str]:
    """The spans as an indented outline in start order, the upstream HTTP client spans left out."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        children.setdefault(span.parent.span_id if span.parent else None, []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in children.get(parent, []):
            if span.name != "POST":
                lines.append("  " * depth + span.name)
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return lines


def fallback_span(spans: list[ReadableSpan]) -> dict[str, Any]:
    (span,) = [s for s in spans if s.name == "fallbackRequest"]
    return dict(span.attributes or {})


def servers_tried(spans: list[ReadableSpan]) -> list[str]:
    return [str((s.attributes or {})["server.address"]) for s in sorted(spans, key=lambda s: s.start_time or 0)
            if s.name == "chatCompletions"]


@pytest.mark.parametrize("reply", [
    pytest.param(Reply(status=500, json=UPSTREAM_ERROR), id="status-500"),
    pytest.param(Reply(json=openai_completion(), delay=1.0), id="upstream-timeout"),
])
def test_falls_back(client: Client, fake: FakeUpstream, span_exporter: InMemorySpanExporter, reply: Reply) -> None:
    fake.reply = reply
    answer = client().chat.completions.create(model="oai/gpt-4o", messages=MESSAGES, max_tokens=40)
    assert answer.model == "echo"
    assert answer.choices[0].message.content == "hi there"
    assert len(fake.requests) == 1
    spans = spans_when_done(span_exporter)
    assert fallback_span(spans) == {**FALLBACK_SPAN, "fallback.max_tokens": 40}
    assert tree(spans) == FELL_BACK
    assert servers_tried(spans) == ["127.0.0.1", "mock.invalid"]


def test_falls_back_under_load_balancing(client: Client, fake: FakeUpstream,
                                         span_exporter: InMemorySpanExporter) -> None:
    fake.reply = Reply(status=503, json=UPSTREAM_ERROR)
    answer = client(balancing=True).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert answer.model == "echo"
    spans = spans_when_done(span_exporter)
    assert fallback_span(spans) == FALLBACK_SPAN
    (balanced,) = [s for s in spans if s.name == "loadBalanceMiddleware"]
    assert dict(balanced.attributes or {}) == {
        "load_balance.http.url": "/v1/chat/completions",
        "load_balance.http.method": "POST",
        "user.tenantName": "default",
        "load_balance.requested_model": "gpt-4o",
        "load_balance.resolved_model": "oai/gpt-4o",
    }
    assert tree(spans) == [
        "POST /v1/chat/completions",
        "  loadBalanceMiddleware",
        "    chatCompletions",
        "    fallbackRequest",
        "      chatCompletions",
    ]


def test_no_fallback_on_a_client_error(client: Client, fake: FakeUpstream,
                                       span_exporter: InMemorySpanExporter) -> None:
    fake.reply = Reply(status=400, json=UPSTREAM_ERROR)
    with pytest.raises(openai.BadRequestError):
        client().chat.completions.create(model="oai/gpt-4o", messages=MESSAGES)
    spans = spans_when_done(span_exporter)
    assert tree(spans) == ["POST /v1/chat/completions", "  chatCompletions"]


def test_a_stream_falls_back_before_its_first_chunk(client: Client, fake: FakeUpstream,
                                                    span_exporter: InMemorySpanExporter) -> None:
    fake.reply = Reply(events=openai_stream(["Hel", "lo"]), delay=1.0)
    stream = client().chat.completions.create(model="oai/gpt-4o", messages=MESSAGES, stream=True,
                                              extra_headers={"x-gateway-ttft-timeout-ms": "100"})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "hi there"
    spans = spans_when_done(span_exporter)
    assert fallback_span(spans) == FALLBACK_SPAN
    assert tree(spans) == FELL_BACK
    (primary, _) = sorted((s for s in spans if s.name == "chatCompletions"), key=lambda s: s.start_time or 0)
    assert (primary.attributes or {})["error.type"] == "ttft_timeout"


def test_a_stream_that_started_never_falls_back(client: Client, fake: FakeUpstream,
                                                span_exporter: InMemorySpanExporter) -> None:
    fake.reply = Reply(events=openai_stream(["Hel", "lo", " there"]), cut_after=2)
    stream = client().chat.completions.create(model="oai/gpt-4o", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "Hel"]
    assert raised.value.body == {
        "message": raised.value.message,
        "type": "upstream_error",
        "code": "upstream_stream_error",
        "param": None,
    }
    spans = spans_when_done(span_exporter)
    assert tree(spans) == ["POST /v1/chat/completions", "  chatCompletions"]


def test_the_request_timeout_bounds_the_fallback_too(client: Client, fake: FakeUpstream,
                                                     span_exporter: InMemorySpanExporter) -> None:
    """The primary fails after 200 ms; the fallback would answer after 2 s; the request has 500 ms."""
    fake.reply = Reply(status=500, json=UPSTREAM_ERROR, delay=0.2)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as raised:
        client().chat.completions.create(model="oai/gpt-4o", messages=MESSAGES, extra_headers={
            "x-gateway-request-timeout": "500", "x-mock-delay-ms": "2000"})
    assert time.monotonic() - started < 1.5
    assert raised.value.status_code == 504
    assert raised.value.body == {"message": "The request was not answered within 500 ms (x-gateway-request-timeout).",
                                 "type": "timeout_error", "code": "request_timeout", "param": None}
    spans = spans_when_done(span_exporter)
    assert fallback_span(spans) == FALLBACK_SPAN
    assert tree(spans) == FELL_BACK

"""One redaction rule for spans, span events, the access log, records and error bodies: canary
credentials (a configured provider API key, an ``sk-...``-shaped key, a query parameter named like
a credential) pasted into a prompt, a tool call's arguments, a completion, an ``x-gateway-metadata``
value and a passed-through query string appear in no span attribute, no event attribute, no span
status, no access log line, no record and no error body; ``[REDACTED]`` stands where they were.

The real ``openai`` SDK against the gateway served by uvicorn with its access log on (the filter
``otel-gateway serve`` installs), in front of a scripted fake upstream."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes import FakeUpstream, Reply, openai_completion
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from servers import finished_spans, port_of, serve

from otel_gateway.app import create_app
from otel_gateway.cli import ACCESS_LOGGER, install_access_log_redaction
from otel_gateway.config import load_config_text
from otel_gateway.warehouse import MemoryStore

PROVIDER_KEY = f"prov-canary-{os.urandom(10).hex()}"
"""A configured provider API key: redacted only because the configuration holds it."""
SK_KEY = f"sk-canary-{os.urandom(10).hex()}"
"""Shaped like an OpenAI key, configured nowhere."""
TOKEN = f"tok-canary-{os.urandom(10).hex()}"
"""Secret only by the name of the query parameter that carries it (``token``)."""
CANARIES = (PROVIDER_KEY, SK_KEY, TOKEN)
R = "[REDACTED]"
MODEL = "up/gpt-4o"
UPSTREAM_MODEL = "gpt-4o-2024-08-06"
USER_AGENT = "redaction-test/1"
GATEWAY_THREAD = "gateway-with-access-log"

PROMPT_CALL = {"id": "call_1", "type": "function",
               "function": {"name": "login", "arguments": json.dumps({"key": PROVIDER_KEY, "user": "ann"})}}
MESSAGES = [
    {"role": "user", "content": f"my keys are {PROVIDER_KEY} and {SK_KEY}, log in"},
    {"role": "assistant", "tool_calls": [PROMPT_CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": f"ok, session {SK_KEY}"},
]
ANSWER_CALL = {"id": "call_2", "type": "function",
               "function": {"name": "login", "arguments": json.dumps({"key": SK_KEY})}}
METADATA = {"project_id": "p1", "note": f"pasted {PROVIDER_KEY}", "session_token": "opaque-value"}


@pytest.fixture
def access_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[logging.LogRecord]]:
    """The gateway's uvicorn access log records as its handlers get them (after the logger's
    filters); not those of the fake upstream's server."""
    access = logging.getLogger(ACCESS_LOGGER)
    monkeypatch.setattr(access, "filters", [])
    monkeypatch.setattr(access, "level", logging.INFO)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.threadName == GATEWAY_THREAD:
                records.append(record)

    handler = Keep()
    access.addHandler(handler)
    try:
        yield records
    finally:
        access.removeHandler(handler)


@pytest.fixture
def served(fake_url: str, tracer_provider: TracerProvider, access_log: list[logging.LogRecord]
           ) -> Iterator[tuple[str, MemoryStore]]:
    config = load_config_text(f"""\
type: gateway-providers-config
providers:
  - {{name: up, type: openai, base_url: "{fake_url}/v1", api_key: {PROVIDER_KEY},
     models: {{gpt-4o: {UPSTREAM_MODEL}}}}}
---
type: gateway-rate-limiting-config
rules:
  - {{id: rpm, limit_to: 100, unit: requests_per_minute}}
---
type: gateway-logging-config
store: none
flush_interval_ms: 10
""", environ={})
    store = MemoryStore()
    app = create_app(config, tracer_provider=tracer_provider, capture_content=True, log_store=store)
    install_access_log_redaction(lambda: app.state.gateway.current.redactor)
    with serve(app, thread_name=GATEWAY_THREAD, log_config=None, log_level=None, access_log=True) as url:
        yield url, store


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=0, timeout=10,
                         default_headers={"user-agent": USER_AGENT})


def records_of(store: MemoryStore, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while len(store.records) < count:
        assert time.monotonic() < deadline, f"{len(store.records)} of {count} records written"
        time.sleep(0.01)
    return list(store.records)


def span_named(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = [s for s in spans if s.name == name]
    return span


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def events_of(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(event.name, dict(event.attributes or {})) for event in span.events]


def leaks(text: str) -> list[str]:
    return [canary for canary in CANARIES if canary in text]


def everything_in(spans: list[ReadableSpan]) -> str:
    """Every span's name, attributes, events (their attributes), status and links, as JSON text."""
    return "\n".join(span.to_json() for span in spans)


def test_a_chat_request_s_spans_record_and_answer_hold_no_canary(
    served: tuple[str, MemoryStore], fake: FakeUpstream, fake_url: str, span_exporter: InMemorySpanExporter,
    access_log: list[logging.LogRecord],
) -> None:
    url, store = served
    fake.reset(Reply(json=openai_completion(f"your key {SK_KEY} works", tool_calls=[ANSWER_CALL],
                                            finish_reason="tool_calls")))
    with sdk(url) as client:
        answer = client.chat.completions.create(
            model=MODEL, messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"x-gateway-metadata": json.dumps(METADATA)},
        )
    assert answer.choices[0].message.content == f"your key {SK_KEY} works"  # the client gets its answer whole
    assert fake.requests[0].body["messages"] == MESSAGES  # and so does the provider

    spans = finished_spans(span_exporter, "chatCompletions", "RateLimiterMiddleware", "POST /v1/chat/completions",
                           "POST")
    chat = span_named(spans, "chatCompletions")
    assert attributes_of(chat) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "gen_ai.request.stream": False,
        "server.address": "127.0.0.1",
        "server.port": port_of(fake_url),
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": f"my keys are {R} and {R}, log in",
        "gen_ai.prompt.1.role": "assistant",
        "gen_ai.prompt.1.tool_calls.0.id": "call_1",
        "gen_ai.prompt.1.tool_calls.0.name": "login",
        "gen_ai.prompt.1.tool_calls.0.arguments": json.dumps({"key": R, "user": "ann"}),
        "gen_ai.prompt.2.role": "tool",
        "gen_ai.prompt.2.content": f"ok, session {R}",
        "gen_ai.prompt.2.tool_call_id": "call_1",
        "gen_ai.response.id": "chatcmpl-fake1",
        "gen_ai.response.model": UPSTREAM_MODEL,
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": f"your key {R} works",
        "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.tool_calls.0.id": "call_2",
        "gen_ai.completion.0.tool_calls.0.name": "login",
        "gen_ai.completion.0.tool_calls.0.arguments": json.dumps({"key": R}),
        "gen_ai.response.finish_reasons": ("tool_calls",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
    }
    redacted_call = {**PROMPT_CALL, "function": {"name": "login", "arguments": json.dumps({"key": R, "user": "ann"})}}
    assert events_of(chat) == [
        ("gen_ai.user.message", {"gen_ai.system": "openai", "role": "user",
                                 "content": f"my keys are {R} and {R}, log in"}),
        ("gen_ai.assistant.message", {"gen_ai.system": "openai", "role": "assistant",
                                      "tool_calls": json.dumps([redacted_call], separators=(",", ":"))}),
        ("gen_ai.tool.message", {"gen_ai.system": "openai", "role": "tool", "content": f"ok, session {R}",
                                 "id": "call_1"}),
    ]
    limiter = attributes_of(span_named(spans, "RateLimiterMiddleware"))
    assert json.loads(limiter["rate_limiter.metadata"]) == {"project_id": "p1", "note": f"pasted {R}",
                                                           "session_token": R}
    assert leaks(everything_in(spans)) == []

    (record,) = records_of(store, 1)
    assert record["attributes"]["metadata"]["note"] == f"pasted {R}"
    assert record["attributes"]["metadata"]["session_token"] == R
    assert record["attributes"]["request"]["messages"][0]["content"] == f"my keys are {R} and {R}, log in"
    assert leaks(json.dumps(record)) == []
    assert [r.getMessage().split(" - ", 1)[1] for r in access_log] == ['"POST /v1/chat/completions HTTP/1.1" 200']


def test_a_passed_through_query_is_redacted_in_the_client_span_the_access_log_and_the_record(
    served: tuple[str, MemoryStore], fake: FakeUpstream, fake_url: str, span_exporter: InMemorySpanExporter,
    access_log: list[logging.LogRecord],
) -> None:
    url, store = served
    fake.reset(Reply(json={"object": "list", "data": []}))
    query = f"token={TOKEN}&limit=2&after={PROVIDER_KEY}&order=desc&q=x%20{SK_KEY}"
    redacted = f"token={R}&limit=2&after={R}&order=desc&q={R}"
    response = httpx.get(f"{url}/v1/files?{query}", headers={"x-gateway-provider": "up", "user-agent": USER_AGENT})
    assert (response.status_code, response.json()) == (200, {"object": "list", "data": []})
    assert fake.requests[0].query == query  # the provider gets the query as sent

    spans = finished_spans(span_exporter, "GET /v1/files", "GET")
    client_span = span_named(spans, "GET")
    assert client_span.kind == SpanKind.CLIENT
    assert attributes_of(client_span) == {
        "http.method": "GET",
        "http.url": f"{fake_url}/v1/files?{redacted}",
        "http.status_code": 200,
    }
    server_span = span_named(spans, "GET /v1/files")
    assert attributes_of(server_span) == {
        "http.request.method": "GET",
        "url.path": "/v1/files",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "user_agent.original": USER_AGENT,
        "server.address": "127.0.0.1",
        "server.port": port_of(url),
        "client.address": "127.0.0.1",
        "http.response.status_code": 200,
        "http.route": "/v1/files",
    }
    assert leaks(everything_in(spans)) == []

    (line,) = [r.getMessage() for r in access_log]
    assert line.split(" - ", 1)[1] == f'"GET /v1/files?{redacted} HTTP/1.1" 200'
    (record,) = records_of(store, 1)
    assert record["attributes"]["query"] == redacted
    assert leaks(json.dumps(record)) == []


def test_an_upstream_error_quoting_the_canaries_is_redacted_in_the_body_the_span_and_the_record(
    served: tuple[str, MemoryStore], fake: FakeUpstream, span_exporter: InMemorySpanExporter,
) -> None:
    url, store = served
    message = f"Incorrect API key provided: {PROVIDER_KEY} (also tried {SK_KEY})"
    fake.reset(Reply(status=401, json={"error": {"message": message, "type": "invalid_request_error",
                                                 "code": "invalid_api_key"}}))
    with sdk(url) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    body = caught.value.response.json()
    assert caught.value.status_code == 502
    assert body["error"]["message"] == f"up: Incorrect API key provided: {R} (also tried {R})"

    spans = finished_spans(span_exporter, "chatCompletions", "POST /v1/chat/completions")
    chat = span_named(spans, "chatCompletions")
    assert chat.status.status_code == StatusCode.ERROR
    assert chat.status.description == body["error"]["message"]
    assert attributes_of(chat)["error.type"] == "401"
    assert leaks(everything_in(spans)) == []
    (record,) = records_of(store, 1)
    assert record["attributes"]["error"] == body
    assert leaks(json.dumps(record)) == []

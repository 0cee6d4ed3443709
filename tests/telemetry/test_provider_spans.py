"""The ``chatCompletions`` span of the providers that are not OpenAI itself, and of a stream that
fails after it started, asserted exactly; driven by the real ``openai`` SDK over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fakes import FakeUpstream, Reply, anthropic_events, openai_stream
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from servers import chat_span, finished_spans, port_of, served_sdk

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text

SYSTEM = {"role": "system", "content": "You are terse."}
USER = {"role": "user", "content": "Weather in Paris?"}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture
def client(fake_url: str, tracer_provider: TracerProvider) -> Iterator[openai.OpenAI]:
    config = load_config_text(f"""\
type: gateway-providers-config
providers:
  - name: up
    type: openai
    base_url: {fake_url}/v1
    api_key: sk-upstream-secret
    models: [gpt-4o]
  - name: claude
    type: anthropic
    base_url: {fake_url}
    api_key: sk-ant-upstream-secret
    models: {{sonnet: claude-sonnet-4-5-20250929}}
  - name: az
    type: azure-openai
    base_url: {fake_url}
    api_key: azure-upstream-secret
    models: {{gpt-4o: my-deployment}}
---
type: gateway-logging-config
store: none
""", environ={})
    with served_sdk(create_app(config, tracer_provider=tracer_provider), api_key="x") as sdk:
        yield sdk


def attributes_of(span: ReadableSpan, *, ttfc: bool = False) -> dict[str, Any]:
    assert span.attributes is not None
    attributes = dict(span.attributes)
    if ttfc:
        assert 0 <= attributes.pop("gen_ai.response.time_to_first_chunk") < 5
    return attributes


def test_anthropic_streamed_tool_call(client: openai.OpenAI, span_exporter: InMemorySpanExporter, fake_url: str,
                                      fake: FakeUpstream) -> None:
    tool = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}
    fake.reply = Reply(events=anthropic_events([
        ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "Let me "}, {"type": "text_delta",
                                                                                  "text": "check."}]),
        (tool, [{"type": "input_json_delta", "partial_json": part} for part in ['{"ci', 'ty": "Pa', 'ris"}']]),
    ], "tool_use"))

    chunks = list(client.chat.completions.create(model="claude/sonnet", messages=[SYSTEM, USER], stream=True,
                                                 tools=[WEATHER_TOOL], max_tokens=100, temperature=0.3))
    assert chunks

    spans = finished_spans(span_exporter, "chatCompletions", "POST")
    span = chat_span(span_exporter)
    assert (span.kind, span.status.status_code) == (SpanKind.CLIENT, StatusCode.UNSET)
    assert attributes_of(span, ttfc=True) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "anthropic",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude/sonnet",
        "gen_ai.request.stream": True,
        "gen_ai.request.max_tokens": 100,
        "gen_ai.request.temperature": 0.3,
        "server.address": "127.0.0.1",
        "server.port": port_of(fake_url),
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "You are terse.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "Weather in Paris?",
        "gen_ai.tool.definitions": '[{"type":"function","name":"get_weather",'
                                   '"parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]',
        "gen_ai.response.id": "msg_fake1",
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.response.finish_reasons": ("tool_calls",),
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Let me check.",
        "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.tool_calls.0.id": "toolu_01",
        "gen_ai.completion.0.tool_calls.0.name": "get_weather",
        "gen_ai.completion.0.tool_calls.0.arguments": '{"city": "Paris"}',
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
    }
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        ("gen_ai.system.message", {"gen_ai.system": "anthropic", "role": "system", "content": "You are terse."}),
        ("gen_ai.user.message", {"gen_ai.system": "anthropic", "role": "user", "content": "Weather in Paris?"}),
    ]
    (upstream,) = [s for s in spans if s.name == "POST" and s.kind is SpanKind.CLIENT]
    assert upstream.parent is not None
    assert upstream.parent.span_id == span.context.span_id
    assert int(fake.requests[0].headers["traceparent"].split("-")[2], 16) == upstream.context.span_id


def test_azure_failure(client: openai.OpenAI, span_exporter: InMemorySpanExporter, fake_url: str,
                       fake: FakeUpstream) -> None:
    fake.reply = Reply(status=503, json={"error": {"message": "the deployment is busy", "type": "server_error"}})
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="az/gpt-4o", messages=[USER], top_p=0.5)
    assert raised.value.status_code == 503

    span = chat_span(span_exporter)
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, "az: the deployment is busy")
    assert attributes_of(span) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "azure.ai.openai",
        "gen_ai.provider.name": "azure.ai.openai",
        "gen_ai.request.model": "az/gpt-4o",
        "gen_ai.request.stream": False,
        "gen_ai.request.top_p": 0.5,
        "server.address": "127.0.0.1",
        "server.port": port_of(fake_url),
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "Weather in Paris?",
        "error.type": "503",
    }


def cut_stream(client: openai.OpenAI, fake: FakeUpstream) -> str:
    """An OpenAI stream cut after "one two "; the text the SDK got before the error event."""
    fake.reply = Reply(events=openai_stream(["one ", "two ", "three"]), cut_after=3)
    text = ""
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="up/gpt-4o", messages=[USER], stream=True):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    return text


def test_stream_cut_after_it_started_ends_the_span_as_an_error(client: openai.OpenAI,
                                                               span_exporter: InMemorySpanExporter,
                                                               fake: FakeUpstream) -> None:
    assert cut_stream(client, fake) == "one two "

    span = chat_span(span_exporter)  # bounded wait: fails if the span never ends
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is not None
    assert span.status.description.startswith("the upstream connection was cut mid-stream: ")
    attributes = attributes_of(span, ttfc=True)
    assert attributes["error.type"] == "upstream_stream_error"


def test_stream_cut_after_it_started_records_what_had_arrived(client: openai.OpenAI,
                                                              span_exporter: InMemorySpanExporter, fake_url: str,
                                                              fake: FakeUpstream) -> None:
    cut_stream(client, fake)

    assert attributes_of(chat_span(span_exporter), ttfc=True) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "up/gpt-4o",
        "gen_ai.request.stream": True,
        "server.address": "127.0.0.1",
        "server.port": port_of(fake_url),
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "Weather in Paris?",
        "error.type": "upstream_stream_error",
        "gen_ai.response.id": "chatcmpl-fake2",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "one two ",
    }

"""``gen_ai.tool.definitions``: the tools a request offers, on its span as JSON text in the GenAI
conventions' flat form, only with content capture on, redacted by the one rule."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fakes import FakeUpstream, Reply, openai_completion
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import port_of, serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text
from otel_gateway.redaction import Redactor
from otel_gateway.telemetry import tool_definitions, tool_definitions_attribute

SK_KEY = "sk-canary-tooldefs-0123456789"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OPENAI_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                                "parameters": SCHEMA, "strict": True}}
FLAT = {"type": "function", "name": "get_weather", "description": "Weather of a city", "parameters": SCHEMA}


@pytest.mark.parametrize(("tools", "expected"), [
    pytest.param([OPENAI_TOOL], [FLAT], id="openai-chat"),
    pytest.param([{"name": "get_weather", "description": "Weather of a city", "input_schema": SCHEMA}], [FLAT],
                 id="anthropic"),
    pytest.param([{"type": "custom", "name": "get_weather", "input_schema": SCHEMA}],
                 [{"type": "function", "name": "get_weather", "parameters": SCHEMA}], id="anthropic-custom"),
    pytest.param([{"type": "function", "function": {"name": "ping"}}], [{"type": "function", "name": "ping"}],
                 id="no-description-no-parameters"),
    pytest.param([{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
                 [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}], id="server-tool-as-is"),
    pytest.param([OPENAI_TOOL, "odd"], [FLAT, "odd"], id="not-an-object-as-is"),
])
def test_tool_definitions(tools: Any, expected: list[Any]) -> None:
    text = tool_definitions(tools)
    assert text is not None
    assert json.loads(text) == expected


@pytest.mark.parametrize("tools", [None, [], "tools", {"type": "function"}, 3], ids=repr)
def test_no_tools_no_definitions(tools: Any) -> None:
    assert tool_definitions(tools) is None
    assert tool_definitions_attribute(tools, Redactor(), capture_content=True) == {}


def test_the_attribute_is_redacted_and_left_out_without_capture() -> None:
    tools = [{"name": "login", "description": f"uses {SK_KEY} and prov-secret-value", "input_schema": SCHEMA}]
    redactor = Redactor(["prov-secret-value"])
    assert tool_definitions_attribute(tools, redactor, capture_content=False) == {}
    (value,) = tool_definitions_attribute(tools, redactor, capture_content=True).values()
    assert json.loads(value)[0]["description"] == "uses [REDACTED] and [REDACTED]"
    assert list(tool_definitions_attribute(tools, redactor, capture_content=True)) == ["gen_ai.tool.definitions"]


# --- on the chatCompletions span --------------------------------------------------------------------


@pytest.fixture
def served(fake: FakeUpstream, fake_url: str, tracer_provider: TracerProvider) -> Iterator[Any]:
    """``served(capture)``: a gateway in front of the fake upstream, and an openai SDK client for it."""
    fake.reply = Reply(json=openai_completion("fine"))
    config = load_config_text(f"""\
type: gateway-providers-config
providers:
  - name: up
    type: openai
    base_url: {fake_url}/v1
    api_key: sk-upstream-secret
    models: [gpt-4o]
""", environ={})

    def start(capture: bool) -> openai.OpenAI:
        app = create_app(config, tracer_provider=tracer_provider, capture_content=capture)
        url = stack.enter_context(serve(app))
        return stack.enter_context(openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=10))

    with contextlib.ExitStack() as stack:
        yield start


@pytest.mark.parametrize("capture", [True, False], ids=["capture-on", "capture-off"])
def test_chat_span_carries_the_definitions(served: Any, span_exporter: InMemorySpanExporter, fake_url: str,
                                           capture: bool) -> None:
    tool = {"type": "function", "function": {"name": "login", "description": f"key {SK_KEY}",
                                             "parameters": SCHEMA}}
    client = served(capture)
    client.chat.completions.create(model="up/gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                   tools=[tool])  # type: ignore[list-item]

    (span,) = [s for s in span_exporter.get_finished_spans() if s.name == "chatCompletions"]
    expected: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "up/gpt-4o",
        "gen_ai.request.stream": False,
        "server.address": "127.0.0.1",
        "server.port": port_of(fake_url),
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "hi",
        "gen_ai.tool.definitions": '[{"type":"function","name":"login","description":"key [REDACTED]",'
                                   '"parameters":{"type":"object","properties":{"city":{"type":"string"}},'
                                   '"required":["city"]}}]',
        "gen_ai.response.id": "chatcmpl-fake1",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "fine",
        "gen_ai.completion.0.finish_reason": "stop",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
    }
    if not capture:
        for key in ("gen_ai.prompt.0.content", "gen_ai.tool.definitions", "gen_ai.completion.0.content"):
            del expected[key]
    assert dict(span.attributes or {}) == expected

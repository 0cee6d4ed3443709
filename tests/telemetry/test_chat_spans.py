"""The ``chatCompletions`` span and the trace around it, asserted exactly, driven by the real
``openai`` SDK against the gateway served over HTTP, in front of a scripted fake OpenAI upstream."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import openai
import orjson
import pytest
from fakes import FakeUpstream, Reply, openai_completion, openai_stream, sse
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from servers import chat_span, finished_spans, port_of, serve

from otel_gateway.app import create_app
from otel_gateway.config import GatewayConfig, load_config_text

MODEL = "up/gpt-4o"
UPSTREAM_MODEL = "gpt-4o-2024-08-06"
SYSTEM = {"role": "system", "content": "You are terse."}
USER = {"role": "user", "content": "Weather in Paris?"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_DEFINITIONS = (
    '[{"type":"function","name":"get_weather","description":"Current weather of a city",'
    '"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]'
)
"""``WEATHER_TOOL`` as ``gen_ai.tool.definitions`` (the GenAI conventions' flat form)."""
PROMPT_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
TOOL_CONVERSATION = [
    SYSTEM,
    USER,
    {"role": "assistant", "tool_calls": [PROMPT_CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
]
ANSWER_CALL = {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}}


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture
def fake(fake: FakeUpstream) -> FakeUpstream:
    return fake.reset(Reply(json=openai_completion()))


@pytest.fixture
def config(fake_url: str) -> GatewayConfig:
    return load_config_text(f"""\
type: gateway-providers-config
providers:
  - name: up
    type: openai
    base_url: {fake_url}/v1
    api_key: sk-upstream-secret
    models: {{gpt-4o: {UPSTREAM_MODEL}}}
  - name: demo
    type: mock
    models: [echo]
""", environ={})


Gateway = Callable[..., tuple[openai.OpenAI, str]]


@pytest.fixture
def gateway(config: GatewayConfig) -> Iterator[Gateway]:
    """``gateway(**create_app_kwargs)`` serves a gateway and gives an SDK client for it and its URL."""
    with contextlib.ExitStack() as stack:

        def start(**kwargs: Any) -> tuple[openai.OpenAI, str]:
            url = stack.enter_context(serve(create_app(config, **kwargs)))
            client = stack.enter_context(openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=10))
            return client, url

        yield start


@pytest.fixture
def traced(gateway: Gateway, tracer_provider: TracerProvider) -> openai.OpenAI:
    client, _ = gateway(tracer_provider=tracer_provider)
    return client


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    assert span.attributes is not None
    return dict(span.attributes)


def pop_ttfc(attributes: dict[str, Any]) -> None:
    ttfc = attributes.pop("gen_ai.response.time_to_first_chunk")
    assert isinstance(ttfc, float)
    assert 0 <= ttfc < 5


def events_of(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(event.name, dict(event.attributes or {})) for event in span.events]


def request_attributes(fake_url: str, *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "gen_ai.request.stream": stream,
        "server.address": "127.0.0.1",
        "server.port": port_of(fake_url),
        **extra,
    }


def without_content(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items()
            if not k.endswith((".content", ".arguments")) and k != "gen_ai.tool.definitions"}


def tool_stream(calls: Sequence[tuple[int, str | None, str | None, str]]) -> list[bytes]:
    """A streamed tool-call answer; ``calls`` are (index, id, name, argument fragment) deltas."""
    head = {"id": "chatcmpl-fake3", "object": "chat.completion.chunk", "created": 1700000000, "model": UPSTREAM_MODEL}
    frames = [sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None},
                                        "finish_reason": None}]})]
    for index, call_id, name, fragment in calls:
        call: dict[str, Any] = {"index": index, "function": {"arguments": fragment}}
        if call_id:
            call |= {"id": call_id, "type": "function"}
            call["function"]["name"] = name
        frames.append(sse({**head, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}))
    frames.append(sse({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}))
    usage = {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}
    frames.append(sse({**head, "choices": [], "usage": usage}))
    return [*frames, b"data: [DONE]\n\n"]


# -- the chatCompletions span -----------------------------------------------------------------------------------


def test_plain_chat(traced: openai.OpenAI, span_exporter: InMemorySpanExporter, fake_url: str,
                    fake: FakeUpstream) -> None:
    answer = traced.chat.completions.create(
        model=MODEL, messages=[SYSTEM, USER], max_tokens=50, temperature=0.2, top_p=0.9,
    )
    assert answer.choices[0].message.content == "Hello there"
    assert fake.requests[0].body["model"] == UPSTREAM_MODEL

    span = chat_span(span_exporter)
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert attributes_of(span) == request_attributes(
        fake_url,
        **{
            "gen_ai.request.max_tokens": 50,
            "gen_ai.request.temperature": 0.2,
            "gen_ai.request.top_p": 0.9,
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "You are terse.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "Weather in Paris?",
            "gen_ai.response.id": "chatcmpl-fake1",
            "gen_ai.response.model": UPSTREAM_MODEL,
            "gen_ai.response.finish_reasons": ("stop",),
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "Hello there",
            "gen_ai.completion.0.finish_reason": "stop",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 3,
        },
    )
    assert events_of(span) == [
        ("gen_ai.system.message", {"gen_ai.system": "openai", "role": "system", "content": "You are terse."}),
        ("gen_ai.user.message", {"gen_ai.system": "openai", "role": "user", "content": "Weather in Paris?"}),
    ]


def test_more_request_parameters(traced: openai.OpenAI, span_exporter: InMemorySpanExporter, fake_url: str) -> None:
    traced.chat.completions.create(
        model=MODEL, messages=[USER], max_completion_tokens=64, frequency_penalty=0.5, presence_penalty=-0.5,
        seed=7, stop=["\n\n", "END"], n=2,
    )
    attributes = attributes_of(chat_span(span_exporter))
    requested = {k: v for k, v in attributes.items() if k.startswith("gen_ai.request.")}
    assert requested == {
        "gen_ai.request.model": MODEL,
        "gen_ai.request.stream": False,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.frequency_penalty": 0.5,
        "gen_ai.request.presence_penalty": -0.5,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ("\n\n", "END"),
        "gen_ai.request.choice.count": 2,
    }


def test_stream(traced: openai.OpenAI, span_exporter: InMemorySpanExporter, fake_url: str,
                fake: FakeUpstream) -> None:
    fake.reply = Reply(events=openai_stream(["Hel", "lo", " there"]))
    stream = traced.chat.completions.create(model=MODEL, messages=[USER], stream=True, temperature=0)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello there"

    span = chat_span(span_exporter)
    assert span.status.status_code is StatusCode.UNSET
    attributes = attributes_of(span)
    pop_ttfc(attributes)
    assert attributes == request_attributes(
        fake_url,
        stream=True,
        **{
            "gen_ai.request.temperature": 0,
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "Weather in Paris?",
            "gen_ai.response.id": "chatcmpl-fake2",
            "gen_ai.response.model": UPSTREAM_MODEL,
            "gen_ai.response.finish_reasons": ("stop",),
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "Hello there",
            "gen_ai.completion.0.finish_reason": "stop",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 3,
        },
    )


@pytest.mark.parametrize("capture", [True, False], ids=["capture-on", "capture-off"])
def test_tool_call(gateway: Gateway, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter,
                   fake_url: str, fake: FakeUpstream, capture: bool) -> None:
    client, _ = gateway(tracer_provider=tracer_provider, capture_content=capture)
    fake.reply = Reply(json=openai_completion(None, tool_calls=[ANSWER_CALL], finish_reason="tool_calls"))
    answer = client.chat.completions.create(model=MODEL, messages=TOOL_CONVERSATION, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.tool_calls[0].id == "call_2"  # type: ignore[index]

    expected = request_attributes(
        fake_url,
        **{
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "You are terse.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "Weather in Paris?",
            "gen_ai.prompt.2.role": "assistant",
            "gen_ai.prompt.2.tool_calls.0.id": "call_1",
            "gen_ai.prompt.2.tool_calls.0.name": "get_weather",
            "gen_ai.prompt.2.tool_calls.0.arguments": '{"city":"Paris"}',
            "gen_ai.prompt.3.role": "tool",
            "gen_ai.prompt.3.content": "18C, sunny",
            "gen_ai.prompt.3.tool_call_id": "call_1",
            "gen_ai.tool.definitions": WEATHER_DEFINITIONS,
            "gen_ai.response.id": "chatcmpl-fake1",
            "gen_ai.response.model": UPSTREAM_MODEL,
            "gen_ai.response.finish_reasons": ("tool_calls",),
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": "call_2",
            "gen_ai.completion.0.tool_calls.0.name": "get_weather",
            "gen_ai.completion.0.tool_calls.0.arguments": '{"city":"Lyon"}',
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 3,
        },
    )
    span = chat_span(span_exporter)
    assert attributes_of(span) == (expected if capture else without_content(expected))
    system = {"gen_ai.system": "openai"}
    events = [
        ("gen_ai.system.message", {**system, "role": "system", "content": "You are terse."}),
        ("gen_ai.user.message", {**system, "role": "user", "content": "Weather in Paris?"}),
        ("gen_ai.assistant.message", {
            **system, "role": "assistant",
            "tool_calls": '[{"id":"call_1","type":"function","function":{"name":"get_weather",'
                          '"arguments":"{\\"city\\":\\"Paris\\"}"}}]',
        }),
        ("gen_ai.tool.message", {**system, "role": "tool", "content": "18C, sunny", "id": "call_1"}),
    ]
    if not capture:
        events = [(name, {k: v for k, v in attrs.items() if k not in ("content", "tool_calls")})
                  for name, attrs in events]
    assert events_of(span) == events


@pytest.mark.parametrize("capture", [True, False], ids=["capture-on", "capture-off"])
def test_streamed_tool_call_fragments_are_joined(gateway: Gateway, tracer_provider: TracerProvider,
                                                 span_exporter: InMemorySpanExporter, fake_url: str,
                                                 fake: FakeUpstream, capture: bool) -> None:
    client, _ = gateway(tracer_provider=tracer_provider, capture_content=capture)
    fake.reply = Reply(events=tool_stream([
        (0, "call_a", "get_weather", ""),
        (0, None, None, '{"ci'),
        (1, "call_b", "get_weather", '{"city"'),
        (0, None, None, 'ty":"Lyon"}'),
        (1, None, None, ':"Nice"}'),
    ]))
    stream = client.chat.completions.create(model=MODEL, messages=[USER], tools=[WEATHER_TOOL], stream=True)
    assert len(list(stream)) == 7  # the usage chunk only goes to clients that asked for it

    attributes = attributes_of(chat_span(span_exporter))
    pop_ttfc(attributes)
    expected = request_attributes(
        fake_url,
        stream=True,
        **{
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "Weather in Paris?",
            "gen_ai.tool.definitions": WEATHER_DEFINITIONS,
            "gen_ai.response.id": "chatcmpl-fake3",
            "gen_ai.response.model": UPSTREAM_MODEL,
            "gen_ai.response.finish_reasons": ("tool_calls",),
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": "call_a",
            "gen_ai.completion.0.tool_calls.0.name": "get_weather",
            "gen_ai.completion.0.tool_calls.0.arguments": '{"city":"Lyon"}',
            "gen_ai.completion.0.tool_calls.1.id": "call_b",
            "gen_ai.completion.0.tool_calls.1.name": "get_weather",
            "gen_ai.completion.0.tool_calls.1.arguments": '{"city":"Nice"}',
            "gen_ai.usage.input_tokens": 40,
            "gen_ai.usage.output_tokens": 9,
        },
    )
    assert attributes == (expected if capture else without_content(expected))


def test_upstream_failure(traced: openai.OpenAI, span_exporter: InMemorySpanExporter, fake_url: str,
                          fake: FakeUpstream) -> None:
    fake.reply = Reply(status=500, json={"error": {"message": "the model is on fire", "type": "server_error"}})
    with pytest.raises(openai.InternalServerError) as error:
        traced.chat.completions.create(model=MODEL, messages=[SYSTEM, USER], max_tokens=5)
    assert error.value.status_code == 502

    span = chat_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "up: the model is on fire"
    assert attributes_of(span) == request_attributes(
        fake_url,
        **{
            "gen_ai.request.max_tokens": 5,
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "You are terse.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "Weather in Paris?",
            "error.type": "500",
        },
    )


def test_stream_failing_before_the_first_chunk(traced: openai.OpenAI, span_exporter: InMemorySpanExporter,
                                               fake: FakeUpstream) -> None:
    fake.reply = Reply(events=openai_stream(["a", "b"]), cut_after=0)
    with pytest.raises(openai.APIStatusError) as error:
        traced.chat.completions.create(model=MODEL, messages=[USER], stream=True)
    assert error.value.status_code == 502

    span = chat_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    attributes = attributes_of(span)
    assert attributes["error.type"] == "upstream_stream_error"
    assert not [k for k in attributes if k.startswith(("gen_ai.completion.", "gen_ai.response.", "gen_ai.usage."))]


def test_capture_content_off_keeps_every_other_attribute(gateway: Gateway, tracer_provider: TracerProvider,
                                                         span_exporter: InMemorySpanExporter, fake_url: str) -> None:
    client, _ = gateway(tracer_provider=tracer_provider, capture_content=False)
    client.chat.completions.create(model=MODEL, messages=[SYSTEM, USER], max_tokens=50, temperature=0.2, top_p=0.9)

    span = chat_span(span_exporter)
    assert attributes_of(span) == request_attributes(
        fake_url,
        **{
            "gen_ai.request.max_tokens": 50,
            "gen_ai.request.temperature": 0.2,
            "gen_ai.request.top_p": 0.9,
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.response.id": "chatcmpl-fake1",
            "gen_ai.response.model": UPSTREAM_MODEL,
            "gen_ai.response.finish_reasons": ("stop",),
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "stop",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 3,
        },
    )
    assert events_of(span) == [
        ("gen_ai.system.message", {"gen_ai.system": "openai", "role": "system"}),
        ("gen_ai.user.message", {"gen_ai.system": "openai", "role": "user"}),
    ]


def test_message_events(traced: openai.OpenAI, span_exporter: InMemorySpanExporter) -> None:
    messages: list[Any] = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": "Hello", "tool_calls": [PROMPT_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
        {"role": "function", "name": "look", "content": "meh"},  # valid, but no event of its own
    ]
    traced.chat.completions.create(model=MODEL, messages=messages)
    system = {"gen_ai.system": "openai"}
    assert events_of(chat_span(span_exporter)) == [
        ("gen_ai.system.message", {**system, "role": "developer", "content": "Be brief."}),
        ("gen_ai.user.message", {**system, "role": "user", "content": '[{"type":"text","text":"Hi"}]'}),
        ("gen_ai.assistant.message", {**system, "role": "assistant", "content": "Hello",
                                      "tool_calls": orjson.dumps([PROMPT_CALL]).decode()}),
        ("gen_ai.tool.message", {**system, "role": "tool", "content": "done", "id": "call_1"}),
        ("gen_ai.unknown.message", {**system, "role": "function", "content": "meh"}),
    ]


def test_mock_provider(traced: openai.OpenAI, span_exporter: InMemorySpanExporter) -> None:
    traced.chat.completions.create(model="demo/echo", messages=[USER])
    attributes = attributes_of(chat_span(span_exporter))
    response_id = attributes.pop("gen_ai.response.id")
    assert isinstance(response_id, str)
    assert response_id.startswith("chatcmpl-mock-")
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "otel_gateway.mock",
        "gen_ai.provider.name": "otel_gateway.mock",
        "gen_ai.request.model": "demo/echo",
        "gen_ai.request.stream": False,
        "server.address": "mock.invalid",
        "server.port": 80,
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "Weather in Paris?",
        "gen_ai.response.model": "echo",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Weather in Paris?",
        "gen_ai.completion.0.finish_reason": "stop",
        "gen_ai.usage.input_tokens": 6,
        "gen_ai.usage.output_tokens": 3,
    }


# -- tracing off, unsampled -------------------------------------------------------------------------------------


def test_tracing_off_exports_nothing(gateway: Gateway, tracer_provider: TracerProvider,
                                     span_exporter: InMemorySpanExporter, fake: FakeUpstream) -> None:
    client, _ = gateway()  # the fixture's provider exists but is not given to the gateway
    assert client.chat.completions.create(model=MODEL, messages=[USER]).choices[0].message.content == "Hello there"
    fake.reply = Reply(events=openai_stream(["a", "b"]))
    assert len(list(client.chat.completions.create(model=MODEL, messages=[USER], stream=True))) == 4
    time.sleep(0.05)
    assert span_exporter.get_finished_spans() == ()
    assert "traceparent" not in fake.requests[0].headers


def test_tracing_off_does_no_sdk_work(gateway: Gateway, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    real_start_span = SdkTracer.start_span

    def spy(self: SdkTracer, name: str, *args: Any, **kwargs: Any) -> Any:
        started.append(name)
        return real_start_span(self, name, *args, **kwargs)

    monkeypatch.setattr(SdkTracer, "start_span", spy)
    global_provider = TracerProvider()  # even an SDK provider set globally is not read
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: global_provider)
    with global_provider.get_tracer("probe").start_as_current_span("probe"):
        pass
    assert started == ["probe"], "the spy sees SDK spans"
    started.clear()

    client, _ = gateway()
    client.chat.completions.create(model=MODEL, messages=[USER], tools=[WEATHER_TOOL])
    fake.reply = Reply(events=openai_stream(["a", "b"]))
    assert len(list(client.chat.completions.create(model=MODEL, messages=[USER], stream=True))) == 4
    fake.reply = Reply(status=500, json={"error": {"message": "boom"}})
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=[USER])
    client.chat.completions.create(model="demo/echo", messages=[USER], stream=True).close()

    assert started == []
    assert not [r for r in fake.requests if "traceparent" in r.headers]
    global_provider.shutdown()


def test_unsampled(gateway: Gateway, span_exporter: InMemorySpanExporter, fake: FakeUpstream) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    try:
        client, _ = gateway(tracer_provider=provider)
        assert client.chat.completions.create(model=MODEL, messages=[USER]).choices[0].message.content == "Hello there"
        fake.reply = Reply(events=openai_stream(["a", "b"]))
        assert len(list(client.chat.completions.create(model=MODEL, messages=[USER], stream=True))) == 4
        fake.reply = Reply(status=500, json={"error": {"message": "boom"}})
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=MODEL, messages=[USER])
        time.sleep(0.05)
        assert span_exporter.get_finished_spans() == ()
        # the trace context still travels upstream, marked as not sampled
        assert int(fake.requests[0].headers["traceparent"].split("-")[3], 16) & 1 == 0
    finally:
        provider.shutdown()


# -- the span tree and propagation ------------------------------------------------------------------------------


def test_span_tree(gateway: Gateway, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter,
                   fake: FakeUpstream) -> None:
    client, url = gateway(tracer_provider=tracer_provider)
    client.chat.completions.create(model=MODEL, messages=[USER])

    spans = finished_spans(span_exporter, "POST /v1/chat/completions", "chatCompletions", "POST")
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    (chat,) = [s for s in spans if s.name == "chatCompletions"]
    (upstream,) = [s for s in spans if s.name == "POST" and s.kind is SpanKind.CLIENT]
    assert len(spans) == 3

    assert server.name == "POST /v1/chat/completions"
    assert server.parent is None
    assert server.status.status_code is StatusCode.UNSET
    attributes = attributes_of(server)
    assert attributes.pop("user_agent.original").startswith("OpenAI/Python ")
    assert attributes == {
        "http.request.method": "POST",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
        "url.path": "/v1/chat/completions",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "server.address": "127.0.0.1",
        "server.port": port_of(url),
        "client.address": "127.0.0.1",
    }

    assert chat.parent is not None
    assert chat.parent.span_id == server.context.span_id
    assert upstream.parent is not None
    assert upstream.parent.span_id == chat.context.span_id
    assert {s.context.trace_id for s in spans} == {server.context.trace_id}

    # traceparent sent upstream: same trace, the upstream HTTP span as parent
    version, trace_id, parent_id, flags = fake.requests[0].headers["traceparent"].split("-")
    assert version == "00"
    assert int(flags, 16) & 1 == 1, "sampled"
    assert int(trace_id, 16) == server.context.trace_id
    assert int(parent_id, 16) == upstream.context.span_id


def test_server_span_of_an_upstream_failure(gateway: Gateway, tracer_provider: TracerProvider,
                                            span_exporter: InMemorySpanExporter, fake: FakeUpstream) -> None:
    client, _ = gateway(tracer_provider=tracer_provider)
    fake.reply = Reply(status=503, json={"error": {"message": "overloaded"}})
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model=MODEL, messages=[USER])
    spans = finished_spans(span_exporter, "POST /v1/chat/completions", "chatCompletions")
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes is not None
    assert (server.attributes["http.response.status_code"], server.attributes["error.type"]) == (503, "503")
    assert attributes_of(chat_span(span_exporter))["error.type"] == "503"


def test_incoming_traceparent_is_continued(traced: openai.OpenAI, span_exporter: InMemorySpanExporter,
                                           fake: FakeUpstream) -> None:
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    traced.chat.completions.create(
        model=MODEL, messages=[USER], extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    spans = finished_spans(span_exporter, "POST /v1/chat/completions", "chatCompletions", "POST")
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.parent is not None
    assert server.parent.is_remote
    assert server.parent.span_id == int(parent_id, 16)
    assert {s.context.trace_id for s in spans} == {int(trace_id, 16)}
    assert fake.requests[0].headers["traceparent"].split("-")[1] == trace_id


# -- a client that leaves mid-stream ----------------------------------------------------------------------------


def test_client_disconnect_mid_stream_ends_the_span(traced: openai.OpenAI, span_exporter: InMemorySpanExporter,
                                                    fake_url: str, fake: FakeUpstream) -> None:
    fake.reply = Reply(events=openai_stream([f"part{i} " for i in range(20)]), event_delay=0.5)
    stream = traced.chat.completions.create(model=MODEL, messages=[USER], stream=True)
    received = ""
    for chunk in stream:
        received += chunk.choices[0].delta.content or ""
        if received:
            break
    stream.close()
    assert received == "part0 "

    span = chat_span(span_exporter)  # bounded wait: fails if the span is never ended
    attributes = attributes_of(span)
    pop_ttfc(attributes)
    assert attributes == request_attributes(
        fake_url,
        stream=True,
        **{
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "Weather in Paris?",
            "error.type": "cancelled",
            "gen_ai.response.id": "chatcmpl-fake2",
            "gen_ai.response.model": UPSTREAM_MODEL,
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "part0 ",
        },
    )
    assert fake.stream_abandoned.wait(5), "the gateway kept reading the upstream after the client left"

"""A client that leaves mid-answer: the gateway stops the upstream at once and keeps serving."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from fakes import FakeUpstream, Reply, anthropic_text_stream, openai_completion, openai_stream
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text

MESSAGES = [{"role": "user", "content": "Tell me a long story"}]
WORDS = [f"w{i} " for i in range(200)]


@pytest.fixture
def gateway(served_fake: tuple[FakeUpstream, str], tracer_provider: TracerProvider) -> Iterator[str]:
    url = served_fake[1]
    config = load_config_text(f"""
type: gateway-providers-config
providers:
  - name: oai
    type: openai
    base_url: {url}/v1
    api_key: sk-test-openai
    models: [gpt-4o]
  - name: claude
    type: anthropic
    base_url: {url}
    api_key: sk-ant-test-key
    models: [claude-sonnet-4-5]
  - name: demo
    type: mock
    models: [echo]
""")
    with serve(create_app(config, tracer_provider=tracer_provider)) as gateway_url:
        yield gateway_url


@pytest.fixture
def client(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="client-key", max_retries=0, timeout=10) as sdk:
        yield sdk


def read_two_chunks_then_leave(gateway: str, model: str, headers: dict[str, str] | None = None) -> list[str]:
    """Raw SSE over httpx: reads two ``data`` events, then closes the connection."""
    events: list[str] = []
    with httpx.Client(base_url=gateway, timeout=10) as http, http.stream(
        "POST", "/v1/chat/completions", json={"model": model, "messages": MESSAGES, "stream": True},
        headers=headers or {},
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
            if len(events) == 2:
                break
    return events


def chat_spans(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The finished ``chatCompletions`` spans, once there are ``count`` of them (bounded wait)."""
    deadline = time.monotonic() + 5
    while True:
        spans = [s for s in exporter.get_finished_spans() if s.name == "chatCompletions"]
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.01)


def assert_still_serving(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="demo/echo", messages=[{"role": "user", "content": "still here"}])
    assert completion.choices[0].message.content == "still here"


@pytest.mark.parametrize(("model", "events"), [
    pytest.param("oai/gpt-4o", openai_stream(WORDS), id="openai"),
    pytest.param("claude/claude-sonnet-4-5", anthropic_text_stream(WORDS), id="anthropic"),
])
def test_leaving_mid_stream_closes_the_upstream(
    gateway: str, client: openai.OpenAI, fake: FakeUpstream, span_exporter: InMemorySpanExporter,
    model: str, events: list[bytes],
) -> None:
    fake.reply = Reply(events=events, event_delay=0.05)

    received = read_two_chunks_then_leave(gateway, model)

    assert len(received) == 2
    assert fake.stream_abandoned.wait(5), "the gateway kept reading the upstream after the client left"
    (span,) = chat_spans(span_exporter, 1)
    assert span.attributes is not None
    assert span.attributes["error.type"] == "cancelled"
    assert_still_serving(client)


def test_leaving_an_sdk_stream_closes_the_upstream(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.reply = Reply(events=openai_stream(WORDS), event_delay=0.05)

    stream = client.chat.completions.create(model="oai/gpt-4o", messages=MESSAGES, stream=True)
    first, second = next(stream), next(stream)
    stream.close()

    assert [first.choices[0].delta.content, second.choices[0].delta.content] == ["", "w0 "]
    assert fake.stream_abandoned.wait(5), "the gateway kept reading the upstream after the client left"
    assert_still_serving(client)


def test_leaving_a_mock_stream_cancels_it(
    gateway: str, client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    text = " ".join(WORDS)
    events: list[str] = []
    with httpx.Client(base_url=gateway, timeout=10) as http, http.stream(
        "POST", "/v1/chat/completions",
        json={"model": "demo/echo", "messages": [{"role": "user", "content": text}], "stream": True},
        headers={"x-mock-stream-chunks": "200", "x-mock-chunk-delay-ms": "50"},
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line)
            if len(events) == 2:
                break

    (span,) = chat_spans(span_exporter, 1)
    assert span.attributes is not None
    assert (span.attributes["error.type"], span.attributes["gen_ai.request.model"]) == ("cancelled", "demo/echo")
    # What had been streamed when the client left: a beginning of the answer, not all of it.
    partial = span.attributes["gen_ai.completion.0.content"]
    assert isinstance(partial, str)
    assert text.startswith(partial)
    assert 0 < len(partial) < len(text)
    assert_still_serving(client)


def test_leaving_while_waiting_for_an_answer_keeps_the_gateway_serving(
    gateway: str, client: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.reply = Reply(json=openai_completion("too late"), delay=0.5)

    with httpx.Client(base_url=gateway, timeout=0.1) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json={"model": "oai/gpt-4o", "messages": MESSAGES})

    fake.reply = Reply(json=openai_completion("right on time"))
    completion = client.chat.completions.create(model="oai/gpt-4o", messages=MESSAGES)
    assert completion.choices[0].message.content == "right on time"
    assert [r.path for r in fake.requests] == ["/v1/chat/completions", "/v1/chat/completions"]
    assert_still_serving(client)


def test_leaving_while_waiting_for_an_answer_cancels_the_upstream_call(
    gateway: str, fake: FakeUpstream, span_exporter: InMemorySpanExporter
) -> None:
    fake.reply = Reply(json=openai_completion("never read"), delay=3)

    left = time.time()
    with httpx.Client(base_url=gateway, timeout=0.2) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json={"model": "oai/gpt-4o", "messages": MESSAGES})
    (span,) = chat_spans(span_exporter, 1)

    assert span.end_time is not None and span.end_time / 1e9 - left < 1.5  # not after the upstream's 3 s
    assert span.attributes is not None and span.attributes["error.type"] == "cancelled"

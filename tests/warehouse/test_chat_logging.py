"""One record per chat request, through the real ``openai`` SDK against ``create_app`` served over
HTTP: plain, streamed, tool calls, failed, rate limited, cancelled by the client, malformed, cut
mid-stream; field by field against the seed's shape; and the queue flushed at shutdown."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from fakes import FakeUpstream, Reply, openai_completion, openai_stream
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text
from otel_gateway.warehouse import MemoryStore
from otel_gateway.warehouse._tokens import encoding

ALICE_KEY = "gw-alice-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "Hi"}]
METADATA = {"project_id": "proj_design", "project_name": "UX Design", "thread_id": "thread_29", "team": "ml"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


@pytest.fixture(scope="module")
def fake_url() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with serve(fake.app) as url:
        yield fake, url


@pytest.fixture
def fake(fake_url: tuple[FakeUpstream, str]) -> FakeUpstream:
    upstream = fake_url[0]
    upstream.reply = Reply()
    upstream.requests.clear()
    upstream.stream_abandoned.clear()
    return upstream


def config_text(url: str, logging: str = "flush_interval_ms: 10") -> str:
    return f"""\
type: gateway-providers-config
providers:
  - {{name: oai, type: openai, base_url: "{url}/v1", api_key: sk-test-provider-0123456789, models: [gpt-4o]}}
  - {{name: demo, type: mock, models: [echo]}}
---
type: gateway-auth-config
keys:
  - {{name: alice, key: {ALICE_KEY}, subject: "user:alice", tenant: acme}}
---
type: gateway-rate-limiting-config
rules:
  - {{id: free-plan, when: {{metadata: {{plan: free}}}}, limit_to: 1, unit: requests_per_minute}}
---
type: gateway-logging-config
store: none
environment: test
{logging}
"""


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def gateway(fake_url: tuple[FakeUpstream, str], store: MemoryStore, tracer_provider: TracerProvider) -> Iterator[str]:
    config = load_config_text(config_text(fake_url[1]), environ={})
    with serve(create_app(config, tracer_provider=tracer_provider, log_store=store)) as url:
        yield url


@pytest.fixture
def client(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key=ALICE_KEY, max_retries=0, timeout=10) as sdk:
        yield sdk


def record_of(store: MemoryStore, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for record in store.records:
            if record["attributes"]["id"] == request_id:
                return record
        time.sleep(0.01)
    raise AssertionError(f"no record for request {request_id}; have {[r['attributes']['id'] for r in store.records]}")


def server_span_ids(exporter: InMemorySpanExporter) -> tuple[str, str]:
    (span,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert span.context is not None
    return format_trace_id(span.context.trace_id), format_span_id(span.context.span_id)


def pop_volatile(record: dict[str, Any]) -> dict[str, Any]:
    """Checks and removes what differs from run to run: the time, latency and transport headers."""
    attributes = record["attributes"]
    assert abs(time.time() - _seconds(record["timestamp"])) < 30
    record["timestamp"] = "<now>"
    latency = attributes["metadata"].pop("latency")
    assert isinstance(latency, int) and 0 <= latency < 10_000
    headers = attributes.pop("request_headers")
    assert headers["authorization"] == "[REDACTED]"
    assert headers["content-type"] == "application/json"
    return record


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    assert timestamp.endswith("Z") and len(timestamp) == len("2025-03-05T16:03:20.123Z")
    return datetime.fromisoformat(timestamp).timestamp()


def n(text: str) -> int:
    return len(encoding("o200k_base").encode_ordinary(text))


RESOURCE = {"service.name": "otel-gateway", "service.version": "0.1.0", "deployment.environment": "test"}
AUTHORIZATION = hashlib.sha256(f"Bearer {ALICE_KEY}".encode()).hexdigest()


def base_attributes(request_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": request_id, "threadId": None, "org_id": "acme", "user_id": "user:alice", "project_id": None,
        "provider": "oai", "model": "oai/gpt-4o", "endpoint": "/v1/chat/completions", "method": "POST",
        "stream": False, "query": "", "cache": {"status": None, "enabled": False},
        "authorization": AUTHORIZATION, "key_name": "alice", **changes,
    }


SEED_KEYS = {"timestamp", "resource", "name", "attributes"}
SEED_ATTRIBUTES = {"id", "threadId", "org_id", "user_id", "project_id", "provider", "model", "request", "response",
                   "metadata"}
WAREHOUSE_ATTRIBUTES = {"cache", "usage", "cost", "expected_usage", "expected_cost", "authorization", "trace_id",
                        "span_id"}
SEED_METADATA = {"projectId", "projectName", "latency", "tokens", "cost", "status", "provider_request_id"}


def assert_seed_shape(record: dict[str, Any], exporter: InMemorySpanExporter, request_id: str) -> None:
    """Every key of the seed's record (and of the warehouse seed's) is there, with the seed's types,
    and the record is linked to the request's trace."""
    attributes, metadata = record["attributes"], record["attributes"]["metadata"]
    assert set(record) == SEED_KEYS
    assert (record["name"], record["resource"]) == ("ai_gateway_request_log", RESOURCE)
    assert _seconds(record["timestamp"]) > 0
    assert set(attributes) >= SEED_ATTRIBUTES | WAREHOUSE_ATTRIBUTES
    assert set(metadata) >= SEED_METADATA
    assert attributes["id"] == request_id
    assert (attributes["org_id"], attributes["user_id"], attributes["authorization"]) == (
        "acme", "user:alice", AUTHORIZATION)
    assert set(attributes["cache"]) == {"status", "enabled"}
    assert isinstance(metadata["latency"], int) and metadata["latency"] >= 0
    assert set(metadata["tokens"]) == {"input", "output", "total"}
    assert all(isinstance(v, int) for v in metadata["tokens"].values())
    assert metadata["cost"] is None or isinstance(metadata["cost"], float)
    assert metadata["status"] in ("success", "error", "rate_limited", "cancelled")
    assert (attributes["trace_id"], attributes["span_id"]) == server_span_ids(exporter)


def test_a_plain_request(client: openai.OpenAI, fake: FakeUpstream, store: MemoryStore,
                         span_exporter: InMemorySpanExporter) -> None:
    fake.reply = Reply(json=openai_completion("Hello there"), headers={"x-request-id": "req_upstream_1"})
    raw = client.chat.completions.with_raw_response.create(
        model="oai/gpt-4o", messages=MESSAGES, temperature=0.7,
        extra_headers={"x-gateway-metadata": json.dumps(METADATA)})
    request_id = raw.headers["x-gateway-request-id"]
    record = pop_volatile(record_of(store, request_id))
    trace_id, span_id = server_span_ids(span_exporter)
    usage = {"model": "gpt-4o-2024-08-06", "prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
             "cached_tokens": 0, "calculated_by": "provider"}
    cost = {"input_cost": 0.00003, "output_cost": 0.00003, "total_cost": 0.00006,  # 12 * $2.50/M, 3 * $10/M
            "input_cost_cents": 0.003, "output_cost_cents": 0.003, "total_cost_cents": 0.006}
    assert record == {
        "timestamp": "<now>",
        "resource": RESOURCE,
        "name": "ai_gateway_request_log",
        "attributes": base_attributes(
            request_id, threadId="thread_29", project_id="proj_design",
            request={"messages": MESSAGES, "model": "oai/gpt-4o", "temperature": 0.7},
            response=raw.http_response.json(), error=None,
            usage=usage, cost=cost, expected_usage=usage, expected_cost=cost,
            trace_id=trace_id, span_id=span_id,
            metadata={
                "team": "ml", "project_id": "proj_design", "project_name": "UX Design", "thread_id": "thread_29",
                "projectId": "proj_design", "projectName": "UX Design",
                "tokens": {"input": 12, "output": 3, "total": 15}, "cost": 0.00006, "status": "success",
                "provider_request_id": "req_upstream_1", "http_status": 200, "provider_type": "openai",
                "upstream_model": "gpt-4o", "attempts": 1,
            },
        ),
    }
    assert len(store.records) == 1


def test_a_streamed_request(client: openai.OpenAI, fake: FakeUpstream, store: MemoryStore,
                            span_exporter: InMemorySpanExporter) -> None:
    frames = openai_stream(["Hel", "lo"])
    fake.reply = Reply(events=frames)
    stream = client.chat.completions.create(model="oai/gpt-4o", messages=MESSAGES, stream=True)
    request_id = stream.response.headers["x-gateway-request-id"]
    received = [chunk.choices[0].delta.content for chunk in stream]
    assert received == ["", "Hel", "lo", None]
    record = pop_volatile(record_of(store, request_id))
    trace_id, span_id = server_span_ids(span_exporter)
    chunks = [orjson.loads(frame.removeprefix(b"data: ")) for frame in frames[:-1]]
    sent, usage_chunk = chunks[:-1], chunks[-1]  # the client did not ask for the usage chunk
    usage = {"model": "gpt-4o-2024-08-06", "prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14,
             "cached_tokens": 0, "calculated_by": "provider"}
    cost = {"input_cost": 0.00003, "output_cost": 0.00002, "total_cost": 0.00005,
            "input_cost_cents": 0.003, "output_cost_cents": 0.002, "total_cost_cents": 0.005}
    assert record == {
        "timestamp": "<now>",
        "resource": RESOURCE,
        "name": "ai_gateway_request_log",
        "attributes": base_attributes(
            request_id, stream=True,
            request={"messages": MESSAGES, "model": "oai/gpt-4o", "stream": True},
            response={
                "object": "chat.completion", "id": "chatcmpl-fake2", "created": 1700000000,
                "model": "gpt-4o-2024-08-06",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                             "finish_reason": "stop"}],
                "usage": usage_chunk["usage"],
                "streamed_data": sent,
            },
            error=None, usage=usage, cost=cost, expected_usage=usage, expected_cost=cost,
            trace_id=trace_id, span_id=span_id,
            metadata={"projectId": None, "projectName": None, "tokens": {"input": 12, "output": 2, "total": 14},
                      # no request-id header: the stream's id, from its first chunk
                      "cost": 0.00005, "status": "success", "provider_request_id": "chatcmpl-fake2",
                      "http_status": 200, "provider_type": "openai", "upstream_model": "gpt-4o", "attempts": 1},
        ),
    }


def test_a_tool_call_counted_by_tiktoken(client: openai.OpenAI, fake: FakeUpstream, store: MemoryStore,
                                         span_exporter: InMemorySpanExporter) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    answer = openai_completion(None, tool_calls=[call], finish_reason="tool_calls")
    del answer["usage"]  # a provider that reports no usage
    fake.reply = Reply(json=answer)
    raw = client.chat.completions.with_raw_response.create(model="oai/gpt-4o", messages=MESSAGES, tools=TOOLS)
    record = record_of(store, raw.headers["x-gateway-request-id"])
    assert_seed_shape(record, span_exporter, raw.headers["x-gateway-request-id"])
    attributes = record["attributes"]
    assert attributes["response"] == raw.http_response.json() == answer
    sent_tools = attributes["request"]["tools"]
    assert sent_tools == TOOLS
    prompt = 3 + 3 + n("user") + n("Hi") + n(orjson.dumps(sent_tools).decode())
    completion = n("get_weather") + n('{"city":"Paris"}')
    usage = {"model": "gpt-4o-2024-08-06", "prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion, "cached_tokens": 0, "calculated_by": "tiktoken",
             "encoding": "o200k_base"}
    assert attributes["usage"] == attributes["expected_usage"] == usage
    total = (prompt * 2.5 + completion * 10) / 1_000_000
    assert attributes["cost"]["total_cost"] == pytest.approx(total, abs=1e-15)
    assert attributes["metadata"]["tokens"] == {"input": prompt, "output": completion, "total": prompt + completion}


def test_a_streamed_tool_call_is_assembled(client: openai.OpenAI, store: MemoryStore) -> None:
    stream = client.chat.completions.create(model="demo/echo", messages=MESSAGES, tools=TOOLS, stream=True)
    request_id = stream.response.headers["x-gateway-request-id"]
    deltas = [chunk.choices[0].delta for chunk in stream if chunk.choices]
    attributes = record_of(store, request_id)["attributes"]
    (choice,) = attributes["response"]["choices"]
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["function"] == {"name": "get_weather", "arguments": '{"city":"mock"}'}
    assert tool_call["id"].startswith("call_") and choice["finish_reason"] == "tool_calls"
    assert len(attributes["response"]["streamed_data"]) == len(deltas)
    assert attributes["usage"]["calculated_by"] == "provider"
    assert (attributes["provider"], attributes["metadata"]["provider_type"]) == ("demo", "otel_gateway.mock")
    assert attributes["cost"]["total_cost"] == 0.0  # the mock is free


def test_a_failed_request(client: openai.OpenAI, fake: FakeUpstream, store: MemoryStore,
                          span_exporter: InMemorySpanExporter) -> None:
    fake.reply = Reply(status=500, json={"error": {"message": "the upstream broke", "type": "server_error"}},
                       headers={"x-request-id": "req_upstream_500"})
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="oai/gpt-4o", messages=MESSAGES)
    response = caught.value.response
    assert response.status_code == 502
    record = record_of(store, response.headers["x-gateway-request-id"])
    assert_seed_shape(record, span_exporter, response.headers["x-gateway-request-id"])
    attributes = record["attributes"]
    assert attributes["error"] == attributes["response"] == response.json()
    assert (attributes["usage"], attributes["cost"], attributes["expected_usage"], attributes["expected_cost"]) == (
        None, None, None, None)
    metadata = attributes["metadata"]
    assert {k: metadata[k] for k in ("status", "http_status", "provider_request_id", "cost", "tokens", "attempts")} \
        == {"status": "error", "http_status": 502, "provider_request_id": "req_upstream_500", "cost": None,
            "tokens": {"input": 0, "output": 0, "total": 0}, "attempts": 1}
    assert attributes["provider"] == "oai"


def test_a_rate_limited_request(client: openai.OpenAI, store: MemoryStore,
                                span_exporter: InMemorySpanExporter) -> None:
    headers = {"x-gateway-metadata": json.dumps({"plan": "free"})}
    client.chat.completions.create(model="demo/echo", messages=MESSAGES, extra_headers=headers)
    span_exporter.clear()
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="demo/echo", messages=MESSAGES, extra_headers=headers)
    response = caught.value.response
    record = record_of(store, response.headers["x-gateway-request-id"])
    assert_seed_shape(record, span_exporter, response.headers["x-gateway-request-id"])
    attributes = record["attributes"]
    assert attributes["error"] == attributes["response"] == response.json()
    assert attributes["error"]["error"]["type"] == "rate_limit_error"
    metadata = attributes["metadata"]
    assert (metadata["status"], metadata["http_status"], metadata["plan"], metadata["attempts"]) == (
        "rate_limited", 429, "free", 0)
    assert (attributes["provider"], attributes["model"], attributes["usage"]) == (None, "demo/echo", None)
    assert [r["attributes"]["metadata"]["status"] for r in store.records] == ["success", "rate_limited"]


def test_a_request_cancelled_by_the_client(client: openai.OpenAI, store: MemoryStore,
                                           span_exporter: InMemorySpanExporter) -> None:
    text = " ".join(f"w{i}" for i in range(100))
    stream = client.chat.completions.create(
        model="demo/echo", messages=[{"role": "user", "content": text}], stream=True,
        extra_headers={"x-mock-stream-chunks": "100", "x-mock-chunk-delay-ms": "30"})
    request_id = stream.response.headers["x-gateway-request-id"]
    first, second = next(stream), next(stream)
    stream.close()
    assert first.choices[0].delta.content is not None and second.choices[0].delta.content is not None
    record = record_of(store, request_id)
    assert_seed_shape(record, span_exporter, request_id)
    attributes = record["attributes"]
    metadata = attributes["metadata"]
    assert (metadata["status"], metadata["http_status"], attributes["error"]) == ("cancelled", 499, None)
    chunks = attributes["response"]["streamed_data"]
    assert 2 <= len(chunks) < 100
    content = attributes["response"]["choices"][0]["message"]["content"]
    assert content == "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    assert text.startswith(content) and len(content) < len(text)
    assert attributes["response"]["choices"][0]["finish_reason"] is None
    cl100k = encoding("cl100k_base")
    prompt = 3 + 3 + len(cl100k.encode_ordinary("user")) + len(cl100k.encode_ordinary(text))
    assert attributes["usage"] == {"model": "echo", "prompt_tokens": prompt,
                                   "completion_tokens": len(cl100k.encode_ordinary(content)),
                                   "total_tokens": prompt + len(cl100k.encode_ordinary(content)), "cached_tokens": 0,
                                   "calculated_by": "tiktoken", "encoding": "cl100k_base"}


def test_a_stream_cut_midway(client: openai.OpenAI, store: MemoryStore) -> None:
    stream = client.chat.completions.create(
        model="demo/echo", messages=[{"role": "user", "content": "one two three four"}], stream=True,
        extra_headers={"x-mock-stream-chunks": "4", "x-mock-fail-after-chunks": "2"})
    request_id = stream.response.headers["x-gateway-request-id"]
    with pytest.raises(openai.APIError):
        list(stream)
    attributes = record_of(store, request_id)["attributes"]
    assert (attributes["metadata"]["status"], attributes["metadata"]["http_status"]) == ("error", 200)
    assert attributes["error"]["error"]["type"] == "upstream_error"
    assert len(attributes["response"]["streamed_data"]) == 2
    content = attributes["response"]["choices"][0]["message"]["content"]
    assert content and "one two three four".startswith(content) and content != "one two three four"


@pytest.mark.parametrize(("body", "status", "code"), [
    pytest.param(b"{not json", 400, "invalid_json", id="malformed"),
    pytest.param(b'{"model": "demo/echo", "messages": []}', 400, "missing_required_parameter", id="invalid"),
    pytest.param(b'{"model": "demo/echo", "messages": [{"role": "user", "content": "' + b"x" * 20_000 + b'"}]}',
                 413, "request_too_large", id="too-large"),
])
def test_requests_refused_by_the_endpoint(fake_url: tuple[FakeUpstream, str], store: MemoryStore, body: bytes,
                                          status: int, code: str) -> None:
    text = config_text(fake_url[1]) + "---\ntype: gateway-server-config\nmax_request_body_bytes: 10000\n"
    with serve(create_app(load_config_text(text, environ={}), log_store=store)) as url:
        response = httpx.post(f"{url}/v1/chat/completions", content=body,
                              headers={"authorization": f"Bearer {ALICE_KEY}", "content-type": "application/json"})
        assert response.status_code == status
        attributes = record_of(store, response.headers["x-gateway-request-id"])["attributes"]
    assert attributes["error"] == attributes["response"] == response.json()
    assert attributes["error"]["error"]["code"] == code
    assert (attributes["metadata"]["status"], attributes["metadata"]["http_status"]) == ("error", status)
    assert attributes["provider"] is None and attributes["usage"] is None


def test_the_queue_is_flushed_when_the_server_shuts_down(fake_url: tuple[FakeUpstream, str], store: MemoryStore,
                                                         tmp_path: Path) -> None:
    jsonl = tmp_path / "records.jsonl"
    text = config_text(fake_url[1], f"flush_interval_ms: 600000\nbatch_size: 1000\njsonl: {jsonl}")
    ids = []
    with serve(create_app(load_config_text(text, environ={}), log_store=store)) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=ALICE_KEY, max_retries=0)
        for i in range(3):
            raw = sdk.chat.completions.with_raw_response.create(model="demo/echo",
                                                                messages=[{"role": "user", "content": f"m{i}"}])
            ids.append(raw.headers["x-gateway-request-id"])
        time.sleep(0.1)
        assert store.records == [] and not jsonl.exists()  # queued: the batch is not full, the interval far
    assert [r["attributes"]["id"] for r in store.records] == ids
    assert [orjson.loads(line)["attributes"]["id"] for line in jsonl.read_bytes().splitlines()] == ids


CANARY_SECRET = os.urandom(12).hex()
CANARY_KEY = f"sk-canary-client-{CANARY_SECRET}"


def refused_record(request_id: str, error: dict[str, Any], http_status: int, exporter: InMemorySpanExporter,
                   **changes: Any) -> dict[str, Any]:
    """A request the identity layer refused: no body read, no model, no provider, nothing spent."""
    trace_id, span_id = server_span_ids(exporter)
    attributes = base_attributes(
        request_id, provider=None, model=None, request=None, response=error, error=error,
        usage=None, cost=None, expected_usage=None, expected_cost=None, trace_id=trace_id, span_id=span_id,
        metadata={"projectId": None, "projectName": None, "tokens": {"input": 0, "output": 0, "total": 0},
                  "cost": None, "status": "error", "provider_request_id": None, "http_status": http_status,
                  "provider_type": None, "upstream_model": None, "attempts": 0},
        **changes)
    return {"timestamp": "<now>", "resource": RESOURCE, "name": "ai_gateway_request_log", "attributes": attributes}


def test_a_request_with_an_unknown_key_is_logged_anonymous(gateway: str, store: MemoryStore,
                                                           span_exporter: InMemorySpanExporter) -> None:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key=CANARY_KEY, max_retries=0, timeout=10) as sdk, \
            pytest.raises(openai.AuthenticationError) as caught:
        sdk.chat.completions.create(model="oai/gpt-4o", messages=MESSAGES, extra_query={"key": CANARY_KEY})
    response = caught.value.response
    request_id = response.headers["x-gateway-request-id"]
    error = {"error": {"message": "Invalid gateway key.", "type": "authentication_error", "code": "invalid_api_key",
                       "param": None}}
    assert response.json() == error
    record = pop_volatile(record_of(store, request_id))
    assert record == refused_record(
        request_id, error, 401, span_exporter, org_id="default", user_id="user:anonymous", key_name=None,
        query="key=[REDACTED]", authorization=hashlib.sha256(f"Bearer {CANARY_KEY}".encode()).hexdigest())
    assert CANARY_SECRET not in json.dumps(record)
    assert len(store.records) == 1


def test_a_request_with_bad_metadata_is_logged(client: openai.OpenAI, store: MemoryStore,
                                               span_exporter: InMemorySpanExporter) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="oai/gpt-4o", messages=MESSAGES,
                                       extra_headers={"x-gateway-metadata": '{"n": 1}'})
    response = caught.value.response
    request_id = response.headers["x-gateway-request-id"]
    error = {"error": {"message": "x-gateway-metadata value of 'n' must be a string.",
                       "type": "invalid_request_error", "code": "invalid_metadata", "param": "x-gateway-metadata"}}
    assert response.json() == error
    record = pop_volatile(record_of(store, request_id))
    assert record == refused_record(request_id, error, 400, span_exporter)  # the key was good: alice is known
    assert ALICE_KEY not in json.dumps(record)
    assert len(store.records) == 1

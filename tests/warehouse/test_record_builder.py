"""Building a record from an exchange: the seed's shape field by field, redaction, scrubbing,
streams, token counts and costs, cache hits, failures."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from otel_gateway.calls import Outcome
from otel_gateway.config import load_config_text
from otel_gateway.identity import Identity
from otel_gateway.warehouse import Exchange, RecordBuilder
from otel_gateway.warehouse._tokens import encoding

PROVIDER_KEY = "sk-provider-secret-0123456789"
CLIENT_KEY = "gw-client-key-abcdef"
CONFIG = f"""\
type: gateway-providers-config
providers:
  - {{name: oai, type: openai, api_key: {PROVIDER_KEY}, models: [gpt-4o]}}
  - {{name: demo, type: mock, models: [echo]}}
---
type: gateway-auth-config
keys:
  - {{name: alice, key: {CLIENT_KEY}, subject: "user:alice", tenant: acme}}
---
type: gateway-logging-config
environment: staging
redact_headers: [X-Internal-Token]
pricing:
  demo/echo: {{input: 1, output: 2}}
"""
BODY = {"model": "oai/gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.7}
COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1741190600, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 48, "completion_tokens": 865, "total_tokens": 913},
}


@pytest.fixture(scope="module")
def builder() -> RecordBuilder:
    return RecordBuilder(load_config_text(CONFIG, environ={}), service_name="gw-test")


def exchange(**fields: Any) -> Exchange:
    defaults: dict[str, Any] = {
        "request_id": "req-1", "endpoint": "/v1/chat/completions", "started_at": 1741190600.123,
        "started_monotonic": 100.0, "finished_monotonic": 106.25,
        "identity": Identity("user:alice", "acme", key_name="alice"),
        "metadata": {"project_id": "proj_design", "project_name": "UX Design", "thread_id": "thread_29",
                     "team": "ml", "status": "not-ours"},
        "request_headers": {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json",
                            "x-internal-token": "t0p", "api-key": "a", "x-api-key": "b", "cookie": "c=1"},
        "query": "api-key=xyz&keep=1&token=abc",
        "request": BODY, "model": "oai/gpt-4o", "response": COMPLETION, "usage": COMPLETION["usage"],
        "outcome": Outcome(provider="oai", provider_type="openai", upstream_model="gpt-4o",
                           provider_request_id="req_abc", attempts=1),
        "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
    }
    return Exchange(**{**defaults, **fields})


def test_a_whole_record(builder: RecordBuilder) -> None:
    record = builder.build(exchange())
    usage = {"model": "gpt-4o-2024-08-06", "prompt_tokens": 48, "completion_tokens": 865, "total_tokens": 913,
             "cached_tokens": 0, "calculated_by": "provider"}
    # 48 * 2.50 + 865 * 10.00 per million
    costs = {"input_cost": 0.00012, "output_cost": 0.00865, "total_cost": 0.00877,
             "input_cost_cents": 0.012, "output_cost_cents": 0.865, "total_cost_cents": 0.877}
    assert record == {
        "timestamp": "2025-03-05T16:03:20.123Z",
        "resource": {"service.name": "gw-test", "service.version": "0.1.0", "deployment.environment": "staging"},
        "name": "ai_gateway_request_log",
        "attributes": {
            "id": "req-1",
            "threadId": "thread_29",
            "org_id": "acme",
            "user_id": "user:alice",
            "project_id": "proj_design",
            "provider": "oai",
            "model": "oai/gpt-4o",
            "endpoint": "/v1/chat/completions",
            "method": "POST",
            "stream": False,
            "query": "api-key=[REDACTED]&keep=1&token=[REDACTED]",
            "request_headers": {"authorization": "[REDACTED]", "content-type": "application/json",
                                "x-internal-token": "[REDACTED]", "api-key": "[REDACTED]", "x-api-key": "[REDACTED]",
                                "cookie": "[REDACTED]"},
            "request": BODY,
            "response": COMPLETION,
            "error": None,
            "cache": {"status": None, "enabled": False},
            "usage": usage,
            "cost": costs,
            "expected_usage": usage,
            "expected_cost": costs,
            "authorization": hashlib.sha256(f"Bearer {CLIENT_KEY}".encode()).hexdigest(),
            "key_name": "alice",
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331",
            "metadata": {
                "team": "ml",
                "projectId": "proj_design",
                "projectName": "UX Design",
                "latency": 6250,
                "tokens": {"input": 48, "output": 865, "total": 913},
                "cost": 0.00877,
                "status": "success",
                "provider_request_id": "req_abc",
                "http_status": 200,
                "provider_type": "openai",
                "upstream_model": "gpt-4o",
                "attempts": 1,
                "project_id": "proj_design",
                "project_name": "UX Design",
                "thread_id": "thread_29",
            },
        },
    }


def test_secrets_are_scrubbed_from_every_string(builder: RecordBuilder) -> None:
    answer = {**COMPLETION, "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": f"provider {PROVIDER_KEY}, client {CLIENT_KEY}, other sk-live-abcdefghijkl"}}]}
    body = {**BODY, "messages": [{"role": "user", "content": f"my key is {CLIENT_KEY}"}], CLIENT_KEY: 1}
    record = builder.build(exchange(response=answer, request=body))
    content = record["attributes"]["response"]["choices"][0]["message"]["content"]
    assert content == "provider [REDACTED], client [REDACTED], other [REDACTED]"
    scrubbed = [{"role": "user", "content": "my key is [REDACTED]"}]
    assert record["attributes"]["request"] == {**BODY, "messages": scrubbed, "[REDACTED]": 1}
    assert exchange().response is COMPLETION  # the exchange's own objects are never changed


def test_the_callers_own_key_is_scrubbed_even_without_auth(builder: RecordBuilder) -> None:
    anonymous = RecordBuilder(load_config_text("type: gateway-providers-config\nproviders:\n"
                                               "  - {name: demo, type: mock, models: [echo]}\n", environ={}))
    body = {"model": "demo/echo", "messages": [{"role": "user", "content": "echo my-own-key-123"}]}
    record = anonymous.build(exchange(request=body, request_headers={"authorization": "Bearer my-own-key-123"}))
    assert record["attributes"]["request"]["messages"][0]["content"] == "echo [REDACTED]"


CHUNKS = [
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
     "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
]


def test_a_stream_is_assembled_with_every_chunk(builder: RecordBuilder) -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
             "prompt_tokens_details": {"cached_tokens": 4}}
    record = builder.build(exchange(stream=True, response=None, streamed_data=CHUNKS, usage=usage))
    attributes = record["attributes"]
    assert attributes["response"] == {
        "object": "chat.completion", "id": "c1", "created": 1, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
        "usage": usage, "streamed_data": CHUNKS,
    }
    assert attributes["usage"] == {"model": "gpt-4o-2024-08-06", "prompt_tokens": 10, "completion_tokens": 2,
                                   "total_tokens": 12, "cached_tokens": 4, "calculated_by": "provider"}
    # 6 * 2.50 + 4 * 1.25 + 2 * 10.00 per million
    assert attributes["cost"]["total_cost"] == 0.00004
    assert attributes["stream"] is True


def test_tokens_are_counted_when_the_provider_reports_none(builder: RecordBuilder) -> None:
    answer = {key: value for key, value in COMPLETION.items() if key != "usage"}
    record = builder.build(exchange(response=answer, usage=None))
    o200k = encoding("o200k_base")
    prompt = 3 + 3 + len(o200k.encode_ordinary("user")) + len(o200k.encode_ordinary("Hi"))
    completion = len(o200k.encode_ordinary("Hello!"))
    usage = {"model": "gpt-4o-2024-08-06", "prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion, "cached_tokens": 0, "calculated_by": "tiktoken",
             "encoding": "o200k_base"}
    assert (prompt, completion) == (8, 2)
    assert record["attributes"]["usage"] == usage
    assert record["attributes"]["metadata"]["tokens"] == {"input": 8, "output": 2, "total": 10}
    assert record["attributes"]["cost"]["total_cost"] == 0.00004  # 8 * 2.50 + 2 * 10.00 per million


def test_a_cache_hit_costs_nothing_but_keeps_what_it_would_have(builder: RecordBuilder) -> None:
    outcome = Outcome(provider="oai", provider_type="openai", upstream_model="gpt-4o", cache_status="HIT")
    attributes = builder.build(exchange(outcome=outcome))["attributes"]
    assert attributes["cache"] == {"status": "HIT", "enabled": True}
    assert attributes["usage"] == {"model": "gpt-4o-2024-08-06", "prompt_tokens": 0, "completion_tokens": 0,
                                   "total_tokens": 0, "cached_tokens": 0, "calculated_by": "provider"}
    assert set(attributes["cost"].values()) == {0.0}
    assert attributes["expected_usage"]["total_tokens"] == 913
    assert attributes["expected_cost"]["total_cost"] == 0.00877
    assert attributes["metadata"]["tokens"] == {"input": 0, "output": 0, "total": 0}
    assert attributes["metadata"]["cost"] == 0.0


@pytest.mark.parametrize(("status", "http_status", "recorded"), [
    pytest.param("error", 502, 502, id="error"),
    pytest.param("rate_limited", 429, 429, id="rate-limited"),
    pytest.param("cancelled", 200, 499, id="cancelled"),
])
def test_no_answer(builder: RecordBuilder, status: str, http_status: int, recorded: int) -> None:
    error = None if status == "cancelled" else {"error": {"message": "no", "type": "t", "code": "c", "param": None}}
    attributes = builder.build(exchange(response=None, usage=None, status=status, http_status=http_status,
                                        error=error))["attributes"]
    assert (attributes["response"], attributes["error"]) == (error, error)
    assert (attributes["usage"], attributes["cost"], attributes["expected_usage"], attributes["expected_cost"]) == (
        None, None, None, None)
    metadata = attributes["metadata"]
    assert (metadata["status"], metadata["http_status"], metadata["cost"], metadata["tokens"]) == (
        status, recorded, None, {"input": 0, "output": 0, "total": 0})


def test_a_request_that_never_parsed(builder: RecordBuilder) -> None:
    attributes = builder.build(exchange(request=None, model=None, response=None, usage=None, outcome=Outcome(),
                                        metadata={}, status="error", http_status=400, query="",
                                        error={"error": {"message": "bad json"}}))["attributes"]
    assert (attributes["provider"], attributes["model"], attributes["request"], attributes["threadId"]) == (
        None, None, None, None)
    assert attributes["metadata"]["provider_request_id"] is None and attributes["query"] == ""


def test_an_unknown_price_is_null_not_zero(builder: RecordBuilder) -> None:
    outcome = Outcome(provider="oai", provider_type="openai", upstream_model="gpt-unknown")
    answer = {**COMPLETION, "model": "gpt-unknown"}
    attributes = builder.build(exchange(outcome=outcome, response=answer))["attributes"]
    assert (attributes["cost"], attributes["expected_cost"], attributes["metadata"]["cost"]) == (None, None, None)
    assert attributes["usage"]["total_tokens"] == 913

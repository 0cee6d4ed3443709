"""The stored records of the endpoints beyond chat, as the request log writes them (not only the
exchanges handed to it): embeddings and ``/v1/messages`` with their usage and their cost from the
shipped pricing table, moderations, a streamed message with its events, a file upload by its
metadata, and a passed-through path by its metadata only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from fakes import Reply, anthropic_message, anthropic_text_stream

from otel_gateway.warehouse import MemoryStore

from .endpoint_fakes import ProxyUpstream, RawReply
from .harness import CLIENT_KEY, Gateway

OAI = {"x-gateway-provider": "oai"}


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10) as sdk:
        yield sdk


def stored(gateway: Gateway, request_id: str) -> dict[str, Any]:
    """The attributes of the record of ``request_id`` in the gateway's store."""
    store = gateway.log.store
    assert isinstance(store, MemoryStore)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for record in store.records:
            if record["attributes"]["id"] == request_id:
                assert record["name"] == "ai_gateway_request_log"
                return dict(record["attributes"])
        time.sleep(0.01)
    raise AssertionError(f"no record of {request_id}")


def cents(dollars: dict[str, float]) -> dict[str, float]:
    return {**dollars, **{f"{k}_cents": v * 100 for k, v in dollars.items()}}


def test_an_embeddings_record_has_usage_and_cost(gateway: Gateway, client: openai.OpenAI,
                                                 upstream: ProxyUpstream) -> None:
    answer = {"object": "list", "model": "text-embedding-3-small", "usage": {"prompt_tokens": 3, "total_tokens": 3},
              "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}]}
    upstream.reply = Reply(json=answer)

    raw = client.embeddings.with_raw_response.create(model="oai/text-embedding-3-small", input="hello world",
                                                     encoding_format="float")

    record = stored(gateway, raw.headers["x-gateway-request-id"])
    usage = {"model": "text-embedding-3-small", "prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3,
             "cached_tokens": 0, "calculated_by": "provider"}
    assert (record["endpoint"], record["provider"], record["model"]) == (
        "/v1/embeddings", "oai", "oai/text-embedding-3-small")
    assert (record["request"], record["response"]) == (
        {"model": "oai/text-embedding-3-small", "input": "hello world", "encoding_format": "float"}, answer)
    assert record["usage"] == record["expected_usage"] == usage
    assert record["cost"] == pytest.approx(cents({"input_cost": 3 * 0.02e-6, "output_cost": 0.0,
                                                  "total_cost": 3 * 0.02e-6}))
    assert {k: record["metadata"][k] for k in ("status", "http_status", "tokens")} == {
        "status": "success", "http_status": 200, "tokens": {"input": 3, "output": 0, "total": 3}}
    assert record["request_headers"]["authorization"] == "[REDACTED]"


def test_a_moderations_record(gateway: Gateway, client: openai.OpenAI, upstream: ProxyUpstream) -> None:
    answer = {"id": "modr-1", "model": "omni-moderation-2024-09-26", "results": [{"flagged": False}]}
    upstream.reply = Reply(json=answer, headers={"x-request-id": "req_mod"})

    raw = client.moderations.with_raw_response.create(model="oai/omni-moderation-latest", input="hello")

    record = stored(gateway, raw.headers["x-gateway-request-id"])
    assert (record["endpoint"], record["response"], record["usage"], record["cost"]) == (
        "/v1/moderations", answer, None, None)  # moderations report no usage: nothing to count or price
    assert (record["metadata"]["status"], record["metadata"]["provider_request_id"]) == ("success", "req_mod")


def test_a_messages_record_is_priced_with_its_cached_tokens(gateway: Gateway, upstream: ProxyUpstream) -> None:
    answer = {**anthropic_message([{"type": "text", "text": "Hi"}]),
              "usage": {"input_tokens": 20, "output_tokens": 4, "cache_read_input_tokens": 50}}
    upstream.reply = Reply(json=answer)

    with anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0, timeout=10) as sdk:
        raw = sdk.messages.with_raw_response.create(model="claude/sonnet", max_tokens=10,
                                                    messages=[{"role": "user", "content": "Hi"}])

    record = stored(gateway, raw.headers["x-gateway-request-id"])
    assert (record["endpoint"], record["provider"], record["response"]) == ("/v1/messages", "claude", answer)
    assert record["usage"] == {"model": "claude-sonnet-4-5-20250929", "prompt_tokens": 70, "completion_tokens": 4,
                               "total_tokens": 74, "cached_tokens": 50, "calculated_by": "provider"}
    input_cost = (20 * 3.00 + 50 * 0.30) / 1e6  # claude-sonnet-4-5: $3/M input, $0.30/M cache reads, $15/M out
    assert record["cost"] == pytest.approx(cents({"input_cost": input_cost, "output_cost": 4 * 15e-6,
                                                  "total_cost": input_cost + 4 * 15e-6}))
    assert record["metadata"]["tokens"] == {"input": 70, "output": 4, "total": 74}


def test_a_streamed_messages_record_keeps_every_event(gateway: Gateway, http: httpx.Client,
                                                      upstream: ProxyUpstream) -> None:
    frames = anthropic_text_stream(["Hel", "lo"])
    upstream.reply = Reply(events=frames)

    response = http.post("/v1/messages", json={"model": "claude/sonnet", "max_tokens": 10, "stream": True,
                                               "messages": [{"role": "user", "content": "Hi"}]})

    record = stored(gateway, response.headers["x-gateway-request-id"])
    assert record["stream"] is True
    assert record["response"]["streamed_data"] == [orjson.loads(f.partition(b"data: ")[2]) for f in frames]
    assert record["response"]["content"] == [{"type": "text", "text": "Hello"}]
    assert (record["usage"]["prompt_tokens"], record["usage"]["completion_tokens"]) == (12, 3)
    assert record["cost"]["total_cost"] == pytest.approx((12 * 3.00 + 3 * 15.00) / 1e6)


def test_an_upload_record_holds_its_metadata_not_its_bytes(gateway: Gateway, client: openai.OpenAI,
                                                           upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json={"id": "file-1", "object": "file", "purpose": "batch"})
    content = b'{"custom_id": "secret-line"}\n' * 100

    raw = client.files.with_raw_response.create(file=("batch.jsonl", content, "application/jsonl"),
                                                purpose="batch", extra_headers=OAI)

    record = stored(gateway, raw.headers["x-gateway-request-id"])
    assert (record["endpoint"], record["method"], record["provider"], record["metadata"]["status"]) == (
        "/v1/files", "POST", "oai", "success")
    assert record["request"]["files"] == [{"field": "file", "filename": "batch.jsonl",
                                           "content_type": "application/jsonl"}]
    assert record["request"]["size"] > len(content)
    assert "secret-line" not in orjson.dumps(record).decode()


def test_a_passed_through_record_holds_metadata_only(gateway: Gateway, http: httpx.Client,
                                                     upstream: ProxyUpstream) -> None:
    upstream.reply = RawReply(body=b'{"id": "resp_1", "output_text": "the answer"}', headers={"x-request-id": "r9"})

    response = http.post("/v1/responses", json={"model": "gpt-4o", "input": "a private prompt"}, headers=OAI)

    record = stored(gateway, response.headers["x-gateway-request-id"])
    assert (record["endpoint"], record["provider"], record["usage"], record["cost"]) == (
        "/v1/responses", "oai", None, None)
    assert record["request"] == {"content_type": "application/json", "size": len(response.request.content)}
    assert record["response"] == {"content_type": "application/json", "size": len(response.content)}
    assert (record["metadata"]["status"], record["metadata"]["provider_request_id"]) == ("success", "r9")
    text = orjson.dumps(record).decode()
    assert "private prompt" not in text and "the answer" not in text

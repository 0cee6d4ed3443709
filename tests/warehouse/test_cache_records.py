"""The response cache as the request log records it, through the real ``openai`` SDK against
``create_app`` served over HTTP: a repeated question is answered from the cache (the upstream is not
called again) and its record says HIT, with usage and cost zero and ``expected_*`` what the answer
would have cost; a streamed repeat is replayed as a stream and logged with its chunks; ``no-cache``
goes upstream again and is logged as a MISS with its real cost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fakes import FakeUpstream, Reply, openai_completion
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text
from otel_gateway.warehouse import MemoryStore

MESSAGES: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]
USAGE = {"model": "gpt-4o-2024-08-06", "prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
         "cached_tokens": 0, "calculated_by": "provider"}
COST = {"input_cost": 0.00003, "output_cost": 0.00003, "total_cost": 0.00006,  # 12 * $2.50/M, 3 * $10/M
        "input_cost_cents": 0.003, "output_cost_cents": 0.003, "total_cost_cents": 0.006}
ZERO_USAGE = {**USAGE, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
ZERO_COST = dict.fromkeys(COST, 0.0)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def client(served_fake: tuple[FakeUpstream, str], fake: FakeUpstream, store: MemoryStore) -> Iterator[openai.OpenAI]:
    fake.reset(Reply(json=openai_completion()))
    config = load_config_text(f"""\
type: gateway-providers-config
providers:
  - {{name: oai, type: openai, base_url: "{served_fake[1]}/v1", api_key: sk-cache-test-0123456789, models: [gpt-4o]}}
---
type: gateway-cache-config
---
type: gateway-logging-config
store: none
flush_interval_ms: 10
""", environ={})
    with serve(create_app(config, log_store=store)) as url, openai.OpenAI(
            base_url=f"{url}/v1", api_key="client", max_retries=0, timeout=10) as sdk:
        yield sdk


def attributes_of(store: MemoryStore, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for record in store.records:
            if record["attributes"]["id"] == request_id:
                return record["attributes"]
        time.sleep(0.01)
    raise AssertionError(f"no record for request {request_id}")


def ask(client: openai.OpenAI, **kwargs: Any) -> tuple[str, str | None, Any]:
    """(request id, x-gateway-cache-status, the answer: a dict, or the list of chunks of a stream)."""
    raw = client.chat.completions.with_raw_response.create(model="oai/gpt-4o", messages=MESSAGES, **kwargs)
    parsed = raw.parse()
    answer = [chunk.to_dict() for chunk in parsed] if kwargs.get("stream") else parsed.to_dict()
    return raw.headers["x-gateway-request-id"], raw.headers.get("x-gateway-cache-status"), answer


def test_a_hit_is_logged_as_hit_at_no_cost(client: openai.OpenAI, fake: FakeUpstream, store: MemoryStore) -> None:
    first_id, first_status, first = ask(client)
    fake.reply = Reply(json=openai_completion("Something else"))  # a second upstream call would say so
    second_id, second_status, second = ask(client)

    assert (first_status, second_status, len(fake.requests)) == ("MISS", "HIT", 1)
    assert second == first
    miss, hit = attributes_of(store, first_id), attributes_of(store, second_id)
    assert (miss["cache"], miss["usage"], miss["cost"], miss["expected_usage"], miss["expected_cost"]) == (
        {"status": "MISS", "enabled": True}, USAGE, COST, USAGE, COST)
    assert (hit["cache"], hit["usage"], hit["cost"], hit["expected_usage"], hit["expected_cost"]) == (
        {"status": "HIT", "enabled": True}, ZERO_USAGE, ZERO_COST, USAGE, COST)
    assert hit["response"] == second
    metadata = hit["metadata"]
    assert (metadata["status"], metadata["http_status"], metadata["tokens"], metadata["cost"],
            metadata["attempts"]) == ("success", 200, {"input": 0, "output": 0, "total": 0}, 0.0, 0)
    assert (hit["provider"], hit["model"]) == ("oai", "oai/gpt-4o")


def test_a_streamed_hit_is_replayed_and_logged_with_its_chunks(client: openai.OpenAI, fake: FakeUpstream,
                                                                store: MemoryStore) -> None:
    ask(client)
    request_id, status, chunks = ask(client, stream=True, stream_options={"include_usage": True})

    assert (status, len(fake.requests)) == ("HIT", 1)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello there"
    hit = attributes_of(store, request_id)
    assert (hit["stream"], hit["cache"]) == (True, {"status": "HIT", "enabled": True})
    response = hit["response"]
    assert response["streamed_data"] == chunks
    assert response["choices"][0]["message"] == {"role": "assistant", "content": "Hello there"}
    assert response["choices"][0]["finish_reason"] == "stop"
    assert (hit["usage"], hit["cost"], hit["expected_usage"], hit["expected_cost"]) == (
        ZERO_USAGE, ZERO_COST, USAGE, COST)


def test_no_cache_goes_upstream_and_is_logged_as_a_miss(client: openai.OpenAI, fake: FakeUpstream,
                                                        store: MemoryStore) -> None:
    ask(client)
    fake.reply = Reply(json=openai_completion("Fresh"))
    request_id, status, answer = ask(client, extra_headers={"x-gateway-cache": "no-cache"})

    assert (status, len(fake.requests)) == ("MISS", 2)
    assert answer["choices"][0]["message"]["content"] == "Fresh"
    fresh = attributes_of(store, request_id)
    assert (fresh["cache"], fresh["usage"], fresh["cost"], fresh["metadata"]["attempts"]) == (
        {"status": "MISS", "enabled": True}, USAGE, COST, 1)

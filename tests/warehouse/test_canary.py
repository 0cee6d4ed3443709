"""Canary keys: a client's gateway key and a provider's API key, echoed back by a misbehaving
upstream, appear in no sink: store rows, the JSONL file, OTLP logs, spans, the gateway's own log
lines, the error bodies clients get."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fakes import FakeUpstream, Reply, sse
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text
from otel_gateway.warehouse import MemoryStore

CLIENT_SECRET = os.urandom(12).hex()
PROVIDER_SECRET = os.urandom(12).hex()
CLIENT_KEY = f"sk-canary-client-{CLIENT_SECRET}"
PROVIDER_KEY = f"sk-canary-provider-{PROVIDER_SECRET}"
SECRETS = (CLIENT_SECRET, PROVIDER_SECRET)
CLIENT_SIDE_LOGGERS = ("openai", "httpx", "httpcore")


@pytest.fixture
def fake() -> Iterator[tuple[FakeUpstream, str]]:
    upstream = FakeUpstream()
    with serve(upstream.app) as url:
        yield upstream, url


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_canary_keys_appear_in_no_sink(
    fake: tuple[FakeUpstream, str], tmp_path: Path, tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
) -> None:
    upstream, url = fake
    caplog.set_level(logging.DEBUG)
    jsonl = tmp_path / "records.jsonl"
    config = load_config_text(f"""\
type: gateway-providers-config
providers:
  - {{name: oai, type: openai, base_url: "{url}/v1", api_key: {PROVIDER_KEY}, models: [gpt-4o]}}
  - {{name: demo, type: mock, models: [echo]}}
---
type: gateway-auth-config
keys:
  - {{name: canary, key: {CLIENT_KEY}, subject: "user:canary", tenant: acme}}
---
type: gateway-logging-config
store: none
jsonl: {jsonl}
flush_interval_ms: 10
redact_headers: [x-custom-auth]
""", environ={})
    store = MemoryStore()
    log_exporter = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    echo = {"error": {"message": f"Incorrect API key provided: {PROVIDER_KEY}. You passed Bearer {PROVIDER_KEY}",
                      "type": "invalid_request_error", "code": "invalid_api_key"}}
    error_bodies: list[str] = []
    with serve(create_app(config, tracer_provider=tracer_provider, logger_provider=logger_provider,
                          log_store=store)) as gateway:
        client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
        upstream.reply = Reply(status=401, json=echo)
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="oai/gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                               stream=stream)
            error_bodies.append(caught.value.response.text)
        upstream.reply = Reply(status=400, json=echo)
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="oai/gpt-4o", messages=[{"role": "user", "content": "hi"}])
        error_bodies.append(bad.value.response.text)
        # the client's key also in other headers and the query string
        answer = client.chat.completions.create(
            model="demo/echo", messages=[{"role": "user", "content": "hello"}],
            extra_headers={"x-api-key": CLIENT_KEY, "api-key": CLIENT_KEY, "x-custom-auth": CLIENT_KEY,
                           "x-gateway-metadata": json.dumps({"project_id": "p1"})},
            extra_query={"key": CLIENT_KEY, "keep": "yes"}, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices) == "hello"
        refused = httpx.post(f"{gateway}/v1/chat/completions", headers={"authorization": f"Bearer {CLIENT_KEY}x"},
                             json={"model": "demo/echo", "messages": [{"role": "user", "content": "x"}]})
        assert refused.status_code == 401
        error_bodies.append(refused.text)
        deadline = time.monotonic() + 5
        while len(store.records) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    # the sinks got the records (else there would be nothing to leak) ...
    records = store.records
    assert [r["attributes"]["metadata"]["status"] for r in records] == ["error", "error", "error", "success",
                                                                          "error"]
    assert "[REDACTED]" in json.dumps(records[0]["attributes"]["error"])
    echoed = records[3]["attributes"]
    credentials = ("authorization", "x-api-key", "api-key", "x-custom-auth")
    assert {k: echoed["request_headers"][k] for k in credentials} == dict.fromkeys(credentials, "[REDACTED]")
    assert echoed["query"] == "key=[REDACTED]&keep=yes"
    otlp = [item.log_record.body for item in log_exporter.get_finished_logs()]
    assert records[4]["attributes"]["metadata"]["http_status"] == 401  # the wrong key's, logged too
    assert len(otlp) == 5
    spans = span_exporter.get_finished_spans()
    assert len(spans) >= 5
    gateway_lines = [r.getMessage() + (r.exc_text or "") for r in caplog.records
                     if not r.name.startswith(CLIENT_SIDE_LOGGERS)]
    # ... and no sink holds either key
    assert {
        "store rows": leaks(json.dumps(records)),
        "jsonl file": leaks(jsonl.read_text()),
        "otlp logs": leaks(json.dumps(otlp)),
        "spans": leaks("\n".join(span.to_json() for span in spans)),
        "gateway log lines": leaks("\n".join(gateway_lines)),
        "error bodies": leaks("\n".join(error_bodies)),
    } == {sink: [] for sink in ("store rows", "jsonl file", "otlp logs", "spans", "gateway log lines", "error bodies")}
    logger_provider.shutdown()


def test_a_key_echoed_in_a_mid_stream_error_event_appears_in_no_sink(
    fake: tuple[FakeUpstream, str], tmp_path: Path, tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
) -> None:
    upstream, url = fake
    caplog.set_level(logging.DEBUG)
    config = load_config_text(f"""\
type: gateway-providers-config
providers:
  - {{name: oai, type: openai, base_url: "{url}/v1", api_key: {PROVIDER_KEY}, models: [gpt-4o]}}
---
type: gateway-logging-config
store: none
flush_interval_ms: 10
""", environ={})
    store = MemoryStore()
    head = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    upstream.reply = Reply(events=[
        sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]}),
        sse({"error": {"message": f"stream broke for key {PROVIDER_KEY}", "type": "server_error"}}),
    ])
    with serve(create_app(config, tracer_provider=tracer_provider, log_store=store)) as gateway:
        client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="client", max_retries=0, timeout=10)
        with pytest.raises(openai.APIError) as cut:
            list(client.chat.completions.create(model="oai/gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                                stream=True))
        deadline = time.monotonic() + 5
        while not store.records and time.monotonic() < deadline:
            time.sleep(0.01)
    (record,) = store.records
    assert "[REDACTED]" in record["attributes"]["error"]["error"]["message"]
    gateway_lines = [r.getMessage() for r in caplog.records if not r.name.startswith(CLIENT_SIDE_LOGGERS)]
    assert {
        "store rows": leaks(json.dumps(store.records)),
        "spans": leaks("\n".join(span.to_json() for span in span_exporter.get_finished_spans())),
        "gateway log lines": leaks("\n".join(gateway_lines)),
        "error bodies": leaks(str(cut.value.body)),
    } == {sink: [] for sink in ("store rows", "spans", "gateway log lines", "error bodies")}

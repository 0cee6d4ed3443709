"""The gateway the endpoint tests run against: every provider type pointed at one fake upstream
(and two that cannot answer in time or at all), the request log recording, spans in memory."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .endpoint_fakes import ProxyUpstream, RecordingLog

OPENAI_KEY = "sk-test-openai-0123456789"
AZURE_KEY = "azure-key-123"
ANTHROPIC_KEY = "sk-ant-test-key-0123456789"
CLIENT_KEY = "client-key"
LIMIT = 64 * 1024


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def providers_config(url: str) -> str:
    return f"""
type: gateway-providers-config
providers:
  - name: oai
    type: openai
    base_url: {url}/v1
    api_key: {OPENAI_KEY}
    models: [text-embedding-3-small, omni-moderation-latest, gpt-4o]
  - name: compat
    type: openai-compatible
    base_url: {url}/compat/v1/
    models: {{embed: nomic-embed-text}}
  - name: az
    type: azure-openai
    base_url: {url}
    api_key: {AZURE_KEY}
    api_version: "2024-10-21"
    models: {{embed: my-embedding-deployment}}
  - name: claude
    type: anthropic
    base_url: {url}
    api_key: {ANTHROPIC_KEY}
    anthropic_version: "2023-06-01"
    models: {{sonnet: claude-sonnet-4-5-20250929}}
  - name: claude-slow
    type: anthropic
    base_url: {url}
    api_key: sk-ant-slow-key-0123456789
    timeout_ms: 300
    models: [sonnet]
  - name: claude-dead
    type: anthropic
    base_url: http://127.0.0.1:{closed_port()}
    api_key: sk-ant-dead-key-0123456789
    models: [sonnet]
  - name: demo
    type: mock
    models: [embed, moderation, echo]
  - name: slow
    type: openai
    base_url: {url}/v1
    api_key: sk-slow-provider-key-0123
    timeout_ms: 300
    models: [text-embedding-3-small]
  - name: dead
    type: openai
    base_url: http://127.0.0.1:{closed_port()}/v1
    api_key: sk-dead-provider-key-0123
    models: [text-embedding-3-small]
---
type: gateway-server-config
max_request_body_bytes: {LIMIT}
---
type: gateway-logging-config
store: memory
flush_interval_ms: 20
"""


@dataclass
class Gateway:
    url: str
    upstream: ProxyUpstream
    upstream_url: str
    log: RecordingLog
    exporter: InMemorySpanExporter

    @property
    def upstream_port(self) -> int:
        port = httpx.URL(self.upstream_url).port
        assert port is not None
        return port

    def spans(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.name == name]
